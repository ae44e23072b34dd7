//! The code-change agent as a saga: plan (a model call), write the files, open a pull
//! request, run the tests, comment on the issue, merge (the commit point), announce.

use std::sync::Arc;

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fakes::{Chat, Ci, CodeHost, ScriptedModel};

/// The saga's input: what the agent was asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeChange {
    pub repo: String,
    pub issue: u64,
    pub request: String,
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

/// The fakes, registered on the runtime as one resource.
pub struct World {
    pub model: ScriptedModel,
    pub host: CodeHost,
    pub ci: Ci,
    pub chat: Chat,
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
        let previous = cx.previous_error().map(|f| f.message.as_str());
        world(cx).model.plan(&self.request, cx.model_tier(), previous, cx.observation())
    }
    fn plan_stays_in_repo(&self, plan: &Plan) -> Result<(), String> {
        match plan.files.iter().find(|f| f.path.starts_with('/') || f.path.contains("..")) {
            Some(file) => Err(format!("the plan writes {} outside the repository", file.path)),
            None if plan.files.is_empty() => Err("the plan changes no file".to_owned()),
            None => Ok(()),
        }
    }

    /// Pushes the planned files to a branch named after the idempotency key.
    #[step(compensate = delete_branch)]
    async fn write_files(&self, cx: &StepContext, plan: &Plan) -> StepResult<Branch> {
        let name = format!("agent/issue-{}-{}", self.issue, &cx.idempotency_key()[..6]);
        world(cx).host.write_files(cx.idempotency_key(), &name, &plan.files)?;
        Ok(Branch { name, files: plan.files.iter().map(|f| f.path.clone()).collect() })
    }
    async fn delete_branch(&self, cx: &StepContext, branch: &Branch) -> StepResult<()> {
        world(cx).host.delete_branch(&branch.name)
    }

    #[step(compensate = close_pr)]
    async fn open_pr(&self, cx: &StepContext, write_files: &Branch) -> StepResult<u64> {
        world(cx).host.open_pr(cx.idempotency_key(), &write_files.name)
    }
    async fn close_pr(&self, cx: &StepContext, pr: &u64) -> StepResult<()> {
        world(cx).host.close_pr(*pr)
    }

    #[step(idempotent)]
    async fn run_tests(&self, cx: &StepContext, open_pr: &u64) -> StepResult<u32> {
        world(cx).ci.run(*open_pr)
    }

    #[step(compensate = delete_comment)]
    async fn comment_on_issue(&self, cx: &StepContext, open_pr: &u64, run_tests: &u32) -> StepResult<u64> {
        let text = format!("Opened #{open_pr}: {run_tests} tests pass.");
        world(cx).host.comment(cx.idempotency_key(), self.issue, &text)
    }
    async fn delete_comment(&self, cx: &StepContext, comment: &u64) -> StepResult<()> {
        world(cx).host.delete_comment(*comment)
    }

    /// The commit point: once merged, the saga never rolls back.
    #[step(commit)]
    async fn merge(&self, cx: &StepContext, open_pr: &u64) -> StepResult<String> {
        world(cx).host.merge(cx.idempotency_key(), *open_pr)
    }

    #[step(idempotent)]
    async fn announce(&self, cx: &StepContext, plan: &Plan, merge: &String) -> StepResult<()> {
        let message = format!("{} merged as {merge} ({})", self.repo, plan.summary);
        world(cx).chat.announce(cx.idempotency_key(), &message)
    }
}
