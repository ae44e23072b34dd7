//! The budgets of the escalation ladder and the retry delay schedule.

use std::time::Duration;

/// The budgets of the escalation ladder (see the [`ladder`](crate::ladder) module).
///
/// Fields are public so that a policy reads as a struct literal:
///
/// ```
/// use std::time::Duration;
/// use saga_runtime::prelude::*;
///
/// let policy = Policy { transient_retries: 5, step_timeout: Some(Duration::from_secs(60)), ..Policy::default() };
/// assert_eq!(policy.reprompts, 2);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Retries of a step after transient failures, before level 3 (default 3).
    pub transient_retries: u32,
    /// Delays between retries of steps and of compensations.
    pub backoff: Backoff,
    /// Re-prompts with the error after logical failures (default 2).
    pub reprompts: u32,
    /// Model tiers, the default tier 0 included (default 2: tier 0 and one stronger tier).
    /// After the re-prompts, a logically failing step gets one attempt on each stronger tier.
    pub model_tiers: u32,
    /// Restarts after environmental failures caused by the same step (default 2).
    pub environment_restarts: u32,
    /// Retries of a failing compensation before a human is paged (default 3).
    pub compensation_retries: u32,
    /// Stops of the process in a row that may interrupt one step (or one compensation) before
    /// the step is taken to be what kills the process and parked for a human (level 4; never
    /// rolled back, since a crash the saga did not cause looks the same). An attempt that ends
    /// any other way resets the count, so a crash loop of the whole process (a bad deploy, OOM
    /// kills elsewhere) only parks a saga whose one step spans this many crashes (default 20).
    /// Interruptions never spend the other budgets.
    pub interruptions: u32,
    /// Timeout of each attempt of a step and of its compensation, unless the step sets its
    /// own with `#[step(timeout = "30s")]` (default: none).
    pub step_timeout: Option<Duration>,
    /// Delays between retries of a journal write that the store refused for a reason that may
    /// pass (a full disk, an I/O error, a busy database): the saga waits, it is neither failed
    /// nor stranded (default 100 ms doubling to 10 s, full jitter). No budget: it waits until
    /// the store accepts the write, or the process stops.
    pub store_retry: Backoff,
    /// How long a store outage lasts before the pager is called, once per outage (default 60 s).
    pub store_outage_page_after: Duration,
    /// A saga parked for a human is paged again by the sweep (`Runtime::sweep`, and every
    /// worker's periodic sweep) once it has waited this long since its last page (default
    /// 4 h; `None`: page once).
    pub repage_after: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            transient_retries: 3,
            backoff: Backoff::default(),
            reprompts: 2,
            model_tiers: 2,
            environment_restarts: 2,
            compensation_retries: 3,
            interruptions: 20,
            step_timeout: None,
            store_retry: Backoff {
                initial: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_secs(10),
                jitter: Jitter::Full,
            },
            store_outage_page_after: Duration::from_secs(60),
            repage_after: Some(Duration::from_secs(4 * 3600)),
        }
    }
}

/// Exponential backoff, capped, with optional full jitter.
///
/// The delay before retry `n` (1-based) is drawn from `[0, min(max, initial * factor^(n-1))]`
/// in whole milliseconds with [`Jitter::Full`], or is that cap with [`Jitter::None`]; it is never shorter than a
/// `retry_after` the error asked for. Written by hand rather than with a retry crate because
/// the ladder needs the delay of a given retry number, restored from the journal after a
/// crash, not an iterator that lives in one process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The cap of the first retry's delay (default 500 ms).
    pub initial: Duration,
    /// The growth of the cap per retry (default 2).
    pub factor: f64,
    /// The largest cap (default 30 s).
    pub max: Duration,
    /// Whether delays are drawn at random below the cap (default [`Jitter::Full`]).
    pub jitter: Jitter,
}

/// How a retry delay is drawn below its cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniformly in `[0, cap]`: spreads the retries of many sagas ("full jitter").
    Full,
    /// Exactly the cap: deterministic, for tests and demos.
    None,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(500), factor: 2.0, max: Duration::from_secs(30), jitter: Jitter::Full }
    }
}

impl Backoff {
    /// The cap of the delay before retry `retry` (1-based).
    pub fn cap(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(1_000) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        Duration::try_from_secs_f64(secs).map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry `retry` (1-based), at least `at_least` when given.
    pub fn delay(&self, retry: u32, at_least: Option<Duration>) -> Duration {
        let cap = self.cap(retry);
        let drawn = match self.jitter {
            Jitter::None => cap,
            // Whole milliseconds: timers have millisecond resolution, so the recorded delay is
            // exactly what the saga sleeps.
            Jitter::Full => Duration::from_millis(fastrand::u64(0..=cap.as_millis().min(u64::MAX as u128) as u64)),
        };
        at_least.map_or(drawn, |min| drawn.max(min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_by_the_factor_up_to_the_maximum() {
        let backoff = Backoff::default();
        let caps: Vec<u64> = (1..=8).map(|n| backoff.cap(n).as_millis() as u64).collect();
        assert_eq!(caps, [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]);
        assert_eq!(backoff.cap(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_stays_below_the_cap_and_above_retry_after() {
        let backoff = Backoff::default();
        for n in 1..50 {
            let d = backoff.delay(3, None);
            assert!(d <= Duration::from_secs(2), "draw {n}: {d:?}");
            let d = backoff.delay(1, Some(Duration::from_secs(5)));
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(5), "draw {n}: {d:?}");
        }
        let none = Backoff { jitter: Jitter::None, ..backoff };
        assert_eq!(none.delay(2, None), Duration::from_secs(1));
        assert_eq!(none.delay(2, Some(Duration::from_secs(3))), Duration::from_secs(3));
    }
}
