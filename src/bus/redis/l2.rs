//! The second-level cache and its fill lock: one upstream request per cold key for the
//! whole cluster. An entry, its fill lock and its own generation share a hash slot
//! (`{p c:<key>}`, `…f`, `…g`); a tag's set of entries and its generation share another
//! (`{p t:<tag>}`, `…g`). Over a Redis Cluster entries and tags spread over every node.
//!
//! Nothing is atomic across slots, so an entry is checked when it is read, not kept
//! right when it is written: it records the generation of each of its tags and the
//! "everything changed" count it was fetched under, and a lookup (one `MGET`, split by
//! slot over a cluster's nodes) reads the current ones with it. An invalidation bumps its
//! tags' generations before it is announced, so a replica that hears it can no longer
//! take an older value from here, and a fill that raced it stores a value no lookup takes.
//! What a poll found (`changed`) replaces the entry in one script with the entry's own
//! generation, so a fill of the older value that finishes later is not stored.

use super::*;

/// The format of a stored entry (with its tags' generations); others are misses.
const ENTRY_FORMAT: &str = "2";

/// The generations a lookup saw: the "everything changed" count, each of the policy's
/// tags' (in its order), and the entry's own.
#[derive(Clone, Debug, Default)]
pub(super) struct Seen {
    all: String,
    tags: Vec<String>,
    key: String,
}

impl RedisBus {
    /// A tag's set of entry names and its generation.
    pub(super) fn tag_keys(&self, tag: &Tag) -> (String, String) {
        let scope = format!("t:{tag}");
        (self.key_in(&scope, ""), self.key_in(&scope, "g"))
    }

    /// The keys of `key`'s entry, all in its slot.
    fn entry_keys(&self, key: &CacheKey) -> EntryKeys {
        let scope = format!("c:{}", key.hex());
        EntryKeys {
            entry: self.key_in(&scope, ""),
            generation: self.key_in(&scope, "g"),
            lock: self.key_in(&scope, "f"),
        }
    }

    /// The second-level entry for `key`, if there is a valid one younger than `policy`'s
    /// `max_age` (what a waiting fill takes as the holder's value).
    async fn fresh(&self, keys: &EntryKeys, policy: &Policy) -> Option<Shared> {
        match self.read(keys, &policy.tags).await {
            Some((_, Some(hit))) if hit.age < policy.max_age => Some(hit),
            _ => None,
        }
    }

