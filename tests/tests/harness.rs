//! The fault-matrix harness itself: a correct saga passes every cell; a saga whose
//! compensation forgets an effect fails exactly the cells that expose it, and says why.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use saga_runtime::prelude::*;
use saga_runtime::testing::{Fault, FaultMatrix, MatrixReport};
use serde::{Deserialize, Serialize};

/// A shop whose every operation is keyed (a replay with the same key changes nothing).
#[derive(Debug, Default)]
struct Shop {
    holds: BTreeMap<String, u64>,
    parcels: BTreeSet<String>,
    charges: BTreeMap<String, u64>,
    emails: BTreeSet<String>,
}

type World = Arc<Mutex<Shop>>;

fn shop(cx: &StepContext) -> std::sync::MutexGuard<'_, Shop> {
    cx.resource::<World>().lock().unwrap()
}

/// Undoes every effect a step landed (the keys of the holds or parcels it made).
fn landed_keys(cx: &StepContext) -> Result<Vec<String>, StepError> {
    cx.effects().iter().map(|e| e.result::<String>().map_err(StepError::logical)).collect()
}

/// How the compensations are written: right, or rotted in one of two ways.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
enum Undo {
    Right,
    /// `cancel` forgets the parcel altogether.
    ForgetsParcel,
}

/// The hold both sagas take: an effect keyed by the attempt, recorded in the shop.
async fn hold(cx: &StepContext, cents: u64) -> StepResult<String> {
    cx.effect("hold", async move {
        let key = cx.idempotency_key().to_owned();
        shop(cx).holds.insert(key.clone(), cents);
        Ok(key)
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    cents: u64,
    undo: Undo,
}

#[saga]
impl Order {
    #[step(compensate = release)]
    async fn hold(&self, cx: &StepContext) -> StepResult<String> {
        hold(cx, self.cents).await
    }
    async fn release(&self, cx: &StepContext, _hold: Option<&String>) -> StepResult<()> {
        for key in landed_keys(cx)? {
            shop(cx).holds.remove(&key);
        }
        Ok(())
    }

    #[step(compensate = cancel)]
    async fn ship(&self, cx: &StepContext, hold: &str) -> StepResult<String> {
        assert!(!hold.is_empty());
        cx.effect("parcel", async move {
            let key = cx.idempotency_key().to_owned();
            shop(cx).parcels.insert(key.clone());
            Ok::<_, StepError>(key)
        })
        .await
    }
    async fn cancel(&self, cx: &StepContext, _parcel: Option<&String>) -> StepResult<()> {
        if self.undo == Undo::ForgetsParcel {
            return Ok(());
        }
        for key in landed_keys(cx)? {
            shop(cx).parcels.remove(&key);
        }
        Ok(())
    }

    #[step(commit)]
    async fn charge(&self, cx: &StepContext, hold: &str) -> StepResult<u64> {
        shop(cx).charges.insert(cx.idempotency_key().to_owned(), self.cents);
        Ok(shop(cx).holds.get(hold).copied().unwrap_or_default())
    }

    #[step(idempotent)]
    async fn email(&self, cx: &StepContext, charge: &u64) -> StepResult<()> {
        assert_eq!(*charge, self.cents);
        shop(cx).emails.insert(cx.idempotency_key().to_owned());
        Ok(())
    }
}

/// An `Order` whose `release` takes `&String`: it never runs for an attempt that landed its
/// hold and lost its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Careless {
    cents: u64,
}

#[saga]
impl Careless {
    #[step(compensate = release)]
    async fn hold(&self, cx: &StepContext) -> StepResult<String> {
        hold(cx, self.cents).await
    }
    async fn release(&self, cx: &StepContext, hold: &String) -> StepResult<()> {
        shop(cx).holds.remove(hold);
        Ok(())
    }

    #[step(commit)]
    async fn charge(&self, cx: &StepContext, hold: &str) -> StepResult<u64> {
        shop(cx).charges.insert(cx.idempotency_key().to_owned(), self.cents);
        Ok(shop(cx).holds.get(hold).copied().unwrap_or_default())
    }
}

fn clean(world: &World) -> bool {
    let shop = world.lock().unwrap();
    shop.holds.is_empty() && shop.parcels.is_empty() && shop.charges.is_empty() && shop.emails.is_empty()
}

async fn matrix(undo: Undo) -> MatrixReport {
    FaultMatrix::new(move || Order { cents: 500, undo })
        .world(World::default)
        .done(|world, output| {
            let shop = world.lock().unwrap();
            output.charge == 500
                && (shop.holds.len(), shop.parcels.len(), shop.charges.len(), shop.emails.len()) == (1, 1, 1, 1)
        })
        .clean(clean)
        .state(|world| format!("{:?}", world.lock().unwrap()))
        .run()
        .await
}

#[tokio::test(start_paused = true)]
async fn a_correct_saga_passes_every_cell() {
    let report = matrix(Undo::Right).await;
    report.assert_all_pass();
    // Every kind of cell was there: each fault at each step, and a crash around every write.
    for step in ["hold", "ship", "charge", "email"] {
        for fault in [Fault::TransientBlip, Fault::Transient, Fault::Logical, Fault::Environmental, Fault::LostResponse]
        {
            assert!(report.cell(step, fault).is_some(), "{step}: {fault}");
        }
    }
    for step in ["hold", "ship"] {
        for fault in [Fault::LostResponses, Fault::CompensationFails, Fault::CompensationTwice] {
            assert!(report.cell(step, fault).is_some(), "{step}: {fault}");
        }
    }
    assert!(report.cell("charge", Fault::CompensationFails).is_none(), "a commit step has no compensation");
    let crashes = report.cells.iter().filter(|c| matches!(c.cell.fault, Fault::CrashBefore(_) | Fault::CrashAfter(_)));
    assert!(crashes.count() >= 2 * 7, "a crash before and after each of the run's writes");
    // The ladder was checked: a transient fault at `email` (after the commit point) parks.
    let parked = report.cell("email", Fault::Transient).unwrap();
    assert_eq!(parked.outcome, Some(Status::NeedsHuman));
    assert_eq!(parked.levels.last(), Some(&Level::PageHuman));
    let rolled_back = report.cell("charge", Fault::Logical).unwrap();
    assert_eq!((rolled_back.outcome, rolled_back.world), (Some(Status::Compensated), Some(true)));
    let table = report.to_string();
    assert!(
        table.starts_with(&format!("fault matrix of `order`: {0} of {0} cells pass", report.cells.len())),
        "{table}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_forgets_an_effect_fails_exactly_the_cells_that_expose_it() {
    let report = matrix(Undo::ForgetsParcel).await;
    let failed: BTreeSet<(&str, String)> = report.failed().map(|c| (c.cell.step, c.cell.fault.to_string())).collect();
    let expected: BTreeSet<(&str, String)> = [
        ("ship", Fault::LostResponses),
        ("ship", Fault::CompensationFails),
        ("ship", Fault::CompensationTwice),
        ("charge", Fault::Transient),
        ("charge", Fault::Logical),
        ("charge", Fault::Environmental),
    ]
    .into_iter()
    .map(|(step, fault)| (step, fault.to_string()))
    .collect();
    assert_eq!(failed, expected, "the rollbacks through `cancel`, and only those");
    let cell = report.cell("charge", Fault::Logical).unwrap();
    assert_eq!(cell.problems, ["the saga was rolled back but the world is not `clean`"]);
    assert!(cell.timeline.iter().any(|line| line.contains("ship: compensating with `cancel`")), "{:?}", cell.timeline);

    let message = std::panic::catch_unwind(|| report.assert_all_pass()).unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.starts_with(&format!("6 of {} cells of `order` failed:", report.cells.len())), "{message}");
    assert!(message.contains(
        "- `charge`, logical, every attempt:\n    the saga was rolled back but the world is not `clean`\n    timeline:"
    ));
}

#[tokio::test(start_paused = true)]
async fn a_compensation_taking_a_reference_misses_a_lost_response() {
    let report = FaultMatrix::new(|| Careless { cents: 500 })
        .world(World::default)
        .done(|world, output| output.charge == 500 && world.lock().unwrap().charges.len() == 1)
        .clean(clean)
        .run()
        .await;
    let failed: Vec<(&str, Fault)> = report.failed().map(|c| (c.cell.step, c.cell.fault)).collect();
    assert_eq!(failed, [("hold", Fault::LostResponses)], "{report}");
}

#[tokio::test(start_paused = true)]
async fn cells_can_be_filtered_and_sampled() {
    let only = FaultMatrix::new(|| Order { cents: 500, undo: Undo::Right })
        .world(World::default)
        .clean(clean)
        .only(|cell| cell.step == "ship")
        .run()
        .await;
    assert!(!only.cells.is_empty() && only.cells.iter().all(|c| c.cell.step == "ship"));

    let sample = |seed| async move {
        let report = FaultMatrix::new(|| Order { cents: 500, undo: Undo::Right })
            .world(World::default)
            .clean(clean)
            .sample(5, seed)
            .run()
            .await;
        report.cells.iter().map(|c| (c.cell.step, c.cell.fault)).collect::<Vec<_>>()
    };
    let (a, b, c) = (sample(7).await, sample(7).await, sample(8).await);
    assert_eq!(a.len(), 5);
    assert_eq!(a, b, "the same seed draws the same cells");
    assert_ne!(a, c, "another seed draws others");
}

/// A charge that is not keyed: running it twice charges twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unkeyed {
    cents: u64,
}

