//! In-process fakes of what a code-change agent talks to: a model vendor that fails in
//! scripted ways, a code host that dedupes on idempotency keys, a CI service and a chat.
//! Each prints what it does, so the timeline shows real side effects next to the ladder.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use saga_runtime::prelude::*;
use serde_json::Value;

use crate::agent::{FileChange, Plan};

/// Prints a side effect of a fake, indented under the timeline.
pub fn say(who: &str, what: impl std::fmt::Display) {
    println!("           [{who}] {what}");
}

fn short(key: &str) -> &str {
    &key[..8]
}

/// How the next model call goes.
#[derive(Clone, Copy, Debug)]
pub enum ModelFault {
    /// The vendor answers 503.
    Outage,
    /// The model returns a plan that touches files outside the repository.
    Hallucinate,
}

/// A model vendor whose next answers are scripted.
#[derive(Default)]
pub struct ScriptedModel {
    pub faults: Mutex<VecDeque<ModelFault>>,
    pub calls: Mutex<u32>,
}

impl ScriptedModel {
    pub fn with(faults: impl IntoIterator<Item = ModelFault>) -> Self {
        ScriptedModel { faults: Mutex::new(faults.into_iter().collect()), calls: Mutex::new(0) }
    }

    /// Plans the change for `request` on model tier `tier`, seeing the last error (a
    /// re-prompt) and the latest observation of the environment.
    pub fn plan(
        &self,
        request: &str,
        tier: u32,
        previous_error: Option<&str>,
        observation: Option<&Value>,
    ) -> Result<Plan, StepError> {
        *self.calls.lock().unwrap() += 1;
        let model = ["small-model", "large-model", "largest-model"][tier.min(2) as usize];
        let prompt = match previous_error {
            Some(error) => format!("{request} (previous attempt failed: {error})"),
            None => request.to_owned(),
        };
        match self.faults.lock().unwrap().pop_front() {
            Some(ModelFault::Outage) => {
                say("model", format!("{model}: 503 Service Unavailable"));
                Err(StepError::transient("model vendor returned 503 Service Unavailable"))
            }
            Some(ModelFault::Hallucinate) => {
                say("model", format!("{model}: planned a change to /etc/passwd for {prompt:?}"));
                Ok(Plan {
                    model: model.to_owned(),
                    summary: "rewrite the auth layer".to_owned(),
                    files: vec![FileChange { path: "/etc/passwd".to_owned(), content: "root::0:0".to_owned() }],
                })
            }
            None => {
                let schema = observation.and_then(|o| o.get("schema")).and_then(Value::as_str).unwrap_or("v1");
                let mut files = vec![
                    FileChange { path: "src/login.rs".to_owned(), content: "fn login() { /* fixed */ }".to_owned() },
                    FileChange { path: "tests/login.rs".to_owned(), content: "#[test] fn logs_in() {}".to_owned() },
                ];
                if schema != "v1" {
                    files.push(FileChange {
                        path: format!("migrations/{schema}_users_email.sql"),
                        content: "ALTER TABLE users RENAME mail TO email;".to_owned(),
                    });
                }
                say("model", format!("{model}: planned {} file(s) against schema {schema}", files.len()));
                Ok(Plan { model: model.to_owned(), summary: format!("fix the login bug (schema {schema})"), files })
            }
        }
    }
}

/// The state of the fake code host.
#[derive(Default, Debug)]
pub struct HostState {
    /// Branch name -> files on it.
    pub branches: BTreeMap<String, Vec<String>>,
    /// PR number -> (branch, state).
    pub prs: BTreeMap<u64, (String, PrState)>,
    /// Comment id -> text.
    pub comments: BTreeMap<u64, String>,
    /// Idempotency key -> the id it created.
    pub seen_keys: HashMap<String, u64>,
    pub next_id: u64,
    /// Rate-limit answers still to give.
    pub rate_limits: u32,
    /// Failures of `close_pr` still to give (the host is down for writes).
    pub close_failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrState {
    Open,
    Closed,
    Merged,
}

/// A code host (think GitHub) that treats idempotency keys as dedupe keys.
#[derive(Default)]
pub struct CodeHost {
    pub state: Mutex<HostState>,
}

impl CodeHost {
    fn dedupe(state: &mut HostState, key: &str) -> (u64, bool) {
        if let Some(id) = state.seen_keys.get(key) {
            return (*id, true);
        }
        state.next_id += 1;
        let id = state.next_id;
        state.seen_keys.insert(key.to_owned(), id);
        (id, false)
    }

    pub fn write_files(&self, key: &str, branch: &str, files: &[FileChange]) -> Result<(), StepError> {
        let mut state = self.state.lock().unwrap();
        let (_, replay) = Self::dedupe(&mut state, key);
        if replay {
            say("code host", format!("write to {branch}: key {} seen before, nothing written", short(key)));
            return Ok(());
        }
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        say("code host", format!("pushed {} file(s) to {branch} (key {})", paths.len(), short(key)));
        state.branches.insert(branch.to_owned(), paths);
        Ok(())
    }

