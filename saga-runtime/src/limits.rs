//! Rate limits keyed by downstream: the seed's "five agents each retrying three times against
//! the same overloaded API = 15× load. Centralise rate limits."
//!
//! Each downstream (`"github"`, `"openai"`) gets one [`Limit`], declared once on the runtime.
//! Every call to it draws a token from one bucket shared by every saga of the process (and, on
//! a store that shares limits, such as PostgreSQL, by every worker): first attempts, retries,
//! re-prompts and compensations alike. A `retry_after` from one saga pauses the downstream for
//! all of them. Waiting for a token is not a failure: it spends no retry budget, and it is
//! journaled (`Event::Throttled`), so it shows in the timeline and the report.
//!
//! Two ways to draw a token, on purpose: `#[step(limit = "github")]` takes one before every
//! attempt of the step and of its compensation (the common case of one call per attempt, and
//! it shows in the definition), and `cx.limit("github").await?` takes one per call inside a
//! step that calls a downstream several times, or several downstreams.
//!
//! In process, the bucket is governor's GCRA on tokio's clock (so a paused test clock drives
//! it); across workers it is the store's (`CheckpointStore::shared_limits`).

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::BoxFuture;
use crate::store::StoreError;

/// The rate limit of one downstream: `rate` calls per period on average, `burst` at once, and
/// optionally at most `concurrency` calls in flight (per process).
///
/// ```
/// use std::time::Duration;
/// use saga_runtime::Limit;
///
/// let github = Limit::per_second(10).burst(20).concurrency(4);
/// assert_eq!(github.interval(), Duration::from_millis(100));
/// let openai = Limit::per(500, Duration::from_secs(60)); // 500 a minute, 500 at once
/// assert_eq!(openai.burst_size(), 500);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    interval: Duration,
    burst: u32,
    concurrency: Option<u32>,
}

impl Limit {
    /// `rate` calls per `period`, with a burst of `rate`.
    ///
    /// # Panics
    /// When `rate` or `period` is zero: such a limit lets nothing through.
    pub fn per(rate: u32, period: Duration) -> Limit {
        assert!(
            rate > 0 && !period.is_zero(),
            "a rate limit of {rate} per {period:?} lets nothing through: give at least 1 call per non-zero period"
        );
        let interval = (period / rate).max(Duration::from_nanos(1));
        Limit { interval, burst: rate, concurrency: None }
    }

    /// `rate` calls per second, with a burst of `rate`.
    pub fn per_second(rate: u32) -> Limit {
        Limit::per(rate, Duration::from_secs(1))
    }

    /// `rate` calls per minute, with a burst of `rate`.
    pub fn per_minute(rate: u32) -> Limit {
        Limit::per(rate, Duration::from_secs(60))
    }

    /// `rate` calls per hour, with a burst of `rate`.
    pub fn per_hour(rate: u32) -> Limit {
        Limit::per(rate, Duration::from_secs(3600))
    }

    /// How many calls may go at once after a quiet period (at least 1).
    pub fn burst(mut self, burst: u32) -> Limit {
        self.burst = burst.max(1);
        self
    }

    /// At most this many calls in flight at once in this process (at least 1): a token is
    /// held, with its slot, until the [`Permit`] drops (for `#[step(limit = ..)]`, until the
    /// attempt ends).
    pub fn concurrency(mut self, calls: u32) -> Limit {
        self.concurrency = Some(calls.max(1));
        self
    }

    /// The time between two tokens at the sustained rate.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many tokens are available after a quiet period.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The cap on calls in flight, if any.
    pub fn max_concurrency(&self) -> Option<u32> {
        self.concurrency
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1 call every {:?} (burst {})", self.interval, self.burst)?;
        if let Some(calls) = self.concurrency {
            write!(f, ", at most {calls} in flight")?;
        }
        Ok(())
    }
}

/// Rate limits shared by every process that uses one store (see
/// [`CheckpointStore::shared_limits`](crate::CheckpointStore::shared_limits)).
pub trait SharedLimits: Send + Sync {
    /// Takes one token of `downstream` under `limit`: `None` when it was granted, or how long
    /// to wait before asking again (the bucket is empty, or the downstream is paused).
    fn take<'a>(&'a self, downstream: &'a str, limit: &'a Limit)
    -> BoxFuture<'a, Result<Option<Duration>, StoreError>>;

    /// Pauses `downstream` for everyone for `pause` from now (a `retry_after` answered by it).
    fn pause<'a>(&'a self, downstream: &'a str, pause: Duration) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// What a call to a limited downstream holds: its concurrency slot, if the limit caps
