//! A scripted saga shared by the integration tests: every step and compensation writes what
//! it did to a [`Log`], and a [`Script`] decides, call by call, whether it fails and how.
#![allow(dead_code)] // each test file uses a different part of this harness

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// What happened, in order: `"open_pr#1"` for attempt 1 of `open_pr`, `"undo open_pr#1"` for
/// attempt 1 of its compensation.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// How one scripted call goes.
#[derive(Clone, Debug)]
pub enum Plan {
    Ok,
    Fail(StepError),
    Panic,
    Hang,
    /// Return an output that the step's validator rejects.
    Wrong,
}

/// Per step (or `"undo <step>"`), the plans of its next calls; a call with no plan left succeeds.
#[derive(Clone, Default)]
pub struct Script(Arc<Mutex<HashMap<String, VecDeque<Plan>>>>);

impl Script {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn then(self, key: &str, plans: impl IntoIterator<Item = Plan>) -> Self {
        self.0.lock().unwrap().entry(key.to_owned()).or_default().extend(plans);
        self
    }
    pub fn next(&self, key: &str) -> Plan {
        self.0.lock().unwrap().get_mut(key).and_then(|q| q.pop_front()).unwrap_or(Plan::Ok)
    }
}

pub fn transient(n: usize) -> Vec<Plan> {
    vec![Plan::Fail(StepError::transient("503 from the vendor")); n]
}
pub fn logical(n: usize) -> Vec<Plan> {
    vec![Plan::Fail(StepError::logical("the model called a tool that does not exist")); n]
}

/// How a scripted call ended, as the step itself saw it.
#[derive(Clone, Debug)]
pub enum CallResult {
    Ok,
    Wrong,
    Failed(StepError),
    Panicked,
    Hung,
}

/// One call of a step (or of a compensation, `undo == true`).
#[derive(Clone, Debug)]
pub struct Call {
    pub name: String,
    pub undo: bool,
    pub attempt: u32,
    pub tier: u32,
    pub previous_error: Option<String>,
    /// The step that found `previous_error` (another step when it blamed this one).
    pub previous_error_step: Option<String>,
    pub result: CallResult,
}

/// What one call's context said: `(step, previous_error message, model tier, observation)`.
pub type Seen = (String, Option<String>, u32, Option<serde_json::Value>);

/// Everything the scripted steps need, registered as one resource.
#[derive(Clone, Default)]
pub struct Harness {
    pub log: Log,
    /// Every call and how it ended: the independent record the property test checks.
    pub calls: Arc<Mutex<Vec<Call>>>,
    pub script: Script,
    /// Every idempotency key and the call that used it: `(entry, key)`.
    pub keys: Arc<Mutex<Vec<(String, String)>>>,
    /// What each call's context said.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Harness {
    pub fn with_script(script: Script) -> Self {
        Harness { script, ..Self::default() }
    }

    /// Runs one scripted call: logs it, records what the context says, and applies the plan.
    pub async fn call(&self, cx: &StepContext, name: &str) -> Result<bool, StepError> {
        let entry = match cx.compensation() {
            Some(_) => format!("undo {name}#{}", cx.attempt()),
            None => format!("{name}#{}", cx.attempt()),
        };
        self.log.push(entry.clone());
        self.keys.lock().unwrap().push((entry, cx.idempotency_key().to_owned()));
        self.seen.lock().unwrap().push((
            name.to_owned(),
            cx.previous_error().map(|f| f.message.clone()),
            cx.model_tier(),
            cx.observation().cloned(),
        ));
        let key = match cx.compensation() {
            Some(_) => format!("undo {name}"),
            None => name.to_owned(),
        };
        let plan = self.script.next(&key);
        let result = match &plan {
            Plan::Ok => CallResult::Ok,
            Plan::Wrong => CallResult::Wrong,
            Plan::Fail(error) => CallResult::Failed(error.clone()),
            Plan::Panic => CallResult::Panicked,
            Plan::Hang => CallResult::Hung,
        };
        self.calls.lock().unwrap().push(Call {
            name: name.to_owned(),
            undo: cx.compensation().is_some(),
            attempt: cx.attempt(),
            tier: cx.model_tier(),
            previous_error: cx.previous_error().map(|f| f.message.clone()),
            previous_error_step: cx.previous_error().map(|f| f.step.clone()),
            result,
        });
        match plan {
            Plan::Ok => Ok(true),
            Plan::Wrong => Ok(false),
            Plan::Fail(error) => Err(error),
            Plan::Panic => panic!("scripted panic in {name}"),
            Plan::Hang => std::future::pending().await,
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.entries()
    }

    pub fn key_of(&self, entry: &str) -> String {
        let keys = self.keys.lock().unwrap();
        keys.iter().find(|(e, _)| e == entry).unwrap_or_else(|| panic!("no call {entry}")).1.clone()
    }
}

/// The saga of DESIGN.md §3, scripted: open a PR, run the tests, comment, merge, announce.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleasePr {
    pub repo: String,
    pub branch: String,
}