    pub fn delete_branch(&self, branch: &str) -> Result<(), StepError> {
        let mut state = self.state.lock().unwrap();
        if state.branches.remove(branch).is_some() {
            say("code host", format!("deleted branch {branch}"));
        } else {
            say("code host", format!("branch {branch} already gone"));
        }
        Ok(())
    }

    pub fn open_pr(&self, key: &str, branch: &str) -> Result<u64, StepError> {
        let mut state = self.state.lock().unwrap();
        if state.rate_limits > 0 {
            state.rate_limits -= 1;
            say("code host", "429 Too Many Requests, retry after 1s");
            return Err(StepError::transient("code host rate limit (429)").retry_after(Duration::from_secs(1)));
        }
        let (number, replay) = Self::dedupe(&mut state, key);
        if replay {
            say("code host", format!("PR for key {} exists: returning #{number}", short(key)));
        } else {
            say("code host", format!("opened PR #{number} from {branch} (key {})", short(key)));
            state.prs.insert(number, (branch.to_owned(), PrState::Open));
        }
        Ok(number)
    }

    pub fn close_pr(&self, number: u64) -> Result<(), StepError> {
        let mut state = self.state.lock().unwrap();
        if state.close_failures > 0 {
            state.close_failures -= 1;
            say("code host", format!("closing PR #{number}: 502 Bad Gateway"));
            return Err(StepError::transient("code host returned 502 Bad Gateway"));
        }
        if let Some(pr) = state.prs.get_mut(&number) {
            pr.1 = PrState::Closed;
        }
        say("code host", format!("closed PR #{number}"));
        Ok(())
    }

    pub fn comment(&self, key: &str, issue: u64, text: &str) -> Result<u64, StepError> {
        let mut state = self.state.lock().unwrap();
        let (id, replay) = Self::dedupe(&mut state, key);
        if !replay {
            say("code host", format!("commented on issue #{issue}: {text:?}"));
            state.comments.insert(id, text.to_owned());
        }
        Ok(id)
    }

    pub fn delete_comment(&self, id: u64) -> Result<(), StepError> {
        self.state.lock().unwrap().comments.remove(&id);
        say("code host", format!("deleted comment {id}"));
        Ok(())
    }

    pub fn merge(&self, key: &str, number: u64) -> Result<String, StepError> {
        let mut state = self.state.lock().unwrap();
        let (id, _) = Self::dedupe(&mut state, key);
        if let Some(pr) = state.prs.get_mut(&number) {
            pr.1 = PrState::Merged;
        }
        let sha = format!("{:07x}", 0xabc0000 + id);
        say("code host", format!("merged PR #{number} as {sha}"));
        Ok(sha)
    }
}

/// How the next CI runs go.
#[derive(Clone, Copy, Debug)]
pub enum CiResult {
    /// The database schema was migrated under the agent: its plan is stale.
    SchemaMoved,
    /// The tests fail: the change is wrong.
    Red,
}

/// A CI service whose next results are scripted; green when nothing is scripted.
#[derive(Default)]
pub struct Ci {
    pub results: Mutex<VecDeque<CiResult>>,
}

impl Ci {
    pub fn with(results: impl IntoIterator<Item = CiResult>) -> Self {
        Ci { results: Mutex::new(results.into_iter().collect()) }
    }

    pub fn run(&self, pr: u64) -> Result<u32, StepError> {
        match self.results.lock().unwrap().pop_front() {
            Some(CiResult::SchemaMoved) => {
                say("ci", format!("PR #{pr}: column users.mail does not exist (schema is now v2)"));
                Err(StepError::environmental("the users table was migrated to schema v2 while the agent worked")
                    .restart_from("plan")
                    .with_observation(serde_json::json!({ "schema": "v2" })))
            }
            Some(CiResult::Red) => {
                say("ci", format!("PR #{pr}: 3 of 41 tests failed"));
                Err(StepError::logical("3 of 41 tests failed: login_rejects_expired_tokens, ..."))
            }
            None => {
                say("ci", format!("PR #{pr}: 41 tests passed"));
                Ok(41)
            }
        }
    }
}

/// A chat channel; deduplicates announcements on the idempotency key.
#[derive(Default)]
pub struct Chat {
    pub posted: Mutex<HashMap<String, String>>,
}

impl Chat {
    pub fn announce(&self, key: &str, message: &str) -> Result<(), StepError> {
        let mut posted = self.posted.lock().unwrap();
        if posted.contains_key(key) {
            say("chat", "announcement already posted");
        } else {
            say("chat", format!("#releases: {message}"));
            posted.insert(key.to_owned(), message.to_owned());
        }
        Ok(())
    }
}
