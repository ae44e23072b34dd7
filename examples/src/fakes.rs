//! In-process fakes of what a code-change agent talks to: a model vendor that fails in
//! scripted ways, a code host that dedupes on idempotency keys, a CI service and a chat.
//! Their state (the "world") is kept in a JSON file next to the saga database, so that a
//! resumed run finds the pull requests and files the crashed run left, and so that several
//! worker processes share one world (each change is made under a lock on the file). Each fake
//! prints what it does, so the timeline shows real side effects next to the ladder.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{CodeChangeStep, FileChange, Plan};

/// What this process calls itself in the output (a worker's name), if anything.
static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names this process in every line it prints (`[w1]`).
pub fn name_process(name: &str) {
    let _ = PROCESS.set(format!("[{name}] "));
}

/// The prefix of this process's lines.
pub fn process() -> &'static str {
    PROCESS.get().map_or("", String::as_str)
}

/// Prints a side effect of a fake, indented under the timeline.
pub fn say(who: &str, what: impl std::fmt::Display) {
    println!("           {}[{who}] {what}", process());
}

fn short(key: &str) -> &str {
    &key[..8]
}

/// How the next model call goes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum ModelFault {
    /// The vendor answers 503.
    Outage,
    /// The model returns a plan that touches files outside the repository.
    Hallucinate,
}

/// How the next CI run goes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub enum CiResult {
    /// The database schema was migrated under the agent: its plan is stale.
    SchemaMoved,
    /// The tests fail whatever the code says (the change is wrong in a way the model cannot
    /// fix).
    Red,
}

/// What a CI run found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiRun {
    pub passed: u32,
    /// The names of the tests that failed.
    pub failed: Vec<String>,
}

/// The token check as the model first writes it in the `tests-fail` scenario: inverted.
const BUGGY_TOKEN_CHECK: &str = "fn expired(at: u64) -> bool { at > now() }";
/// The token check that passes the tests.
const TOKEN_CHECK: &str = "fn expired(at: u64) -> bool { at <= now() }";
/// The tests that catch the inverted token check.
const TOKEN_TESTS: [&str; 2] = ["login_rejects_expired_tokens", "token_expiry_is_inclusive"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrState {
    Open,
    Closed,
    Merged,
}

/// Everything the fakes remember.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorldState {
    /// The scenario whose script is loaded.
    pub scenario: String,
    pub model_faults: VecDeque<ModelFault>,
    pub model_calls: u32,
    /// Put a workflow file in every plan (the code host refuses to push it).
    pub plan_workflow_file: bool,
    /// Branch -> path -> content.
    pub branches: BTreeMap<String, BTreeMap<String, String>>,
    /// PR number -> (branch, state).
    pub prs: BTreeMap<u64, (String, PrState)>,
    /// Comment id -> text.
    pub comments: BTreeMap<u64, String>,
    /// Idempotency key -> the id it created (the host's dedupe table).
    pub seen_keys: BTreeMap<String, u64>,
    pub next_id: u64,
    /// Rate-limit answers still to give.
    pub rate_limits: u32,
    /// Failures of `close_pr` still to give (the host is down for writes).
    pub close_failures: u32,
    /// Closes that succeed before the host goes down for writes (and `close_failures` start).
    #[serde(default)]
    pub closes_before_outage: u32,
    /// The model writes the token check inverted until it sees the failing tests.
    #[serde(default)]
    pub buggy_code: bool,
    pub ci_results: VecDeque<CiResult>,
    /// Idempotency key -> announcement.
    pub announcements: BTreeMap<String, String>,
    /// Calls the host answered from its dedupe table: an effect's code ran again (after a
    /// crash, under the same key) and nothing happened twice.
    #[serde(default)]
    pub replays: u32,
    /// How long each step waits on the services (to watch workers at work), in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// The host's delete tool changed semantics: deleting a file under `tests/` answers
    /// success and keeps it (the seed's "compensations rot").
    #[serde(default)]
    pub rotted_delete: bool,
}

