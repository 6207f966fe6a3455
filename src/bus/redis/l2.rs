//! The second-level cache (`{p}c:<key>`, `{p}t:<tag>`, `{p}gen`) and its fill lock
//! (`{p}f:<key>`): one upstream request per cold key for the whole cluster.

use super::*;

impl RedisBus {
    /// The invalidation generation and the "everything changed" count now (`None` when
    /// Redis does not answer).
    pub(super) async fn generation(&self) -> Option<(String, String)> {
        let keys = [self.key("gen"), self.key("all")];
        self.call("read generation", |mut c| async move {
            let g: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut c).await?;
            let at = |i: usize| g.get(i).cloned().flatten().unwrap_or_else(|| "0".into());
            Ok((at(0), at(1)))
        })
        .await
    }

    /// The second-level entry for `key`, if there is one younger than `policy`'s
    /// `max_age` (what a waiting fill takes as the holder's value).
    pub(super) async fn fresh(&self, key: &CacheKey, policy: &Policy) -> Option<Shared> {
        match self.read(key).await {
            Some((_, Some(hit))) if hit.age < policy.max_age => Some(hit),
            _ => None,
        }
    }

    /// In one round trip: the generation pair ([`RedisBus::generation`]) and the
    /// second-level entry for `key` (`None` when there is none, or it predates an
    /// "everything changed"); `None` when Redis did not answer.
    pub(super) async fn read(&self, key: &CacheKey) -> Option<((String, String), Option<Shared>)> {
        let keys = [self.key("gen"), self.key("all"), self.entry_key(key)];
        let raw: Option<Generations> = self
            .call("second-level lookup", |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await;
        let (generation, all, raw) = raw?;
        let (generation, all) = (
            generation.unwrap_or_else(|| "0".into()),
            all.unwrap_or_else(|| "0".into()),
        );
        let entry = raw.and_then(|bytes| {
            let parsed = decode_entry(&bytes);
            if parsed.is_none() {
                self.metrics.bus_skipped.with_label_values(&["entry"]).inc();
            }
            parsed
                .filter(|(_, stored_all)| *stored_all == all)
                .map(|(shared, _)| shared)
        });
        Some(((generation, all), entry))
    }

    pub async fn load<F, Fut>(
        &self,
        key: CacheKey,
        policy: &Policy,
        fetch: F,
    ) -> Result<Shared, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<crate::upstream::Answer, UpstreamError>>,
    {
        let outcome = |o: &str| self.metrics.l2_lookups.with_label_values(&[o]).inc();
        let fetched = |r: Result<crate::upstream::Answer, UpstreamError>| r.map(Shared::from);
        // Invalidations not yet published: Redis may still hold what they dropped here.
        if !self.unsent().is_empty() {
            outcome("error");
            return fetched(fetch().await);
        }
        // The generation with the entry: a value fetched after this is stored only if no
        // invalidation came in between.
        let generation = match self.read(&key).await {
            // Only a fresh value: a stale one is being refreshed, by this fetch.
            Some((_, Some(hit))) if hit.age < policy.max_age => {
                outcome("hit");
                return Ok(hit);
            }
            Some((generation, _)) => generation,
            None => {
                outcome("error");
                return fetched(fetch().await);
            }
        };
        let lock = self.key(&format!("f:{}", key.hex()));
        let token = format!("{}:{}", self.origin, fastrand::u64(..));
        let wait = self.options.fill_wait;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let won: Option<Option<String>> = {
            let (lock, token) = (lock.clone(), token.clone());
            self.call("fill lock", |mut c| async move {
                redis::cmd("SET")
                    .arg(lock)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(wait_ms)
                    .query_async(&mut c)
                    .await
            })
            .await
        };
        match won {
            Some(Some(_)) => {
                // Another replica may have stored the value and released its lock
                // between the read above and this lock: look again before fetching (one
                // round trip, on a miss only), and fetch under the generation seen now.
                let generation = match self.read(&key).await {
                    Some((_, Some(hit))) if hit.age < policy.max_age => {
                        self.unlock(lock, token).await;
                        outcome("hit");
                        return Ok(hit);
                    }
                    Some((now, _)) => now,
                    None => generation,
                };
                outcome("miss");
                let result = fetch().await;
                if let Ok(answer) = &result {
                    // A 304 has no value to share.
                    // Kept for the other replicas no longer than the upstream allows; a
                    // `no-cache` answer not at all (each replica revalidates its own).
                    if answer.shareable && !answer.not_modified && !answer.freshness.no_cache {
                        let policy = policy.clone().limited(answer.freshness, false);
                        self.put(&key, &answer.value, &policy, &generation).await;
                    }
                }
                self.unlock(lock, token).await;
                fetched(result)
            }
            Some(None) => {
                // Another replica is fetching it: wait for its value, within bounds.
                let deadline = tokio::time::Instant::now() + wait;
                let mut pause = Duration::from_millis(5);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                    if let Some(hit) = self.fresh(&key, policy).await {
                        outcome("hit");
                        return Ok(hit);
                    }
                    let held: Option<i64> = {
                        let lock = lock.clone();
                        self.call("fill lock check", |mut c| async move {
                            redis::cmd("EXISTS").arg(lock).query_async(&mut c).await
                        })
                        .await
                    };
                    if held != Some(1) {
                        // Released: its holder may have stored the value between the
                        // read above and this check (it stores, then unlocks), so look
                        // once more. No value: it failed, was invalidated, or expired
                        // with its holder; fetch ourselves.
                        if let Some(hit) = self.fresh(&key, policy).await {
                            outcome("hit");
                            return Ok(hit);
                        }
                        break;
                    }
                }
                outcome("miss");
                fetched(fetch().await)
            }
            None => {
                outcome("error");
                fetched(fetch().await)
            }
        }
    }

    /// Releases the fill lock `lock` if `token` still holds it.
    async fn unlock(&self, lock: String, token: String) {
        let mut unlock = self.unlock.prepare_invoke();
        unlock.key(lock).arg(token);
        let _: Option<i64> = self
            .call("fill unlock", |mut c| async move {
                unlock.invoke_async(&mut c).await
            })
            .await;
    }

    /// A poll found a new value of `key` (`None`: one no shared cache may keep). In one
    /// step: the generation moves (a fill of `key` running elsewhere, which may have
    /// fetched the older value, is then not stored), the value replaces the stored one (or
    /// the stored one is dropped), and the change is announced.
    pub async fn changed(&self, key: CacheKey, value: Option<&Value>, policy: &Policy) {
        let Some((_, all)) = self.generation().await else {
            return;
        };
        let ttl = u64::try_from(policy.lifetime().as_millis()).unwrap_or(u64::MAX);
        let entry = value
            .filter(|_| ttl > 0)
            .map(|value| {
                json!({"v": FORMAT, "stored": now_ms(), "all": all, "value": value}).to_string()
            })
            .unwrap_or_default();
        let name = self.entry_key(&key);
        let mut changed = self.changed.prepare_invoke();
        changed
            .key(self.key("gen"))
            .key(name.clone())
            .key(self.key("inv"));
        for t in &policy.tags {
            changed.key(self.key(&format!("t:{t}")));
        }
        changed
            .arg(entry)
            .arg(ttl.max(1))
            .arg(name)
            .arg(FORMAT)
            .arg(&self.origin)
            .arg(json!([key.hex()]).to_string())
            .arg(STREAM_TTL_MS)
            .arg(now_ms());
        let sent: Option<String> = self
            .call("publish change", |mut c| async move {
                changed.invoke_async(&mut c).await
            })
            .await;
        self.published(sent.is_some(), "changed");
    }

    pub(super) async fn put(
        &self,
        key: &CacheKey,
        value: &Value,
        policy: &Policy,
        generation: &(String, String),
    ) {
        let ttl = u64::try_from(policy.lifetime().as_millis()).unwrap_or(u64::MAX);
        if ttl == 0 {
            return;
        }
        let entry = json!({
            "v": FORMAT,
            "stored": now_ms(),
            "all": generation.1,
            "value": value,
        })
        .to_string();
        let name = self.entry_key(key);
        let mut store = self.store.prepare_invoke();
        store.key(name.clone()).key(self.key("gen"));
        for t in &policy.tags {
            store.key(self.key(&format!("t:{t}")));
        }
        store
            .arg(entry)
            .arg(ttl)
            .arg(&generation.0)
            .arg(name)
            .arg(now_ms());
        let _: Option<i64> = self
            .call("second-level store", |mut c| async move {
                store.invoke_async(&mut c).await
            })
            .await;
    }
}

