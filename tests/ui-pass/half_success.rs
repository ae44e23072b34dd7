//! A compensation that takes `Option<&T>` also undoes a failed attempt's landed effects.
use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct WriteFiles {
    files: Vec<String>,
}

#[saga]
impl WriteFiles {
    #[step(compensate = delete_files)]
    async fn write(&self, cx: &StepContext) -> StepResult<Vec<String>> {
        let mut written = Vec::new();
        for file in &self.files {
            written.push(cx.effect_with("write", file, |key| async move { Ok::<_, StepError>(key) }).await?);
        }
        Ok(written)
    }
    async fn delete_files(&self, cx: &StepContext, _written: Option<&Vec<String>>) -> StepResult<()> {
        for effect in cx.effects() {
            let _key: String = effect.result().map_err(StepError::logical)?;
        }
        Ok(())
    }
}

fn main() {
    assert!(WriteFiles::definition().steps()[0].undoes_failed_attempts());
}
