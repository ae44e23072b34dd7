//! The five-step saga the SQLite and scale benchmarks run (two compensable steps, one
//! idempotent, the commit point, one more idempotent), with small structured outputs.

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize)]
pub struct FiveSteps {
    pub order: u64,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Receipt {
    id: u64,
    note: String,
}

#[saga]
impl FiveSteps {
    #[step(compensate = release)]
    async fn reserve(&self, _cx: &StepContext) -> StepResult<Receipt> {
        Ok(Receipt { id: self.order, note: "reserved".into() })
    }
    async fn release(&self, _cx: &StepContext, _r: &Receipt) -> StepResult<()> {
        Ok(())
    }
    #[step(compensate = refund)]
    async fn charge(&self, _cx: &StepContext, reserve: &Receipt) -> StepResult<Receipt> {
        Ok(Receipt { id: reserve.id + 1, note: "charged".into() })
    }
    async fn refund(&self, _cx: &StepContext, _r: &Receipt) -> StepResult<()> {
        Ok(())
    }
    #[step(idempotent)]
    async fn pack(&self, _cx: &StepContext, charge: &Receipt) -> StepResult<u64> {
        Ok(charge.id * 2)
    }
    #[step(commit)]
    async fn ship(&self, _cx: &StepContext, pack: &u64) -> StepResult<u64> {
        Ok(pack + 1)
    }
    #[step(idempotent)]
    async fn notify(&self, _cx: &StepContext, ship: &u64) -> StepResult<String> {
        Ok(format!("shipped {ship}"))
    }
}