/// `MGET gen all entry`: the generation, the "everything changed" count, the entry.
pub(super) type Generations = (Option<String>, Option<String>, Option<Vec<u8>>);

/// A second-level entry as stored, if it is one of ours, with the "everything changed"
/// count it was fetched under.
pub(super) fn decode_entry(bytes: &[u8]) -> Option<(Shared, String)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v.get("v")?.as_str()? != FORMAT {
        return None;
    }
    let stored = v.get("stored")?.as_u64()?;
    let all = v.get("all")?.as_str()?.to_string();
    let value = v.get("value")?.clone();
    let shared = Shared {
        value,
        age: Duration::from_millis(now_ms().saturating_sub(stored)),
        shareable: true,
        validators: Default::default(),
        not_modified: false,
        freshness: Default::default(),
    };
    Some((shared, all))
}

/// The one way STORE and CHANGED write a second-level entry: the entry, expiring after its
/// TTL, and its name in the set of each tag from `KEYS[first]` on. A tag's set is sorted
/// by when each entry expires, and trimmed of expired ones at every store: a hot tag does
/// not collect the names of long-gone entries.
pub(super) const PUT: &str = r#"
local function put(entry, json, ttl, name, now, first)
  redis.call('SET', entry, json, 'PX', ttl)
  local expires = tonumber(now) + tonumber(ttl)
  for i = first, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    redis.call('ZADD', KEYS[i], expires, name)
    if redis.call('PTTL', KEYS[i]) < tonumber(ttl) then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
"#;

/// KEYS: entry, gen, tag sets…; ARGV: entry JSON, TTL ms, generation at fetch, entry name,
/// now (ms).
/// Stores only if no invalidation happened since the fetch began.
pub(super) const STORE: &str = r#"
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[3] then return 0 end
put(KEYS[1], ARGV[1], ARGV[2], ARGV[4], ARGV[5], 3)
return 1
"#;

/// KEYS: gen, entry, stream, tag sets…; ARGV: entry JSON (empty: drop it), TTL ms, entry
/// name, format, origin, keys JSON, stream TTL, now (ms). See [`RedisBus::changed`].
pub(super) const CHANGED: &str = r#"
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 604800000)
if ARGV[1] ~= '' then
  put(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[8], 4)
else
  redis.call('DEL', KEYS[2])
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'v', ARGV[4], 'o', ARGV[5], 'k', 'key', 'keys', ARGV[6])
redis.call('PEXPIRE', KEYS[3], ARGV[7])
return id
"#;

/// KEYS: lock; ARGV: token. Compare-and-delete.
pub(super) const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