impl ReleasePr {
    pub fn new() -> Self {
        ReleasePr { repo: "acme/api".into(), branch: "fix-login".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrId(pub u64);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TestReport {
    pub passed: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommentId(pub String);

#[saga]
impl ReleasePr {
    #[step(compensate = close_pr)]
    async fn open_pr(&self, cx: &StepContext) -> StepResult<PrId> {
        cx.resource::<Harness>().call(cx, "open_pr").await?;
        Ok(PrId(42))
    }
    async fn close_pr(&self, cx: &StepContext, _pr: &PrId) -> StepResult<()> {
        cx.resource::<Harness>().call(cx, "open_pr").await?;
        Ok(())
    }

    #[step(idempotent)]
    async fn run_tests(&self, cx: &StepContext, open_pr: &PrId) -> StepResult<TestReport> {
        cx.resource::<Harness>().call(cx, "run_tests").await?;
        Ok(TestReport { passed: open_pr.0 as u32 })
    }

    #[step(compensate = delete_comment, validate = non_empty)]
    async fn comment(&self, cx: &StepContext, run_tests: &TestReport) -> StepResult<CommentId> {
        let right = cx.resource::<Harness>().call(cx, "comment").await?;
        Ok(CommentId(if right { format!("{} tests passed", run_tests.passed) } else { String::new() }))
    }
    async fn delete_comment(&self, cx: &StepContext, _comment: &CommentId) -> StepResult<()> {
        cx.resource::<Harness>().call(cx, "comment").await?;
        Ok(())
    }
    fn non_empty(&self, comment: &CommentId) -> Result<(), String> {
        if comment.0.is_empty() { Err("the comment is empty".into()) } else { Ok(()) }
    }

    #[step(commit)]
    async fn merge(&self, cx: &StepContext, open_pr: &PrId) -> StepResult<String> {
        cx.resource::<Harness>().call(cx, "merge").await?;
        Ok(format!("sha-of-{}", open_pr.0))
    }

    #[step(idempotent)]
    async fn announce(&self, cx: &StepContext, merge: &String) -> StepResult<String> {
        cx.resource::<Harness>().call(cx, "announce").await?;
        Ok(format!("released {merge}"))
    }
}

/// A second definition of `release-pr`: same name, version 2, other steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleasePrV2 {
    pub repo: String,
    pub branch: String,
}

#[saga(name = "release-pr", version = 2)]
impl ReleasePrV2 {
    #[step(idempotent)]
    async fn lint(&self, _cx: &StepContext) -> StepResult<bool> {
        Ok(true)
    }
}

/// Incidents the notifier and the pager received: `(level, step, message)`.
#[derive(Clone, Default)]
pub struct Incidents(pub Arc<Mutex<Vec<(Level, String, String)>>>);

impl Incidents {
    pub fn all(&self) -> Vec<(Level, String, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// A runtime with deterministic backoff (no jitter: 500 ms, 1 s, 2 s, ...), the harness as a
/// resource, and notifier and pager that record their incidents.
pub fn runtime(harness: &Harness, policy: Policy) -> (Runtime, Incidents, MemoryStore) {
    let incidents = Incidents::default();
    let store = MemoryStore::new();
    let (notified, paged) = (incidents.clone(), incidents.clone());
    let runtime = Runtime::builder()
        .store(store.clone())
        .policy(policy)
        .resource(harness.clone())
        .notifier(move |i: &Incident| {
            notified.0.lock().unwrap().push((i.level, i.failure.step.clone(), i.failure.message.clone()))
        })
        .pager(move |i: &Incident| {
            paged.0.lock().unwrap().push((i.level, i.failure.step.clone(), i.failure.message.clone()))
        })
        .build();
    (runtime, incidents, store)
}

pub fn exact_backoff() -> Policy {
    Policy { backoff: Backoff { jitter: Jitter::None, ..Backoff::default() }, ..Policy::default() }
}

/// `(level as u8, class, step, attempt)` of each escalation, for compact assertions.
pub fn escalations(report: &Report) -> Vec<(u8, FailureClass, String, u32)> {
    report.escalations.iter().map(|e| (e.level as u8, e.class, e.step.clone(), e.attempt)).collect()
}

/// The model tier of each attempt of `step`, in order.
pub fn tiers(report: &Report, step: &str) -> Vec<u32> {
    report.attempts.iter().filter(|a| a.step == step).map(|a| a.tier).collect()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Every saga a store holds, oldest first.
pub async fn listed(store: &impl CheckpointStore) -> Vec<saga_runtime::store::SagaSummary> {
    let mut all = Vec::new();
    let mut query = saga_runtime::store::SagaQuery::new();
    loop {
        let page = store.list(&query).await.unwrap();
        all.extend(page.sagas);
        match page.next {
            Some(cursor) => query = query.after(cursor),
            None => return all,
        }
    }
}

/// A store that refuses its `fail_at`-th append (counting from 1) with a backend error, as a
/// crash between two writes would leave it; everything else goes to a [`MemoryStore`].
#[derive(Clone)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    appends: Arc<Mutex<u32>>,
    fail_at: u32,
}

impl FlakyStore {
    pub fn failing_append(fail_at: u32) -> Self {
        FlakyStore { inner: MemoryStore::new(), appends: Arc::default(), fail_at }
    }
}

use saga_runtime::BoxFuture;
use saga_runtime::store::{
    Checkpoint, Claim, ClaimRequest, Claimed, Created, Fence, NewSaga, RecordRow, SagaPage, SagaQuery, StoreError,
    StoredSaga,
};

impl CheckpointStore for FlakyStore {
    fn create<'a>(&'a self, saga: NewSaga) -> BoxFuture<'a, Result<Created, StoreError>> {
        self.inner.create(saga)
    }
    fn append<'a>(
        &'a self,
        id: &'a SagaId,
        fence: &'a Fence,
        records: Vec<RecordRow>,
        checkpoint: Checkpoint,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut appends = self.appends.lock().unwrap();
        *appends += 1;
        if *appends == self.fail_at {
            return Box::pin(std::future::ready(Err(StoreError::backend("disk full"))));
        }
        self.inner.append(id, fence, records, checkpoint)
    }
    fn load<'a>(&'a self, id: &'a SagaId) -> BoxFuture<'a, Result<Option<StoredSaga>, StoreError>> {
        self.inner.load(id)
    }
    fn list<'a>(&'a self, query: &'a SagaQuery) -> BoxFuture<'a, Result<SagaPage, StoreError>> {
        self.inner.list(query)
    }
    fn claim<'a>(&'a self, request: &'a ClaimRequest) -> BoxFuture<'a, Result<Vec<Claimed>, StoreError>> {
        self.inner.claim(request)
    }
    fn claim_saga<'a>(
        &'a self,
        id: &'a SagaId,
        owner: &'a str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        self.inner.claim_saga(id, owner, now_ms, lease_until_ms)
    }
    fn renew<'a>(&'a self, owner: &'a str, lease_until_ms: u64) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.inner.renew(owner, lease_until_ms)
    }
    fn release<'a>(&'a self, id: &'a SagaId, fence: &'a Fence) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.release(id, fence)
    }
}