    /// In one round trip (one per slot on a cluster, sent together): the generations
    /// ([`Seen`]) and the entry for `key` when it is still valid under them (`None` when
    /// there is none, or a tag was invalidated or everything changed since it was
    /// fetched); `None` when Redis did not answer.
    async fn read(&self, entry: &EntryKeys, tags: &[Tag]) -> Option<(Seen, Option<Shared>)> {
        let mut keys = vec![self.key("all")];
        keys.extend(tags.iter().map(|t| self.tag_keys(t).1));
        keys.push(entry.generation.clone());
        keys.push(entry.entry.clone());
        let raw: Option<Vec<Option<Vec<u8>>>> = self
            .call("second-level lookup", |mut c| async move {
                redis::cmd("MGET").arg(&keys).query_async(&mut c).await
            })
            .await;
        let mut raw = raw?.into_iter();
        let mut number = || {
            raw.next()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|| "0".into())
        };
        let seen = Seen {
            all: number(),
            tags: tags.iter().map(|_| number()).collect(),
            key: number(),
        };
        let entry = raw
            .next()
            .flatten()
            .and_then(|bytes| self.valid_entry(&bytes, tags, &seen));
        Some((seen, entry))
    }

    /// The stored entry `bytes` if it is one of ours and nothing it was fetched under
    /// moved since `seen` (a malformed one is counted).
    fn valid_entry(&self, bytes: &[u8], tags: &[Tag], seen: &Seen) -> Option<Shared> {
        let parsed = decode_entry(bytes);
        if parsed.is_none() {
            self.metrics.bus_skipped.with_label_values(&["entry"]).inc();
        }
        parsed
            .filter(|(_, under)| under.valid(tags, seen))
            .map(|(shared, _)| shared)
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
        // The generations with the entry: a value fetched after this is stored under
        // them (and taken by no lookup once one of them moved).
        let keys = self.entry_keys(&key);
        let generation = match self.read(&keys, &policy.tags).await {
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
        let token = format!("{}:{}", self.origin, fastrand::u64(..));
        let wait = self.options.fill_wait;
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        // The lock, and in the same step the entry and its generation as they are now:
        // another replica may have stored the value and released its lock since the read
        // above.
        let locked: Option<(i64, Option<Vec<u8>>, Option<String>)> = {
            let mut lock_it = self.lock.prepare_invoke();
            lock_it
                .key(&keys.lock)
                .key(&keys.entry)
                .key(&keys.generation)
                .arg(&token)
                .arg(wait_ms);
            self.call("fill lock", |mut c| async move {
                lock_it.invoke_async(&mut c).await
            })
            .await
        };
        let won = match locked {
            Some((won, entry, own)) => {
                let now = entry
                    .and_then(|bytes| self.valid_entry(&bytes, &policy.tags, &generation))
                    .filter(|hit| hit.age < policy.max_age);
                if let Some(hit) = now {
                    if won == 1 {
                        self.unlock(&keys.lock, token).await;
                    }
                    outcome("hit");
                    return Ok(hit);
                }
                Some((won == 1, own.unwrap_or_else(|| "0".into())))
            }
            None => None,
        };
        match won {
            Some((true, own)) => {
                // Fetched under the entry's own generation seen with the lock.
                let generation = Seen {
                    key: own,
                    ..generation
                };
                outcome("miss");
                let result = fetch().await;
                if let Ok(answer) = &result {
                    // A 304 has no value to share.
                    // Kept for the other replicas no longer than the upstream allows; a
                    // `no-cache` answer not at all (each replica revalidates its own).
                    if answer.shareable && !answer.not_modified && !answer.freshness.no_cache {
                        let policy = policy.clone().limited(answer.freshness, false);
                        self.put(&keys, &answer.value, &policy, &generation).await;
                    }
                }
                self.unlock(&keys.lock, token).await;
                fetched(result)
            }
            Some((false, _)) => {
                // Another replica is fetching it: wait for its value, within bounds.
                let deadline = tokio::time::Instant::now() + wait;
                let mut pause = Duration::from_millis(5);
                while tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                    if let Some(hit) = self.fresh(&keys, policy).await {
                        outcome("hit");
                        return Ok(hit);
                    }
                    let held: Option<i64> = {
                        let lock = keys.lock.clone();
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
                        if let Some(hit) = self.fresh(&keys, policy).await {
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
    async fn unlock(&self, lock: &str, token: String) {
        let mut unlock = self.unlock.prepare_invoke();
        unlock.key(lock).arg(token);
        let _: Option<i64> = self
            .call("fill unlock", |mut c| async move {
                unlock.invoke_async(&mut c).await
            })
            .await;
    }

    /// A poll found a new value of `key` (`None`: one no shared cache may keep). In one
    /// script on the entry's slot its own generation moves (a fill of `key` running
    /// elsewhere, which may have fetched the older value, is then not stored) and the
    /// value replaces the stored one (or the stored one is dropped); then the change is
    /// announced.
    pub async fn changed(&self, key: CacheKey, value: Option<&Value>, policy: &Policy) {
        let keys = self.entry_keys(&key);
        let Some((seen, _)) = self.read(&keys, &policy.tags).await else {
            return;
        };
        let ttl = u64::try_from(policy.lifetime().as_millis()).unwrap_or(u64::MAX);
        let entry = value
            .filter(|_| ttl > 0)
            .map(|value| encode_entry(value, &policy.tags, &seen))
            .unwrap_or_default();
        let mut changed = self.changed.prepare_invoke();
        changed
            .key(&keys.entry)
            .key(&keys.generation)
            .arg(&entry)
            .arg(ttl.max(1));
        let stored: Option<i64> = self
            .call("store change", |mut c| async move {
                changed.invoke_async(&mut c).await
            })
            .await;
        if stored.is_none() {
            return;
        }
        if !entry.is_empty() {
            self.file(&keys.entry, &policy.tags, ttl).await;
        }
        let changed = json!([key.hex()]).to_string();
        let sent = self.announce("key", &[("keys", changed.as_str())]).await;
        self.published(sent, "changed");
    }

    /// Stores `value` in the entry `keys` unless its own generation moved since `seen`.
    async fn put(&self, keys: &EntryKeys, value: &Value, policy: &Policy, seen: &Seen) {
        let ttl = u64::try_from(policy.lifetime().as_millis()).unwrap_or(u64::MAX);
        if ttl == 0 {
            return;
        }
        let mut store = self.store.prepare_invoke();
        store
            .key(&keys.entry)
            .key(&keys.generation)
            .arg(encode_entry(value, &policy.tags, seen))
            .arg(ttl)
            .arg(&seen.key);
        let stored: Option<i64> = self
            .call("second-level store", |mut c| async move {
                store.invoke_async(&mut c).await
            })
            .await;
        if stored == Some(1) {
            self.file(&keys.entry, &policy.tags, ttl).await;
        }
    }

    /// Files the entry `name` under each of `tags` (each in its own slot, all at once), so
    /// that their invalidation deletes it. Only memory depends on it: an entry whose tag
    /// moved is taken by no lookup whether it was deleted or not.
    async fn file(&self, name: &str, tags: &[Tag], ttl: u64) {
        let now = now_ms();
        let filed = tags.iter().map(|t| {
            let mut file = self.file.prepare_invoke();
            file.key(self.tag_keys(t).0).arg(name).arg(ttl).arg(now);
            async move {
                let _: Option<i64> = self
                    .call("second-level tag", |mut c| async move {
                        file.invoke_async(&mut c).await
                    })
                    .await;
            }
        });
        futures_util::future::join_all(filed).await;
    }
}

/// An entry's keys, in one slot: the entry, its own generation, its fill lock.
struct EntryKeys {
    entry: String,
    generation: String,
    lock: String,
}

/// What an entry was fetched under: the "everything changed" count and its tags'
/// generations.
pub(super) struct Under {
    all: String,
    tags: std::collections::HashMap<String, String>,
}

impl Under {
    /// Whether nothing moved since: everything did not change, and no tag of `tags` was
    /// invalidated (a tag the entry does not know counts as at generation 0).
    fn valid(&self, tags: &[Tag], seen: &Seen) -> bool {
        self.all == seen.all
            && tags
                .iter()
                .zip(&seen.tags)
                .all(|(t, now)| self.tags.get(&*t.0).map_or("0", String::as_str) == now.as_str())
    }
}

fn encode_entry(value: &Value, tags: &[Tag], seen: &Seen) -> String {
    let under: serde_json::Map<String, Value> = tags
        .iter()
        .zip(&seen.tags)
        .map(|(t, g)| (t.0.to_string(), Value::String(g.clone())))
        .collect();
    json!({
        "v": ENTRY_FORMAT,
        "stored": now_ms(),
        "all": seen.all,
        "tags": under,
        "value": value,
    })
    .to_string()
}

/// A second-level entry as stored, if it is one of ours, with what it was fetched under.
pub(super) fn decode_entry(bytes: &[u8]) -> Option<(Shared, Under)> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v.get("v")?.as_str()? != ENTRY_FORMAT {
        return None;
    }
    let stored = v.get("stored")?.as_u64()?;
    let all = v.get("all")?.as_str()?.to_string();
    let tags = v
        .get("tags")?
        .as_object()?
        .iter()
        .map(|(t, g)| Some((t.clone(), g.as_str()?.to_string())))
        .collect::<Option<_>>()?;
    let value = v.get("value")?.clone();
    let shared = Shared {
        value,
        age: Duration::from_millis(now_ms().saturating_sub(stored)),
        shareable: true,
        validators: Default::default(),
        not_modified: false,
        freshness: Default::default(),
    };
    Some((shared, Under { all, tags }))
}

/// KEYS: a tag's set of entries; ARGV: entry name, TTL ms, now (ms). The set is sorted by
/// when each entry expires and trimmed of expired ones at every filing: a hot tag does not
/// collect the names of long-gone entries. It lives as long as its longest entry.
pub(super) const FILE: &str = r#"
local expires = tonumber(ARGV[3]) + tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"#;

/// KEYS: entry, its generation; ARGV: entry JSON, TTL ms, the entry's generation at fetch.
/// Stores only if no poll replaced the entry since the fetch began.
pub(super) const STORE: &str = r#"
local gen = redis.call('GET', KEYS[2]) or '0'
if gen ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// KEYS: entry, its generation; ARGV: entry JSON (empty: drop it), TTL ms. See
/// [`RedisBus::changed`].
pub(super) const CHANGED: &str = r#"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 604800000)
if ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// KEYS: fill lock, entry, the entry's generation; ARGV: token, TTL ms. Takes the lock if
/// it is free; whether it did, the entry and its generation (all in the entry's slot).
pub(super) const LOCK: &str = r#"
local won = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local entry = redis.call('GET', KEYS[2])
local own = redis.call('GET', KEYS[3])
return {won and 1 or 0, entry, own}
"#;

/// KEYS: lock; ARGV: token. Compare-and-delete.
pub(super) const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