/// concurrency (released on drop), and how long it waited for its token.
#[derive(Debug)]
pub struct Permit {
    downstream: String,
    waited: Duration,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Permit {
    /// The downstream.
    pub fn downstream(&self) -> &str {
        &self.downstream
    }

    /// How long the call waited for its token (and slot).
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// The clock of the in-process buckets: tokio's, so that a paused test clock drives them.
#[derive(Clone, Copy, Debug, Default)]
struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;

/// One declared downstream.
struct Downstream {
    limit: Limit,
    bucket: Bucket,
    /// Until when a `retry_after` paused it, in this process.
    paused_until: Mutex<Option<Instant>>,
    slots: Option<Arc<Semaphore>>,
}

/// The downstreams a runtime declared, and the store's shared buckets if it has them.
#[derive(Default)]
pub(crate) struct Limits {
    downstreams: HashMap<String, Downstream>,
    shared: Option<Arc<dyn SharedLimits>>,
}

/// Why no token could be taken.
#[derive(Debug)]
pub(crate) enum LimitError {
    /// No limit of that name was declared on the runtime.
    Unknown(String),
}

impl Limits {
    pub(crate) fn new(declared: Vec<(String, Limit)>, shared: Option<Arc<dyn SharedLimits>>) -> Limits {
        let downstreams = declared
            .into_iter()
            .map(|(name, limit)| {
                let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
                let quota = Quota::with_period(limit.interval)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
                    .allow_burst(burst);
                let slots = limit.concurrency.map(|calls| Arc::new(Semaphore::new(calls as usize)));
                let downstream = Downstream {
                    limit,
                    bucket: RateLimiter::direct_with_clock(quota, TokioClock),
                    paused_until: Mutex::new(None),
                    slots,
                };
                (name, downstream)
            })
            .collect();
        Limits { downstreams, shared }
    }

    /// Whether `name` was declared.
    pub(crate) fn knows(&self, name: &str) -> bool {
        self.downstreams.contains_key(name)
    }

    /// The declared names, sorted (for error messages).
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.downstreams.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Waits for a token of `name` (and a slot, if its concurrency is capped).
    pub(crate) async fn acquire(&self, name: &str) -> Result<Permit, LimitError> {
        let downstream = self.downstreams.get(name).ok_or_else(|| LimitError::Unknown(name.to_owned()))?;
        let started = Instant::now();
        loop {
            let paused = *downstream.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = paused.filter(|until| *until > Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let wait = match &self.shared {
                Some(shared) => match shared.take(name, &downstream.limit).await {
                    Ok(wait) => wait,
                    Err(error) => {
                        // The store's bucket cannot be reached: limit in process meanwhile
                        // (the journal's writes wait for the store anyway).
                        tracing::warn!(downstream = name, %error, "the shared rate limit is unreachable; limiting in process");
                        local_wait(&downstream.bucket)
                    }
                },
                None => local_wait(&downstream.bucket),
            };
            match wait {
                None => break,
                Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
            }
        }
        let slot = match &downstream.slots {
            Some(slots) => slots.clone().acquire_owned().await.ok(),
            None => None,
        };
        Ok(Permit { downstream: name.to_owned(), waited: started.elapsed(), _slot: slot })
    }

    /// Pauses `name` for every saga (and, shared, every worker) for `pause`.
    pub(crate) async fn pause(&self, name: &str, pause: Duration) {
        let Some(downstream) = self.downstreams.get(name) else { return };
        let until = Instant::now() + pause;
        {
            let mut paused = downstream.paused_until.lock().unwrap_or_else(|e| e.into_inner());
            if paused.is_none_or(|current| current < until) {
                *paused = Some(until);
            }
        }
        tracing::info!(downstream = name, pause_ms = pause.as_millis() as u64, "downstream paused by a retry_after");
        if let Some(shared) = &self.shared
            && let Err(error) = shared.pause(name, pause).await
        {
            tracing::warn!(downstream = name, %error, "could not pause the downstream for the other workers");
        }
    }
}

/// `None` when the in-process bucket grants a token, else how long until it would.
fn local_wait(bucket: &Bucket) -> Option<Duration> {
    match bucket.check() {
        Ok(()) => None,
        Err(not_until) => Some(not_until.wait_time_from(TokioClock.now())),
    }
}
