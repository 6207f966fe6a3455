//! `--rate-limit` across replicas: one budget per client in Redis, taken by a script in
//! one round trip (GCRA: the key holds the client's theoretical arrival time, in Redis's
//! own clock, so the replicas' clocks never disagree about it).

use super::RedisBus;
use std::sync::LazyLock;
use std::time::Duration;

static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local last = tat + (cost - 1) * interval
if last - now > burst then
  return last - now - burst
end
local next = tat + cost * interval
redis.call('SET', KEYS[1], next, 'PX', math.ceil(next - now) + 1000)
return 0
",
    )
});

impl RedisBus {
    /// Takes `cost` requests from the budget of `client` (a request every `interval`, up
    /// to `burst` ahead): `Some(Ok)` when they were there, `Some(Err(wait))` when they
    /// will be after `wait`, `None` when Redis did not answer.
    pub async fn take(
        &self,
        client: &str,
        cost: u32,
        interval: Duration,
        burst: Duration,
    ) -> Option<Result<(), Duration>> {
        // Down a moment ago: no request waits for Redis's deadline again for a second.
        let recently = |at: &Option<tokio::time::Instant>| {
            at.is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        };
        let failed = || self.failed_at.lock().unwrap_or_else(|p| p.into_inner());
        if !self.up.load(std::sync::atomic::Ordering::Acquire) && recently(&failed()) {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut take = TAKE.prepare_invoke();
        take.key(self.key_in(&format!("rate:{client}"), ""))
            .arg(ms(interval))
            .arg(u64::try_from(burst.as_millis()).unwrap_or(u64::MAX))
            .arg(cost.max(1));
        let Some(wait) = self
            .call("rate", |mut c| async move {
                take.invoke_async::<u64>(&mut c).await
            })
            .await
        else {
            *failed() = Some(tokio::time::Instant::now());
            return None;
        };
        Some(if wait == 0 {
            Ok(())
        } else {
            Err(Duration::from_millis(wait))
        })
    }
}