#[saga]
impl Unkeyed {
    #[step(commit)]
    async fn charge(&self, cx: &StepContext) -> StepResult<u64> {
        let mut shop = shop(cx);
        let n = shop.charges.len();
        shop.charges.insert(format!("charge-{n}"), self.cents);
        Ok(self.cents)
    }

    #[step(idempotent)]
    async fn email(&self, cx: &StepContext, charge: &u64) -> StepResult<()> {
        shop(cx).emails.insert(format!("charged {charge}"));
        Ok(())
    }
}

/// The crash cells catch a step that is not safe to run again: a crash after its body ran and
/// before its result was journaled charges twice, and so does a lost response.
#[tokio::test(start_paused = true)]
async fn a_step_unsafe_to_run_again_fails_the_crash_between_its_work_and_its_checkpoint() {
    let report = FaultMatrix::new(|| Unkeyed { cents: 500 })
        .world(World::default)
        .done(|world, _| world.lock().unwrap().charges.len() == 1)
        .state(|world| format!("{:?}", world.lock().unwrap()))
        .run()
        .await;
    let failed: Vec<(&str, Fault)> = report.failed().map(|c| (c.cell.step, c.cell.fault)).collect();
    assert_eq!(failed.len(), 2, "{report}");
    assert_eq!(failed[0], ("charge", Fault::LostResponse));
    assert!(matches!(failed[1], ("charge", Fault::CrashBefore(_))), "{failed:?}");
    let crash = report.cell(failed[1].0, failed[1].1).unwrap();
    assert!(
        crash.problems.iter().any(|p| p.contains("the world differs from the uninterrupted run's")),
        "{:?}",
        crash.problems
    );
}
