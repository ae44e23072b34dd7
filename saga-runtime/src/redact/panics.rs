//! Panic messages of steps and compensations, scrubbed before anyone prints them.
//!
//! The runtime catches a panic inside a step (it becomes a logical failure of the step, whose
//! message is scrubbed like any other), but Rust's panic hook runs first, at the panic, and the
//! default one prints the raw message, once per attempt. So while a step or a compensation is
//! polled, a thread-local holds the saga's scrubber, and the hook the runtime installs prints
//! the message scrubbed (in the default hook's shape, with a backtrace when `RUST_BACKTRACE`
//! asks for one) instead. Every other panic goes to the hook that was there before: the
//! runtime installs its hook once, on its first step, on top of whatever hook the program set,
//! and chains to it. (A hook set after that replaces the runtime's: set yours before running
//! sagas.)

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};

use super::Scrubber;

thread_local! {
    static SCRUBBING: RefCell<Option<(Scrubber, &'static str)>> = const { RefCell::new(None) };
}

/// Installs the runtime's panic hook once, chaining to the hook already set.
fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let scrubbing = SCRUBBING.with(|s| s.borrow().clone());
            let Some((scrubber, what)) = scrubbing else { return previous(info) };
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
            let thread = std::thread::current();
            let location = info.location().map_or_else(String::new, |l| format!(" at {l}"));
            let backtrace = std::backtrace::Backtrace::capture();
            let backtrace = match backtrace.status() {
                std::backtrace::BacktraceStatus::Captured => format!("\nstack backtrace:\n{backtrace}"),
                _ => String::new(),
            };
            eprintln!(
                "thread '{}' panicked{location}:\n{}\nnote: saga-runtime caught it: the {what} fails (logical); its message is scrubbed of credentials{backtrace}",
                thread.name().unwrap_or("<unnamed>"),
                scrubber.scrub(&message)
            );
        }));
    });
}

/// A step's (or a compensation's) future, polled with the saga's scrubber in place for the
/// panic hook.
pub(crate) struct Scrubbed<F> {
    future: F,
    scrubber: Scrubber,
    what: &'static str,
}

impl<F> Scrubbed<F> {
    /// `what` names the kind of code (`step`, `compensation`) in the hook's note.
    pub(crate) fn new(future: F, scrubber: Scrubber, what: &'static str) -> Self {
        install();
        Scrubbed { future, scrubber, what }
    }
}

impl<F: Future + Unpin> Future for Scrubbed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let entry = (self.scrubber.clone(), self.what);
        let outer = SCRUBBING.with(|s| s.borrow_mut().replace(entry));
        // Restored even when the poll panics (the runtime catches the panic above this).
        struct Restore(Option<(Scrubber, &'static str)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let outer = self.0.take();
                SCRUBBING.with(|s| *s.borrow_mut() = outer);
            }
        }
        let _restore = Restore(outer);
        Pin::new(&mut self.future).poll(cx)
    }
}
