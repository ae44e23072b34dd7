//! Side effects inside steps (`cx.effect`): journaled before the step goes on, returned from
//! the journal instead of run again, keyed on their input, and undone by the step's
//! compensation even when the step failed half-way (DESIGN.md §5).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use saga_runtime::journal::Event;
use saga_runtime::prelude::*;
use saga_runtime::{CompensationReason, FailureKind};
use serde::{Deserialize, Serialize};

/// A code host that records every write and delete, and refuses some paths.
#[derive(Default)]
struct Host {
    files: Mutex<BTreeMap<String, String>>,
    /// Every time a write closure ran: (path, content, idempotency key).
    writes: Mutex<Vec<(String, String, String)>>,
    deletes: Mutex<Vec<String>>,
}

impl Host {
    fn write(&self, path: &str, content: &str, key: &str) -> Result<String, StepError> {
        self.writes.lock().unwrap().push((path.to_owned(), content.to_owned(), key.to_owned()));
        if path.starts_with('/') {
            return Err(StepError::logical(format!("{path} is outside the repository")));
        }
        self.files.lock().unwrap().insert(path.to_owned(), content.to_owned());
        Ok(path.to_owned())
    }
    fn delete(&self, path: &str) {
        self.deletes.lock().unwrap().push(path.to_owned());
        self.files.lock().unwrap().remove(path);
    }
    fn files(&self) -> Vec<String> {
        self.files.lock().unwrap().keys().cloned().collect()
    }
    fn write_count(&self) -> usize {
        self.writes.lock().unwrap().len()
    }
}

fn host(cx: &StepContext) -> &Arc<Host> {
    cx.resource::<Arc<Host>>()
}

/// Writes each file as its own effect, then (per the flags) fails or returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WriteFiles {
    files: Vec<String>,
    /// Fail transiently after the effects, on the first attempt.
    flaky_after_writes: bool,
    /// Put the attempt number in each file's content (so inputs change between attempts).
    content_per_attempt: bool,
    /// The model tier from which the validator accepts the output.
    valid_from_tier: u32,
}

