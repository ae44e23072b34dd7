//! Crash points for the crash test: with the `test-hooks` feature, the runtime calls
//! [`crash_point`] before and after each journal write; the test's own steps call it inside
//! their effects and compensations. When the process-wide count of points reached equals
//! `SAGA_CRASH_POINT`, the process announces it on stdout (`SAGA-CRASH-POINT <n> <label>`)
//! and stops making progress, so that the test can kill it with SIGKILL at exactly that
//! point. Without the feature every call compiles to nothing.

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::io::Write;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static REACHED: AtomicU64 = AtomicU64::new(0);

    fn target() -> Option<u64> {
        static TARGET: OnceLock<Option<u64>> = OnceLock::new();
        *TARGET.get_or_init(|| std::env::var("SAGA_CRASH_POINT").ok().and_then(|v| v.parse().ok()))
    }

    /// A point where the test may kill the process.
    pub fn crash_point(label: &str) {
        let n = REACHED.fetch_add(1, Ordering::SeqCst) + 1;
        if target() == Some(n) {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "SAGA-CRASH-POINT {n} {label}");
            let _ = stdout.flush();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }

    /// How many crash points this process has passed.
    pub fn points_reached() -> u64 {
        REACHED.load(Ordering::SeqCst)
    }
}

#[cfg(feature = "test-hooks")]
pub use enabled::{crash_point, points_reached};

/// A point where the crash test may kill the process (nothing without `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn crash_point(_label: &str) {}
