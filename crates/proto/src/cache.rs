//! A cache for metadata that a warm request must never wait for: refresh-ahead,
//! serve-stale-while-revalidating and single-flight, by name.
//!
//! - A value read less than `serve_for` ago is served at once ([`Cache::get`]).
//! - A value older than `refresh_after` that has been served since it was read is *due*
//!   ([`Cache::due`]): a background task reads it again ([`Cache::newer`]) while requests keep
//!   being served the old one. A failed refresh keeps the old value until `serve_for`.
//! - A miss (nothing cached, or too old to serve) is read by one caller; every concurrent miss
//!   of the same name waits for that one read instead of starting its own, and gets its
//!   result, error included. If that caller goes away mid-read, a waiting one takes over.
//! - A value is stored only if its read started after everything the cache already knows of
//!   the name (a newer read, an [`Cache::invalidate`]), so a slow old read never replaces a
//!   newer one.
//!
//! Times are `tokio::time::Instant`, so tests run it on paused time.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A read in flight: when it started, and where its result will appear.
type Flight<V, E> = (Instant, watch::Receiver<Option<Result<V, E>>>);

struct Slot<V, E> {
    /// The value and when the read that produced it started.
    value: Option<(Instant, V)>,
    /// Served since it was read.
    used: bool,
    /// Nothing that started before this may be stored (the newest stored read's start, or
    /// the last invalidation).
    floor: Option<Instant>,
    flight: Option<Flight<V, E>>,
}

impl<V, E> Default for Slot<V, E> {
    fn default() -> Self {
        Slot { value: None, used: false, floor: None, flight: None }
    }
}

/// Values by name; see the module documentation.
pub struct Cache<V, E> {
    refresh_after: Duration,
    serve_for: Duration,
    slots: Mutex<HashMap<String, Slot<V, E>>>,
}

impl<V, E> std::fmt::Debug for Cache<V, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.slots.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Cache")
            .field("refresh_after", &self.refresh_after)
            .field("serve_for", &self.serve_for)
            .field("names", &names)
            .finish()
    }
}

/// Who reads a name that is not at hand.
enum Role<V, E> {
    Leader(watch::Sender<Option<Result<V, E>>>, Instant),
    Follower(watch::Receiver<Option<Result<V, E>>>, Instant),
}

/// Removes a leader's flight if it is dropped before it finished (its followers then see the
/// channel closed and one of them reads instead).
struct Lead<'a, V, E> {
    cache: &'a Cache<V, E>,
    name: &'a str,
    started: Instant,
    finished: bool,
}

impl<V, E> Drop for Lead<'_, V, E> {
    fn drop(&mut self) {
        if !self.finished
            && let Ok(mut slots) = self.cache.slots.lock()
            && let Some(slot) = slots.get_mut(self.name)
            && slot.flight.as_ref().is_some_and(|(at, _)| *at == self.started)
        {
            slot.flight = None;
        }
    }
}

impl<V: Clone, E: Clone> Cache<V, E> {
    /// A cache whose values are refreshed in the background once `refresh_after` old, and no
    /// longer served once `serve_for` old (at least `refresh_after`).
    pub fn new(refresh_after: Duration, serve_for: Duration) -> Self {
        Cache { refresh_after, serve_for: serve_for.max(refresh_after), slots: Mutex::new(HashMap::new()) }
    }

    /// The value of `name`: the cached one if it may still be served (however old, a
    /// background refresh replaces it), otherwise read by `read`, once for every concurrent
    /// caller.
    pub async fn get<Fut>(&self, name: &str, read: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        Ok(self.get_stamped(name, read).await?.0)
    }