impl WriteFiles {
    fn new(files: &[&str]) -> Self {
        WriteFiles {
            files: files.iter().map(|f| (*f).to_owned()).collect(),
            flaky_after_writes: false,
            content_per_attempt: false,
            valid_from_tier: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Written {
    paths: Vec<String>,
    tier: u32,
}

#[saga]
impl WriteFiles {
    #[step(compensate = delete_files, validate = right_tier)]
    async fn write_files(&self, cx: &StepContext) -> StepResult<Written> {
        let mut paths = Vec::new();
        for path in &self.files {
            let content = if self.content_per_attempt { format!("v{}", cx.attempt()) } else { "v1".to_owned() };
            let written = cx
                .effect_with(&format!("write {path}"), &(path, &content), |key| {
                    let content = &content;
                    async move { host(cx).write(path, content, &key) }
                })
                .await?;
            paths.push(written);
        }
        if self.flaky_after_writes && cx.attempt() == 1 {
            return Err(StepError::transient("the code host timed out after the writes"));
        }
        Ok(Written { paths, tier: cx.model_tier() })
    }

    /// Undoes exactly the effects that landed: from a completed or rejected output, or from
    /// an attempt that failed half-way (`None`).
    async fn delete_files(&self, cx: &StepContext, _written: Option<&Written>) -> StepResult<()> {
        for effect in cx.effects() {
            let path: String = effect.result().map_err(StepError::logical)?;
            host(cx).delete(&path);
        }
        Ok(())
    }

    fn right_tier(&self, written: &Written) -> Result<(), String> {
        if written.tier >= self.valid_from_tier { Ok(()) } else { Err(format!("tier {} wrote nonsense", written.tier)) }
    }

    #[step(idempotent)]
    async fn summarize(&self, cx: &StepContext, write_files: &Written) -> StepResult<usize> {
        cx.record_llm(
            "summarize with key sk-proj-AbCdEfGhIjKlMnOpQrSt0123 for https://bot:hunter2@git.example.com",
            &format!("{} files; Authorization: Bearer abcdefghijklmnop", write_files.paths.len()),
        );
        Ok(write_files.paths.len())
    }
}

fn runtime(host: &Arc<Host>) -> Runtime {
    Runtime::builder()
        .policy(Policy { backoff: Backoff { jitter: Jitter::None, ..Backoff::default() }, ..Policy::default() })
        .resource(host.clone())
        .build()
}

fn kinds(journal: &[saga_runtime::journal::Record]) -> Vec<&'static str> {
    journal.iter().map(|r| r.event.kind()).collect()
}

/// Each effect's result is journaled before the step goes on; when the step then fails and is
/// retried, the stored results are returned and the effects do not run again.
#[tokio::test(start_paused = true)]
async fn effects_are_journaled_and_not_run_again_on_retry() {
    let host = Arc::new(Host::default());
    let runtime = runtime(&host);
    let saga = WriteFiles { flaky_after_writes: true, ..WriteFiles::new(&["a.rs", "b.rs"]) };
    let outcome = runtime.run(saga).await.unwrap();

    assert!(outcome.is_completed());
    assert_eq!(host.write_count(), 2, "each effect ran once");
    assert_eq!(host.files(), ["a.rs", "b.rs"]);
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    assert_eq!(
        kinds(&journal)[..8],
        [
            "started",
            "attempt_started",
            "effect_landed",
            "effect_landed",
            "step_failed",
            "attempt_started",
            "step_completed",
            "attempt_started"
        ]
    );
    let keys: Vec<String> = host.writes.lock().unwrap().iter().map(|w| w.2.clone()).collect();
    assert_ne!(keys[0], keys[1], "each effect has its own key");
    assert_eq!(keys[0].len(), 64);
}

/// An effect keyed on its input runs again when the input changes, and returns the stored
/// result when it does not; every landed effect stays visible to the compensation.
#[tokio::test(start_paused = true)]
async fn an_effect_with_a_new_input_runs_and_the_old_one_stays_on_record() {
    let host = Arc::new(Host::default());
    let runtime = runtime(&host);
    let saga = WriteFiles { flaky_after_writes: true, content_per_attempt: true, ..WriteFiles::new(&["a.rs"]) };
    let outcome = runtime.run(saga).await.unwrap();
    assert!(outcome.is_completed());
    let writes = host.writes.lock().unwrap().clone();
    assert_eq!(writes.iter().map(|w| w.1.as_str()).collect::<Vec<_>>(), ["v1", "v2"]);
    assert_ne!(writes[0].2, writes[1].2, "a new input, a new key");
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let landed = journal.iter().filter(|r| matches!(r.event, Event::EffectLanded { .. })).count();
    assert_eq!(landed, 2);
}

/// Half-success: the step lands three of four files, then the fourth is refused (a logical
/// failure). Before each re-prompt the compensation undoes the three that landed (it takes
/// `Option<&T>` and reads `cx.effects()`), and when the ladder gives up no file is left.
#[tokio::test(start_paused = true)]
async fn a_half_done_step_is_undone_before_each_reprompt_and_leaves_nothing_behind() {
    let host = Arc::new(Host::default());
    let runtime = runtime(&host);
    let outcome = runtime.run(WriteFiles::new(&["a.rs", "b.rs", "c.rs", "/etc/passwd"])).await.unwrap();

    let Outcome::Compensated { failure, report, .. } = &outcome else {
        panic!("expected Compensated, got {outcome:?}")
    };
    assert_eq!(failure.message, "/etc/passwd is outside the repository");
    assert_eq!(report.levels(), [Level::Reprompt, Level::Reprompt, Level::SwitchModel, Level::Compensate]);
    let reasons: Vec<CompensationReason> = report.compensations.iter().map(|c| c.reason).collect();
    assert_eq!(
        reasons,
        [
            CompensationReason::HalfDone,
            CompensationReason::HalfDone,
            CompensationReason::HalfDone,
            CompensationReason::RollBack
        ]
    );
    assert!(host.files().is_empty(), "no file is left: {:?}", host.files());
    assert_eq!(host.write_count(), 16, "four attempts, each writing four files (the fourth refused)");
    let deletes = host.deletes.lock().unwrap().clone();
    assert_eq!(deletes.len(), 12, "each compensation deleted the three files that landed");
    assert_eq!(&deletes[..3], ["a.rs", "b.rs", "c.rs"]);
    let keys: std::collections::HashSet<String> = host.writes.lock().unwrap().iter().map(|w| w.2.clone()).collect();
    assert_eq!(keys.len(), 16, "after each compensation the effects get new keys");
}

/// A rejected output is compensated with the output and the effects behind it; the last,
/// accepted attempt's files are the only ones left.
#[tokio::test(start_paused = true)]
async fn a_rejected_output_is_undone_with_its_effects() {
    let host = Arc::new(Host::default());
    let runtime = runtime(&host);
    let saga = WriteFiles { valid_from_tier: 1, ..WriteFiles::new(&["a.rs", "b.rs"]) };
    let outcome = runtime.run(saga).await.unwrap();
    assert!(outcome.is_completed(), "{outcome:?}");
    assert_eq!(outcome.report().levels(), [Level::Reprompt, Level::Reprompt, Level::SwitchModel]);
    assert!(outcome.report().escalations.iter().all(|e| e.error.starts_with("validator `right_tier` rejected")));
    let reasons: Vec<CompensationReason> = outcome.report().compensations.iter().map(|c| c.reason).collect();
    assert_eq!(reasons, [CompensationReason::Rejected; 3]);
    assert_eq!(host.files(), ["a.rs", "b.rs"]);
    assert_eq!(host.deletes.lock().unwrap().len(), 6);
    assert_eq!(outcome.output().unwrap().write_files.tier, 1);
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let rejected = journal
        .iter()
        .filter(|r| matches!(&r.event, Event::StepFailed { failure, .. } if failure.kind == FailureKind::Rejected))
        .count();
    assert_eq!(rejected, 3);
}

/// Prompts and responses recorded with `cx.record_llm` are kept in the journal with
/// credentials scrubbed.
#[tokio::test(start_paused = true)]
async fn recorded_model_exchanges_are_scrubbed_of_credentials() {
    let host = Arc::new(Host::default());
    let runtime = runtime(&host);
    let outcome = runtime.run(WriteFiles::new(&["a.rs"])).await.unwrap();
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let (prompt, response) = journal
        .iter()
        .find_map(|r| match &r.event {
            Event::LlmExchange { prompt, response, .. } => Some((prompt.clone(), response.clone())),
            _ => None,
        })
        .expect("the exchange is journaled");
    assert_eq!(prompt, "summarize with key [redacted] for https://bot:[redacted]@git.example.com");
    assert_eq!(response, "1 files; Authorization: Bearer [redacted]");
}

/// Posts a comment as an effect without input; the first attempt fails logically after the
/// effect (a wrong answer), the second transiently after it (a network blip).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Comment {
    twice: bool,
}

#[saga]
impl Comment {
    #[step(idempotent)]
    async fn post(&self, cx: &StepContext) -> StepResult<String> {
        let attempt = cx.attempt();
        let posted: String = cx
            .effect("post comment", async move {
                host(cx).write(&format!("comment-{attempt}"), "text", "-")?;
                Ok::<_, StepError>(format!("comment-{attempt}"))
            })
            .await?;
        if self.twice {
            cx.effect("post comment", async { Ok::<_, StepError>(String::new()) }).await?;
        }
        match attempt {
            1 => Err(StepError::logical("the comment contradicts the issue")),
            2 => Err(StepError::transient("timeout after posting")),
            _ => Ok(posted),
        }
    }
}

/// An effect without an input belongs to one answer of the step: a re-prompt (a new answer)
/// runs it anew, a transient retry (the same answer again) gets the stored result.
#[tokio::test(start_paused = true)]
async fn a_plain_effect_runs_anew_for_a_new_answer_and_is_reused_on_a_retry() {
    let host = Arc::new(Host::default());
    let runtime = runtime(&host);
    let outcome = runtime.run(Comment { twice: false }).await.unwrap();
    assert_eq!(outcome.report().levels(), [Level::Reprompt, Level::Retry]);
    assert_eq!(host.files(), ["comment-1", "comment-2"], "the re-prompt posted its own comment, the retry none");
    assert_eq!(outcome.output().unwrap().post, "comment-2", "the retry returned the stored result of attempt 2");
    let journal = runtime.journal(outcome.saga_id()).await.unwrap();
    let keys: Vec<String> = journal
        .iter()
        .filter_map(|r| match &r.event {
            Event::EffectLanded { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

/// Using one effect name twice in an attempt is a logical failure, not a silent reuse of the
/// first result.
#[tokio::test(start_paused = true)]
async fn an_effect_name_used_twice_in_one_attempt_is_a_logical_failure() {
    let host = Arc::new(Host::default());
    let outcome = runtime(&host).run(Comment { twice: true }).await.unwrap();
    let first = &outcome.report().escalations[0];
    assert_eq!(first.class, FailureClass::Logical);
    assert_eq!(
        first.error,
        "effect `post comment` ran twice in one attempt with the same input: give each effect its own name, or key it on its input with `effect_with`"
    );
}

/// A step that talks to a model for a long time, with a gate the test opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LongThought;

#[saga]
impl LongThought {
    #[step(idempotent)]
    async fn think(&self, cx: &StepContext) -> StepResult<String> {
        cx.record_llm("Plan the migration", "Step 1: back up the database");
        if cx.attempt() == 1 {
            std::future::pending::<()>().await;
        }
        Ok("done".into())
    }
}

/// A model exchange is journaled when it is recorded, not with the step's next write: a
/// process killed while the step still runs keeps the prompt and the response the seed says to
/// keep for post-incident analysis.
#[tokio::test(start_paused = true)]
async fn a_model_exchange_is_durable_before_its_step_ends() {
    let store = MemoryStore::new();
    let runtime = Runtime::builder().store(store.clone()).build();
    let id = SagaId::new("thinker");
    let cut =
        tokio::time::timeout(std::time::Duration::from_secs(60), runtime.run_with_id(id.clone(), LongThought)).await;
    assert!(cut.is_err(), "the step is still running when the process \"dies\"");
    let kinds: Vec<String> =
        store.load(&id).await.unwrap().unwrap().records.iter().map(|r| r.kind.to_string()).collect();
    assert_eq!(kinds, ["started", "attempt_started", "llm_exchange"], "the exchange is in the store");

    let fresh = Runtime::builder().store(store.clone()).build();
    let outcome = fresh.run_with_id(id.clone(), LongThought).await.unwrap();
    assert!(outcome.is_completed());
    let exchanges = fresh
        .journal(&id)
        .await
        .unwrap()
        .iter()
        .filter(|r| matches!(&r.event, Event::LlmExchange { prompt, .. } if prompt == "Plan the migration"))
        .count();
    assert_eq!(exchanges, 2, "one per attempt: the interrupted one was kept");
}