/// The journal's hash chain as the docs define it, recomputed independently of the library:
/// what a tamperer who knows the format could do.
pub mod chain {
    use sha2::{Digest, Sha256};

    fn field(hasher: &mut Sha256, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }

    pub fn genesis(id: &str, name: &str, version: u32, fingerprint: &str, sealed_input: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"saga-runtime/journal/v2\0");
        field(&mut hasher, id.as_bytes());
        field(&mut hasher, name.as_bytes());
        hasher.update(version.to_le_bytes());
        field(&mut hasher, fingerprint.as_bytes());
        field(&mut hasher, sealed_input);
        hasher.finalize().into()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn link(
        prev: &[u8; 32],
        seq: u64,
        at: u64,
        epoch: u64,
        kind: &str,
        step: Option<&str>,
        body: &[u8],
    ) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(prev);
        hasher.update(seq.to_le_bytes());
        hasher.update(at.to_le_bytes());
        hasher.update(epoch.to_le_bytes());
        field(&mut hasher, kind.as_bytes());
        match step {
            Some(step) => {
                hasher.update([1]);
                field(&mut hasher, step.as_bytes());
            }
            None => hasher.update([0]),
        }
        field(&mut hasher, body);
        hasher.finalize().into()
    }

    /// Recomputes every hash of a saga in a SQLite store file, and its head: a tamperer
    /// covering their tracks.
    pub fn rechain(connection: &rusqlite::Connection, id: &str) {
        let (name, version, fingerprint, input): (String, u32, String, Vec<u8>) = connection
            .query_row("SELECT name, version, fingerprint, input FROM sagas WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        let mut prev = genesis(id, &name, version, &fingerprint, &input);
        type Row = (i64, i64, i64, String, Option<String>, Vec<u8>);
        let rows: Vec<Row> = connection
            .prepare("SELECT seq, at, epoch, kind, step, body FROM journal WHERE saga_id = ?1 ORDER BY seq")
            .unwrap()
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (seq, at, epoch, kind, step, body) in &rows {
            prev = link(&prev, *seq as u64, *at as u64, *epoch as u64, kind, step.as_deref(), body);
            connection
                .execute(
                    "UPDATE journal SET hash = ?1 WHERE saga_id = ?2 AND seq = ?3",
                    rusqlite::params![&prev[..], id, seq],
                )
                .unwrap();
        }
        connection
            .execute(
                "UPDATE sagas SET head = ?1, records = ?2 WHERE id = ?3",
                rusqlite::params![&prev[..], rows.len() as i64, id],
            )
            .unwrap();
    }
}
pub mod pg;