    /// [`Cache::get`], with the instant the value's read started.
    pub async fn get_stamped<Fut>(&self, name: &str, read: impl FnOnce() -> Fut) -> Result<(V, Instant), E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(hit) = self.servable(name) {
            return Ok(hit);
        }
        self.read_once(name, None, read).await
    }

    /// A value of `name` read (started) at or after `since`: the cached one if it is that
    /// recent, or the result of a read in flight that started since then, or a new read.
    pub async fn newer<Fut>(&self, name: &str, since: Instant, read: impl FnOnce() -> Fut) -> Result<V, E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        Ok(self.read_once(name, Some(since), read).await?.0)
    }

    /// Stores `value` of `name` from a read that started at `read_at` (a bulk read ahead of the
    /// requests), unless the cache holds one read since then or `name` was invalidated since.
    /// It does not count as served: only a request's use keeps a name refreshed.
    pub fn offer(&self, name: &str, value: V, read_at: Instant) {
        let Ok(mut slots) = self.slots.lock() else { return };
        let slot = slots.entry(name.to_owned()).or_default();
        if slot.floor.is_some_and(|floor| read_at < floor) || slot.value.as_ref().is_some_and(|(at, _)| *at >= read_at)
        {
            return;
        }
        slot.value = Some((read_at, value));
        slot.floor = Some(read_at);
    }

    /// Forgets `name`; a read that started before now will not be stored.
    pub fn invalidate(&self, name: &str) {
        if let Ok(mut slots) = self.slots.lock()
            && let Some(slot) = slots.get_mut(name)
        {
            slot.value = None;
            slot.used = false;
            slot.floor = Some(Instant::now());
        }
    }

    /// Forgets every name ([`Cache::invalidate`] of each).
    pub fn invalidate_all(&self) {
        if let Ok(mut slots) = self.slots.lock() {
            let now = Instant::now();
            for slot in slots.values_mut() {
                slot.value = None;
                slot.used = false;
                slot.floor = Some(now);
            }
        }
    }

    /// The names due for a background refresh: served since they were read, read at least
    /// `refresh_after` ago, none in flight. Names too old to serve and unused are dropped.
    pub fn due(&self) -> Vec<String> {
        let now = Instant::now();
        let Ok(mut slots) = self.slots.lock() else { return Vec::new() };
        slots.retain(|_, slot| {
            slot.flight.is_some() || slot.value.as_ref().is_some_and(|(at, _)| slot.used || now - *at < self.serve_for)
        });
        slots
            .iter()
            .filter(|(_, slot)| {
                slot.flight.is_none()
                    && slot.used
                    && slot.value.as_ref().is_some_and(|(at, _)| now - *at >= self.refresh_after)
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn servable(&self, name: &str) -> Option<(V, Instant)> {
        let mut slots = self.slots.lock().ok()?;
        let slot = slots.get_mut(name)?;
        let (at, value) = slot.value.as_ref()?;
        if at.elapsed() >= self.serve_for {
            return None;
        }
        let hit = (value.clone(), *at);
        slot.used = true;
        Some(hit)
    }

    /// One read of `name` shared by every concurrent caller (those with a `since` only share a
    /// read that started at or after it, and take a cached value only that recent).
    async fn read_once<Fut>(
        &self,
        name: &str,
        since: Option<Instant>,
        read: impl FnOnce() -> Fut,
    ) -> Result<(V, Instant), E>
    where
        Fut: Future<Output = Result<V, E>>,
    {
        let mut read = Some(read);
        loop {
            let role = {
                let Ok(mut slots) = self.slots.lock() else {
                    // A poisoned lock: read without the cache.
                    let started = Instant::now();
                    let Some(read) = read.take() else { continue };
                    return read().await.map(|v| (v, started));
                };
                let slot = slots.entry(name.to_owned()).or_default();
                let recent = |at: Instant| since.map_or(at.elapsed() < self.serve_for, |since| at >= since);
                match (&slot.value, &slot.flight) {
                    (Some((at, value)), _) if recent(*at) => {
                        let hit = (value.clone(), *at);
                        slot.used = true;
                        return Ok(hit);
                    }
                    (_, Some((at, rx))) if since.is_none_or(|since| *at >= since) => Role::Follower(rx.clone(), *at),
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        let started = Instant::now();
                        slot.flight = Some((started, rx));
                        Role::Leader(tx, started)
                    }
                }
            };
            match role {
                Role::Follower(mut rx, at) => {
                    let result = match rx.wait_for(Option::is_some).await {
                        Ok(done) => done.clone(),
                        // Its reader went away; start over (perhaps reading ourselves).
                        Err(_) => continue,
                    };
                    if let Some(result) = result {
                        return result.map(|v| (v, at));
                    }
                }
                Role::Leader(tx, started) => {
                    let Some(read) = read.take() else { continue };
                    let mut lead = Lead { cache: self, name, started, finished: false };
                    let result = read().await;
                    if let Ok(mut slots) = self.slots.lock() {
                        let slot = slots.entry(name.to_owned()).or_default();
                        if slot.flight.as_ref().is_some_and(|(at, _)| *at == started) {
                            slot.flight = None;
                        }
                        if let Ok(value) = &result
                            && slot.floor.is_none_or(|floor| started >= floor)
                        {
                            slot.value = Some((started, value.clone()));
                            slot.used = since.is_none();
                            slot.floor = Some(started);
                        }
                    }
                    lead.finished = true;
                    let _ = tx.send(Some(result.clone()));
                    return result.map(|v| (v, started));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A read that takes 100 ms and counts itself.
    fn slow(reads: &Arc<AtomicUsize>, value: u32) -> impl Future<Output = Result<u32, String>> + use<> {
        let reads = reads.clone();
        async move {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(ms(100)).await;
            Ok(value)
        }
    }

    /// A read that takes `took` and counts itself.
    fn slower(
        reads: &Arc<AtomicUsize>,
        value: u32,
        took: Duration,
    ) -> impl Future<Output = Result<u32, String>> + use<> {
        let reads = reads.clone();
        async move {
            reads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(took).await;
            Ok(value)
        }
    }

    /// A read that must not happen.
    async fn never() -> Result<u32, String> {
        Err("read on the request path".into())
    }

    #[tokio::test(start_paused = true)]
    async fn an_offered_value_is_served_unless_something_newer_or_an_invalidation_came_first() {
        let cache = Cache::<u32, String>::new(ms(1000), ms(6000));
        let listed = Instant::now();
        tokio::time::advance(ms(10)).await;
        cache.offer("k", 1, listed);
        assert_eq!(cache.get("k", never).await, Ok(1));
        // A value read later is not replaced by an earlier read's.
        let reads = Arc::new(AtomicUsize::new(0));
        let read_at = Instant::now();
        assert_eq!(cache.newer("k", read_at, || slow(&reads, 2)).await, Ok(2));
        cache.offer("k", 1, listed);
        assert_eq!(cache.get("k", never).await, Ok(2));
        // A read that started before an invalidation is not stored.
        let before = Instant::now();
        tokio::time::advance(ms(10)).await;
        cache.invalidate("j");
        cache.offer("j", 5, Instant::now());
        cache.invalidate("j");
        cache.offer("j", 6, before);
        assert_eq!(cache.get("j", || slow(&reads, 7)).await, Ok(7));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_share_one_read() {
        let cache = Arc::new(Cache::<u32, String>::new(ms(1000), ms(6000)));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (cache, reads) = (cache.clone(), reads.clone());
            callers.spawn(async move { cache.get("k", || slow(&reads, 7)).await });
        }
        while let Some(answer) = callers.join_next().await {
            assert_eq!(answer.unwrap(), Ok(7));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1, "50 concurrent misses, one read");
        // And it is cached now.
        assert_eq!(cache.get("k", never).await, Ok(7));
    }

    #[tokio::test(start_paused = true)]
    async fn invalidating_everything_makes_every_name_read_again() {
        let cache = Cache::<u32, String>::new(ms(1000), ms(6000));
        let reads = Arc::new(AtomicUsize::new(0));
        assert_eq!(cache.get("a", || slow(&reads, 1)).await, Ok(1));
        assert_eq!(cache.get("b", || slow(&reads, 2)).await, Ok(2));
        cache.invalidate_all();
        assert_eq!(cache.get("a", || slow(&reads, 10)).await, Ok(10));
        assert_eq!(cache.get("b", || slow(&reads, 20)).await, Ok(20));
        assert_eq!(reads.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn every_waiting_caller_gets_the_reads_error_and_nothing_is_stored() {
        let cache = Arc::new(Cache::<u32, String>::new(ms(1000), ms(6000)));
        let reads = Arc::new(AtomicUsize::new(0));
        let failing = |reads: &Arc<AtomicUsize>| {
            let reads = reads.clone();
            move || async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(ms(100)).await;
                Err::<u32, _>("unavailable".to_owned())
            }
        };
        let (a, b) = tokio::join!(cache.get("k", failing(&reads)), cache.get("k", failing(&reads)));
        assert_eq!((a, b), (Err("unavailable".into()), Err("unavailable".into())));
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get("k", || slow(&reads, 3)).await, Ok(3), "an error is not cached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_value_is_served_at_once_while_the_refresh_runs_and_replaced_after() {
        let cache = Arc::new(Cache::<u32, String>::new(ms(1000), ms(6000)));
        let reads = Arc::new(AtomicUsize::new(0));
        assert_eq!(cache.get("k", || slow(&reads, 1)).await, Ok(1));
        assert!(cache.due().is_empty(), "fresh");
        tokio::time::advance(ms(1500)).await;
        assert_eq!(cache.due(), vec!["k".to_owned()]);
        // The background refresh takes 100 ms; meanwhile requests are answered from the
        // cache without waiting (a read on their path would fail the test).
        let refresh = {
            let (cache, reads) = (cache.clone(), reads.clone());
            tokio::spawn(async move { cache.newer("k", Instant::now(), || slow(&reads, 2)).await })
        };
        tokio::task::yield_now().await;
        let asked = Instant::now();
        assert_eq!(cache.get("k", never).await, Ok(1));
        assert_eq!(asked.elapsed(), Duration::ZERO, "a warm request never waits");
        assert!(cache.due().is_empty(), "a refresh is in flight");
        assert_eq!(refresh.await.unwrap(), Ok(2));
        assert_eq!(cache.get("k", never).await, Ok(2));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_serving_until_too_old_then_a_request_reads() {
        let cache = Cache::<u32, String>::new(ms(1000), ms(6000));
        let reads = Arc::new(AtomicUsize::new(0));
        assert_eq!(cache.get("k", || slow(&reads, 1)).await, Ok(1));
        tokio::time::advance(ms(1500)).await;
        let failed = cache.newer("k", Instant::now(), || async { Err::<u32, _>("down".to_owned()) }).await;
        assert_eq!(failed, Err("down".into()));
        assert_eq!(cache.get("k", never).await, Ok(1), "stale but still served");
        tokio::time::advance(ms(5000)).await;
        assert_eq!(cache.get("k", || slow(&reads, 9)).await, Ok(9), "past serve_for: read again");
    }

    #[tokio::test(start_paused = true)]
    async fn unused_names_are_not_refreshed_and_are_dropped_once_too_old() {
        let cache = Cache::<u32, String>::new(ms(1000), ms(6000));
        let reads = Arc::new(AtomicUsize::new(0));
        cache.get("k", || slow(&reads, 1)).await.unwrap();
        tokio::time::advance(ms(1500)).await;
        cache.newer("k", Instant::now(), || slow(&reads, 2)).await.unwrap();
        // Nobody asked for it since that refresh: not due again.
        tokio::time::advance(ms(1500)).await;
        assert!(cache.due().is_empty());
        tokio::time::advance(ms(6000)).await;
        assert!(cache.due().is_empty());
        assert_eq!(cache.get("k", || slow(&reads, 3)).await, Ok(3), "dropped: read again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_older_than_an_invalidation_or_a_newer_read_is_not_stored() {
        let cache = Arc::new(Cache::<u32, String>::new(ms(1000), ms(6000)));
        let reads = Arc::new(AtomicUsize::new(0));
        // A slow read starts, the name is invalidated meanwhile: its result is returned to its
        // caller but not kept.
        let old = {
            let (cache, reads) = (cache.clone(), reads.clone());
            tokio::spawn(async move { cache.get("k", || slow(&reads, 1)).await })
        };
        tokio::time::sleep(ms(10)).await;
        cache.invalidate("k");
        assert_eq!(old.await.unwrap(), Ok(1));
        assert_eq!(cache.get("k", || slow(&reads, 2)).await, Ok(2));
        // A refresh that must be newer than now does not share an older read in flight.
        tokio::time::advance(ms(7000)).await;
        let older = {
            let (cache, reads) = (cache.clone(), reads.clone());
            tokio::spawn(async move { cache.get("k", || slower(&reads, 3, ms(300))).await })
        };
        tokio::time::sleep(ms(10)).await;
        assert_eq!(cache.newer("k", Instant::now(), || slow(&reads, 4)).await, Ok(4));
        assert_eq!(older.await.unwrap(), Ok(3));
        assert_eq!(cache.get("k", never).await, Ok(4), "the older read finished last but did not replace the newer");
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_reading_caller_goes_away_a_waiting_one_reads() {
        let cache = Arc::new(Cache::<u32, String>::new(ms(1000), ms(6000)));
        let reads = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (cache, reads) = (cache.clone(), reads.clone());
            tokio::spawn(async move { cache.get("k", || slow(&reads, 1)).await })
        };
        tokio::time::sleep(ms(10)).await;
        let follower = {
            let (cache, reads) = (cache.clone(), reads.clone());
            tokio::spawn(async move { cache.get("k", || slow(&reads, 2)).await })
        };
        tokio::time::sleep(ms(10)).await;
        leader.abort();
        assert_eq!(follower.await.unwrap(), Ok(2));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