/// The fakes, sharing one persisted state.
pub struct World {
    state: Mutex<WorldState>,
    path: Option<PathBuf>,
}

impl World {
    /// The world kept in `path` (a JSON file), or in memory.
    pub fn open(path: Option<&Path>) -> World {
        let state = path
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        World { state: Mutex::new(state), path: path.map(Path::to_owned) }
    }

    /// Reads or changes the state; a change is written to the file before returning, as a
    /// real service's write would be durable. With a file, the change is made under an
    /// exclusive lock on `<file>.lock` on the state read from the file, so processes sharing
    /// the world see each other's changes.
    pub fn with<R>(&self, change: impl FnOnce(&mut WorldState) -> R) -> R {
        let mut state = self.state.lock().unwrap();
        let Some(path) = &self.path else { return change(&mut state) };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))
            .expect("the world's lock file");
        lock.lock().expect("locking the world");
        if let Some(current) = std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()) {
            *state = current;
        }
        let result = change(&mut state);
        let temporary = path.with_extension(format!("json.{}.tmp", std::process::id()));
        std::fs::write(&temporary, serde_json::to_vec_pretty(&*state).unwrap()).unwrap();
        std::fs::rename(&temporary, path).unwrap();
        result
    }

    /// Waits as long as a call to the services takes in this world.
    pub async fn latency(&self) {
        let wait = self.with(|state| state.latency_ms);
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    fn dedupe(state: &mut WorldState, key: &str) -> (u64, bool) {
        if let Some(id) = state.seen_keys.get(key) {
            state.replays += 1;
            return (*id, true);
        }
        state.next_id += 1;
        let id = state.next_id;
        state.seen_keys.insert(key.to_owned(), id);
        (id, false)
    }

    // ------------------------------------------------------------------ the model vendor

    /// Plans the change for `request` on model tier `tier`, seeing the last error (a
    /// re-prompt) and the latest observation of the environment.
    pub fn plan(
        &self,
        request: &str,
        tier: u32,
        previous_error: Option<&str>,
        observation: Option<&Value>,
    ) -> Result<Plan, StepError> {
        let model = ["small-model", "large-model", "largest-model"][tier.min(2) as usize];
        let prompt = match previous_error {
            Some(error) => format!("{request} (previous attempt failed: {error})"),
            None => request.to_owned(),
        };
        self.with(|state| {
            state.model_calls += 1;
            match state.model_faults.pop_front() {
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
                        FileChange {
                            path: "src/login.rs".to_owned(),
                            content: "fn login() { /* fixed */ }".to_owned(),
                        },
                        FileChange {
                            path: "src/token.rs".to_owned(),
                            content: if state.buggy_code { BUGGY_TOKEN_CHECK } else { TOKEN_CHECK }.to_owned(),
                        },
                        FileChange { path: "tests/login.rs".to_owned(), content: "#[test] fn logs_in() {}".to_owned() },
                    ];
                    if schema != "v1" {
                        files.push(FileChange {
                            path: format!("migrations/{schema}_users_email.sql"),
                            content: "ALTER TABLE users RENAME mail TO email;".to_owned(),
                        });
                    }
                    if state.plan_workflow_file {
                        files.push(FileChange {
                            path: ".github/workflows/ci.yml".to_owned(),
                            content: "on: push".to_owned(),
                        });
                    }
                    say("model", format!("{model}: planned {} file(s) against schema {schema}", files.len()));
                    Ok(Plan { model: model.to_owned(), summary: format!("fix the login bug (schema {schema})"), files })
                }
            }
        })
    }

    /// Rewrites the planned files on model tier `tier`, with a failure that a later step found
    /// in context (a re-prompt of `write_files` that `run_tests` blamed). With the names of the
    /// failing token tests in front of it, the model fixes the token check.
    pub fn rewrite(&self, files: &[FileChange], tier: u32, found: &str) -> Vec<FileChange> {
        let model = ["small-model", "large-model", "largest-model"][tier.min(2) as usize];
        self.with(|state| {
            state.model_calls += 1;
            let sees_the_tests = TOKEN_TESTS.iter().any(|test| found.contains(test));
            let mut fixed = Vec::new();
            let files: Vec<FileChange> = files
                .iter()
                .map(|file| {
                    let mut file = file.clone();
                    if sees_the_tests && file.content == BUGGY_TOKEN_CHECK {
                        file.content = TOKEN_CHECK.to_owned();
                        fixed.push(file.path.clone());
                    }
                    file
                })
                .collect();
            match fixed.as_slice() {
                [] => say("model", format!("{model}: rewrote {} file(s) and found nothing to change", files.len())),
                _ => say("model", format!("{model}: fixed {} given the failing tests", fixed.join(", "))),
            }
            files
        })
    }

    // ------------------------------------------------------------------ the code host

    /// Pushes one file to `branch`; refuses workflow files (they need the `workflow` scope).
    pub fn write_file(&self, key: &str, branch: &str, file: &FileChange) -> Result<String, StepError> {
        self.with(|state| {
            if file.path.starts_with(".github/workflows/") {
                say("code host", format!("refused {}: pushing workflow files needs the `workflow` scope", file.path));
                return Err(StepError::logical(format!(
                    "the code host refused {}: the token lacks the `workflow` scope",
                    file.path
                )));
            }
            let (_, replay) = Self::dedupe(state, key);
            if replay {
                say("code host", format!("{} on {branch}: key {} seen before, nothing written", file.path, short(key)));
            } else {
                say("code host", format!("pushed {} to {branch} (key {})", file.path, short(key)));
                state.branches.entry(branch.to_owned()).or_default().insert(file.path.clone(), file.content.clone());
            }
            Ok(file.path.clone())
        })
    }

    pub fn delete_file(&self, branch: &str, path: &str) {
        self.with(|state| {
            if state.rotted_delete && path.starts_with("tests/") {
                say("code host", format!("deleted {path} from {branch}"));
                return;
            }
            let removed = state.branches.get_mut(branch).and_then(|files| files.remove(path)).is_some();
            if state.branches.get(branch).is_some_and(BTreeMap::is_empty) {
                state.branches.remove(branch);
            }
            say(
                "code host",
                if removed { format!("deleted {path} from {branch}") } else { format!("{path} already gone") },
            );
        })
    }

    /// Every branch, with the files on it.
    pub fn branches(&self) -> Vec<(String, Vec<String>)> {
        self.with(|state| {
            state.branches.iter().map(|(b, files)| (b.clone(), files.keys().cloned().collect())).collect()
        })
    }

    /// Deletes a whole branch (what a cleanup job does; `key` makes it idempotent).
    pub fn delete_branch(&self, key: &str, branch: &str) {
        self.with(|state| {
            let (_, replay) = Self::dedupe(state, key);
            match state.branches.remove(branch) {
                Some(files) => say(
                    "code host",
                    format!("deleted branch {branch} and its {} file(s) (key {})", files.len(), short(key)),
                ),
                None if replay => say("code host", format!("branch {branch}: key {} seen before", short(key))),
                None => say("code host", format!("branch {branch} is already gone")),
            }
        })
    }

    pub fn open_pr(&self, key: &str, branch: &str) -> Result<u64, StepError> {
        self.with(|state| {
            if state.rate_limits > 0 {
                state.rate_limits -= 1;
                say("code host", "429 Too Many Requests, retry after 1s");
                return Err(StepError::transient("code host rate limit (429)").retry_after(Duration::from_secs(1)));
            }
            let (number, replay) = Self::dedupe(state, key);
            if replay {
                say("code host", format!("PR for key {} exists: returning #{number}", short(key)));
            } else {
                say("code host", format!("opened PR #{number} from {branch} (key {})", short(key)));
                state.prs.insert(number, (branch.to_owned(), PrState::Open));
            }
            Ok(number)
        })
    }

    pub fn close_pr(&self, number: u64) -> Result<(), StepError> {
        self.with(|state| {
            if state.closes_before_outage > 0 {
                state.closes_before_outage -= 1;
            } else if state.close_failures > 0 {
                state.close_failures -= 1;
                say("code host", format!("closing PR #{number}: 502 Bad Gateway"));
                return Err(StepError::transient("code host returned 502 Bad Gateway"));
            }
            if let Some(pr) = state.prs.get_mut(&number) {
                pr.1 = PrState::Closed;
            }
            say("code host", format!("closed PR #{number}"));
            Ok(())
        })
    }

    pub fn comment(&self, key: &str, issue: u64, text: &str) -> Result<u64, StepError> {
        self.with(|state| {
            let (id, replay) = Self::dedupe(state, key);
            if !replay {
                say("code host", format!("commented on issue #{issue}: {text:?}"));
                state.comments.insert(id, text.to_owned());
            }
            Ok(id)
        })
    }

    pub fn delete_comment(&self, id: u64) -> Result<(), StepError> {
        self.with(|state| state.comments.remove(&id));
        say("code host", format!("deleted comment {id}"));
        Ok(())
    }

    pub fn merge(&self, key: &str, number: u64) -> Result<String, StepError> {
        self.with(|state| {
            let (id, _) = Self::dedupe(state, key);
            if let Some(pr) = state.prs.get_mut(&number) {
                pr.1 = PrState::Merged;
            }
            let sha = format!("{:07x}", 0xabc0000 + id);
            say("code host", format!("merged PR #{number} as {sha}"));
            Ok(sha)
        })
    }

    // ------------------------------------------------------------------ CI and chat

    /// Runs the tests of PR `pr` on the code of its branch (or as the scenario scripts it).
    pub fn run_ci(&self, pr: u64) -> Result<CiRun, StepError> {
        self.with(|state| {
            let failed: Vec<String> = match state.ci_results.pop_front() {
                Some(CiResult::SchemaMoved) => {
                    say("ci", format!("PR #{pr}: column users.mail does not exist (schema is now v2)"));
                    return Err(StepError::environmental(
                        "the users table was migrated to schema v2 while the agent worked",
                    )
                    .restart_from(CodeChangeStep::plan)
                    .with_observation(serde_json::json!({ "schema": "v2" })));
                }
                Some(CiResult::Red) => {
                    ["login_rejects_expired_tokens", "session_survives_restart", "logout_clears_cookie"]
                        .map(str::to_owned)
                        .to_vec()
                }
                None => {
                    let branch = state.prs.get(&pr).and_then(|(branch, _)| state.branches.get(branch));
                    let token_check = branch.and_then(|files| files.get("src/token.rs"));
                    if token_check.is_some_and(|code| code == BUGGY_TOKEN_CHECK) {
                        TOKEN_TESTS.map(str::to_owned).to_vec()
                    } else {
                        Vec::new()
                    }
                }
            };
            let passed = 41 - failed.len() as u32;
            if failed.is_empty() {
                say("ci", format!("PR #{pr}: {passed} tests passed"));
            } else {
                say("ci", format!("PR #{pr}: {} of 41 tests failed: {}", failed.len(), failed.join(", ")));
            }
            Ok(CiRun { passed, failed })
        })
    }

    pub fn announce(&self, key: &str, message: &str) -> Result<(), StepError> {
        self.with(|state| {
            if state.announcements.contains_key(key) {
                state.replays += 1;
                say("chat", "announcement already posted");
            } else {
                say("chat", format!("#releases: {message}"));
                state.announcements.insert(key.to_owned(), message.to_owned());
            }
            Ok(())
        })
    }
}
