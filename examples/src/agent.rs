//! The code-change agent as a saga: plan (a model call), write the files, open a pull
//! request, run the tests, comment on the issue, merge (the commit point), announce.

use std::sync::Arc;

use saga_runtime::Redacted;
use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fakes::World;

/// The saga's input: what the agent was asked to do, and with which credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeChange {
    pub repo: String,
    pub issue: u64,
    pub request: String,
    /// Printed as `[redacted]`; kept (encrypted, when the store has a key) in the checkpoint.
    pub host_token: Redacted<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub model: String,
    pub summary: String,
    pub files: Vec<FileChange>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Branch {
    pub name: String,
    pub files: Vec<String>,
}

fn world(cx: &StepContext) -> &Arc<World> {
    cx.resource::<Arc<World>>()
}

#[saga(name = "code-change", version = 1)]
impl CodeChange {
    /// Asks the model for a plan. Nothing to undo; a plan touching files outside the
    /// repository is rejected by `plan_stays_in_repo`, which re-prompts with the reason.
    #[step(idempotent, validate = plan_stays_in_repo, timeout = "2m")]
    async fn plan(&self, cx: &StepContext) -> StepResult<Plan> {
        world(cx).latency().await;
        let previous = cx.previous_error().map(|f| f.message.as_str());
        let plan = world(cx).plan(&self.request, cx.model_tier(), previous, cx.observation())?;
        cx.record_llm(
            &format!("Authorization: Bearer {} | {}", self.host_token.expose(), self.request),
            &format!("{} ({} files)", plan.summary, plan.files.len()),
        );
        Ok(plan)
    }
    fn plan_stays_in_repo(&self, plan: &Plan) -> Result<(), String> {
        match plan.files.iter().find(|f| f.path.starts_with('/') || f.path.contains("..")) {
            Some(file) => Err(format!("the plan writes {} outside the repository", file.path)),
            None if plan.files.is_empty() => Err("the plan changes no file".to_owned()),
            None => Ok(()),
        }
    }

    /// Pushes each planned file as its own journaled effect, to a branch named after the saga
    /// (so that a sweep can tell whose it is) and the step's idempotency key. If a push is refused half-way, the files that landed are
    /// deleted by `delete_files` before the step runs again (half-success). When a later step
    /// blamed it (`run_tests` found the code wrong), the model rewrites the files first, with
    /// that failure in context.
    #[step(compensate = delete_files)]
    async fn write_files(&self, cx: &StepContext, plan: &Plan) -> StepResult<Branch> {
        world(cx).latency().await;
        let name = format!("agent/{}/issue-{}-{}", cx.saga_id(), self.issue, &cx.idempotency_key()[..6]);
        let planned = match cx.previous_error() {
            Some(found) if found.step != cx.step() => {
                let files = world(cx).rewrite(&plan.files, cx.model_tier(), &found.message);
                let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
                let changed: Vec<&str> = files
                    .iter()
                    .zip(&plan.files)
                    .filter(|(new, old)| new.content != old.content)
                    .map(|(new, _)| new.path.as_str())
                    .collect();
                let prompt = format!(
                    "Rewrite {} ({}). `{}` found: {}",
                    paths.join(", "),
                    plan.summary,
                    found.step,
                    found.message
                );
                let response = match changed.as_slice() {
                    [] => "no change".to_owned(),
                    changed => format!("changed {}", changed.join(", ")),
                };
                cx.record_llm(&prompt, &response);
                files
            }
            _ => plan.files.clone(),
        };
        let mut files = Vec::new();
        for file in &planned {
            let (_, path): (String, String) = cx
                .effect_with(&format!("push {}", file.path), &(&name, file), |key| {
                    let name = &name;
                    async move { world(cx).write_file(&key, name, file).map(|path| (name.clone(), path)) }
                })
                .await?;
            files.push(path);
        }
        Ok(Branch { name, files })
    }
    /// Undoes exactly what landed: `cx.effects()` lists every pushed file, also when the step
    /// failed before returning a `Branch` (then `branch` is `None`).
    async fn delete_files(&self, cx: &StepContext, _branch: Option<&Branch>) -> StepResult<()> {
        for effect in cx.effects() {
            let (branch, path): (String, String) = effect.result().map_err(StepError::logical)?;
            world(cx).delete_file(&branch, &path);
        }
        Ok(())
    }

    #[step(compensate = close_pr)]
    async fn open_pr(&self, cx: &StepContext, write_files: &Branch) -> StepResult<u64> {
        world(cx).latency().await;
        cx.effect("open pr", async { world(cx).open_pr(cx.idempotency_key(), &write_files.name) }).await
    }
    /// Closes the PR the step opened: also when its answer was lost after the host opened it
    /// (the fault matrix's "lost response"), since the PR is on record as a landed effect.
    async fn close_pr(&self, cx: &StepContext, _pr: Option<&u64>) -> StepResult<()> {
        for effect in cx.effects() {
            world(cx).close_pr(effect.result().map_err(StepError::logical)?)?;
        }
        Ok(())
    }

    /// Runs the tests. Red tests are a logical failure, but running them again changes
    /// nothing: the code was wrong, so the failure blames `write_files`, which is re-prompted
    /// with the failing tests in context (the PR and the files are undone first).
    #[step(idempotent)]
    async fn run_tests(&self, cx: &StepContext, open_pr: &u64) -> StepResult<u32> {
        world(cx).latency().await;
        let run = world(cx).run_ci(*open_pr)?;
        if run.failed.is_empty() {
            return Ok(run.passed);
        }
        let total = run.passed + run.failed.len() as u32;
        Err(StepError::logical(format!("{} of {total} tests failed: {}", run.failed.len(), run.failed.join(", ")))
            .blame(CodeChangeStep::write_files))
    }

    #[step(compensate = delete_comment)]
    async fn comment_on_issue(&self, cx: &StepContext, open_pr: &u64, run_tests: &u32) -> StepResult<u64> {
        world(cx).latency().await;
        let text = format!("Opened #{open_pr}: {run_tests} tests pass.");
        cx.effect("comment", async { world(cx).comment(cx.idempotency_key(), self.issue, &text) }).await
    }
    async fn delete_comment(&self, cx: &StepContext, _comment: Option<&u64>) -> StepResult<()> {
        for effect in cx.effects() {
            world(cx).delete_comment(effect.result().map_err(StepError::logical)?)?;
        }
        Ok(())
    }

    /// The commit point: once merged, the saga never rolls back.
    #[step(commit)]
    async fn merge(&self, cx: &StepContext, open_pr: &u64) -> StepResult<String> {
        world(cx).latency().await;
        world(cx).merge(cx.idempotency_key(), *open_pr)
    }

    #[step(idempotent)]
    async fn announce(&self, cx: &StepContext, plan: &Plan, merge: &str) -> StepResult<()> {
        world(cx).latency().await;
        let message = format!("{} merged as {merge} ({})", self.repo, plan.summary);
        world(cx).announce(cx.idempotency_key(), &message)
    }
}
