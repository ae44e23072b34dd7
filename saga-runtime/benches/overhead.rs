//! The runtime's cost per step in memory, against calling the same async functions directly,
//! and the cost of one ladder retry. Prints a table; run with
//! `cargo bench -p saga-runtime --bench overhead`.
//!
//! Each figure is the median of 7 rounds. The "direct" column is the physical limit of the
//! same run: the step bodies awaited one after the other with no runtime around them.

// A counting global allocator is the only unsafe code of the workspace: it forwards to
// `System` and counts, to report allocations per saga.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// Counts allocations, to report allocations and bytes per saga.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The body of every step: a little work that the optimizer cannot remove.
async fn body(i: u64) -> StepResult<u64> {
    Ok(black_box(i).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

macro_rules! bench_saga {
    ($name:ident: $($step:ident = $i:literal),+) => {
        #[derive(Clone, Serialize, Deserialize)]
        struct $name;

        #[saga]
        impl $name {
            $(
                #[step(idempotent)]
                async fn $step(&self, _cx: &StepContext) -> StepResult<u64> {
                    body($i).await
                }
            )+
        }

        impl $name {
            /// The same bodies, awaited directly.
            async fn direct() -> u64 {
                let mut sum = 0u64;
                $( sum = sum.wrapping_add(body($i).await.unwrap()); )+
                sum
            }
        }
    };
}

bench_saga!(One: s0 = 0);
bench_saga!(Ten: s0 = 0, s1 = 1, s2 = 2, s3 = 3, s4 = 4, s5 = 5, s6 = 6, s7 = 7, s8 = 8, s9 = 9);
bench_saga!(Hundred:
    s0 = 0, s1 = 1, s2 = 2, s3 = 3, s4 = 4, s5 = 5, s6 = 6, s7 = 7, s8 = 8, s9 = 9,
    s10 = 10, s11 = 11, s12 = 12, s13 = 13, s14 = 14, s15 = 15, s16 = 16, s17 = 17, s18 = 18, s19 = 19,
    s20 = 20, s21 = 21, s22 = 22, s23 = 23, s24 = 24, s25 = 25, s26 = 26, s27 = 27, s28 = 28, s29 = 29,
    s30 = 30, s31 = 31, s32 = 32, s33 = 33, s34 = 34, s35 = 35, s36 = 36, s37 = 37, s38 = 38, s39 = 39,
    s40 = 40, s41 = 41, s42 = 42, s43 = 43, s44 = 44, s45 = 45, s46 = 46, s47 = 47, s48 = 48, s49 = 49,
    s50 = 50, s51 = 51, s52 = 52, s53 = 53, s54 = 54, s55 = 55, s56 = 56, s57 = 57, s58 = 58, s59 = 59,
    s60 = 60, s61 = 61, s62 = 62, s63 = 63, s64 = 64, s65 = 65, s66 = 66, s67 = 67, s68 = 68, s69 = 69,
    s70 = 70, s71 = 71, s72 = 72, s73 = 73, s74 = 74, s75 = 75, s76 = 76, s77 = 77, s78 = 78, s79 = 79,
    s80 = 80, s81 = 81, s82 = 82, s83 = 83, s84 = 84, s85 = 85, s86 = 86, s87 = 87, s88 = 88, s89 = 89,
    s90 = 90, s91 = 91, s92 = 92, s93 = 93, s94 = 94, s95 = 95, s96 = 96, s97 = 97, s98 = 98, s99 = 99
);

/// A one-step saga whose step fails transiently on its first attempt when `fail` is set.
#[derive(Clone, Serialize, Deserialize)]
struct Flaky {
    fail: bool,
}

#[saga]
impl Flaky {
    #[step(idempotent)]
    async fn call(&self, cx: &StepContext) -> StepResult<u64> {
        if self.fail && cx.attempt() == 1 {
            return Err(StepError::transient("503"));
        }
        body(1).await
    }
}

const ROUNDS: usize = 7;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Nanoseconds per call of `f`, median of the rounds, with allocations and bytes per call.
fn measure<F: FnMut() -> Fut, Fut: Future>(
    tokio: &tokio::runtime::Runtime,
    iterations: u32,
    mut f: F,
) -> (f64, f64, f64) {
    let mut samples = Vec::with_capacity(ROUNDS);
    let mut allocations = 0.0;
    let mut bytes = 0.0;
    for _ in 0..ROUNDS {
        let (a0, b0) = (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed));
        let start = Instant::now();
        tokio.block_on(async {
            for _ in 0..iterations {
                black_box(f().await);
            }
        });
        samples.push(start.elapsed().as_nanos() as f64 / f64::from(iterations));
        allocations = (ALLOCATIONS.load(Ordering::Relaxed) - a0) as f64 / f64::from(iterations);
        bytes = (BYTES.load(Ordering::Relaxed) - b0) as f64 / f64::from(iterations);
    }
    (median(samples), allocations, bytes)
}

/// A fresh runtime per round keeps the in-memory store small.
fn runtime(policy: Policy) -> Runtime {
    Runtime::builder().policy(policy).build()
}

fn main() {
    let tokio = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let policy = Policy {
        backoff: Backoff { initial: Duration::ZERO, max: Duration::ZERO, jitter: Jitter::None, ..Backoff::default() },
        ..Policy::default()
    };

    println!("saga-runtime overhead in memory (MemoryStore), median of {ROUNDS} rounds\n");
    println!(
        "| steps | direct (µs/saga) | saga (µs/saga) | ratio | overhead per step (µs) | allocations/saga | KiB allocated/saga |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let rows: [(usize, u32); 3] = [(1, 20_000), (10, 4_000), (100, 400)];
    for (steps, iterations) in rows {
        let rt = runtime(policy.clone());
        let (direct, _, _) = match steps {
            1 => measure(&tokio, iterations, One::direct),
            10 => measure(&tokio, iterations, Ten::direct),
            _ => measure(&tokio, iterations, Hundred::direct),
        };
        let (saga, allocations, bytes) = match steps {
            1 => measure(&tokio, iterations, || {
                let rt = rt.clone();
                async move { rt.run(One).await.unwrap().is_completed() }
            }),
            10 => measure(&tokio, iterations, || {
                let rt = rt.clone();
                async move { rt.run(Ten).await.unwrap().is_completed() }
            }),
            _ => measure(&tokio, iterations, || {
                let rt = rt.clone();
                async move { rt.run(Hundred).await.unwrap().is_completed() }
            }),
        };
        println!(
            "| {steps} | {:.3} | {:.3} | {:.0}× | {:.3} | {allocations:.0} | {:.1} |",
            direct / 1e3,
            saga / 1e3,
            saga / direct.max(1.0),
            (saga - direct) / 1e3 / steps as f64,
            bytes / 1024.0
        );
    }

    let rt = runtime(policy.clone());
    let iterations = 20_000;
    let (clean, _, _) = measure(&tokio, iterations, || {
        let rt = rt.clone();
        async move { rt.run(Flaky { fail: false }).await.unwrap().is_completed() }
    });
    let (retried, _, _) = measure(&tokio, iterations, || {
        let rt = rt.clone();
        async move { rt.run(Flaky { fail: true }).await.unwrap().report().escalations.len() }
    });
    println!("\none ladder retry (transient failure, zero backoff): {:.3} µs", (retried - clean) / 1e3);
    println!("  one-step saga without failure {:.3} µs, with one retry {:.3} µs", clean / 1e3, retried / 1e3);
    println!("\ntarget: under 2 µs of runtime overhead per step in memory");
}
