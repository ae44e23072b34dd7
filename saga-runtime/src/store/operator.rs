//! What operators' tools need from a store, next to the sagas themselves: the definitions of
//! the saga types the runtimes registered (so that a tool without the code, the `saga` CLI,
//! can name steps, draw graphs and tell compensable steps from the commit point), and requests
//! (resume, resolve, cancel, sweep) that a tool leaves for the process that owns the saga to
//! carry out: a saga is only ever written by the runtime that holds it.

use serde::{Deserialize, Serialize};

use crate::definition::{Definition, StepKind};
use crate::id::SagaId;

/// A saga type's definition, as the store keeps it for tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredDefinition {
    /// The saga name.
    pub name: String,
    /// The version.
    pub version: u32,
    /// The fingerprint.
    pub fingerprint: String,
    /// The deadline of its sagas, in milliseconds, if it has one.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Its steps, in order.
    pub steps: Vec<StoredStep>,
}

/// One step of a [`StoredDefinition`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredStep {
    /// The step name.
    pub name: String,
    /// `compensable`, `commit` or `idempotent`.
    pub kind: String,
    /// Its compensation, if compensable.
    pub compensation: Option<String>,
    /// Its validator.
    pub validate: Option<String>,
    /// Its timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The earlier steps whose outputs it reads.
    pub inputs: Vec<String>,
    /// Its output type, as written.
    pub output_type: String,
    /// The downstream whose rate limit it draws from.
    #[serde(default)]
    pub limit: Option<String>,
}

impl StoredDefinition {
    /// The stored form of `definition`.
    pub fn of(definition: &Definition) -> Self {
        let steps = definition.steps();
        StoredDefinition {
            name: definition.name().to_owned(),
            version: definition.version(),
            fingerprint: definition.fingerprint().to_owned(),
            deadline_ms: definition.deadline().map(|d| d.as_millis() as u64),
            steps: steps
                .iter()
                .map(|step| StoredStep {
                    name: step.name().to_owned(),
                    kind: match step.kind() {
                        StepKind::Compensable => "compensable",
                        StepKind::Commit => "commit",
                        StepKind::Idempotent => "idempotent",
                    }
                    .to_owned(),
                    compensation: step.compensation().map(str::to_owned),
                    validate: step.validate().map(str::to_owned),
                    timeout_ms: step.timeout().map(|t| t.as_millis() as u64),
                    inputs: step.inputs().iter().filter_map(|&i| steps.get(i)).map(|s| s.name().to_owned()).collect(),
                    output_type: step.output_type().to_owned(),
                    limit: step.limit().map(str::to_owned),
                })
                .collect(),
        }
    }

    /// The index of the commit point, if it has one.
    pub fn commit_index(&self) -> Option<usize> {
        self.steps.iter().position(|s| s.kind == "commit")
    }
}

/// What an operator asks of the process that owns a saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestAction {
    /// Un-park the saga (`Runtime::resume`).
    Resume,
    /// Record that a human did the parked compensation, and go on (`Runtime::resolve`).
    Resolve,
    /// Roll the saga back now (`Runtime::cancel`).
    Cancel,
    /// Run one sweep (`Runtime::sweep`); no saga.
    Sweep,
}

impl RequestAction {
    /// Its name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestAction::Resume => "resume",
            RequestAction::Resolve => "resolve",
            RequestAction::Cancel => "cancel",
            RequestAction::Sweep => "sweep",
        }
    }

    /// The action of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "resume" => RequestAction::Resume,
            "resolve" => RequestAction::Resolve,
            "cancel" => RequestAction::Cancel,
            "sweep" => RequestAction::Sweep,
            _ => return None,
        })
    }
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RequestState {
    /// Waiting for a process that can carry it out.
    Pending,
    /// A process took it and is carrying it out.
    Taken,
    /// Carried out; `result` says how it ended.
    Done,
    /// It could not be carried out; `result` says why.
    Failed,
}

impl RequestState {
    /// Its name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Taken => "taken",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
        }
    }

    /// The state of a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => RequestState::Pending,
            "taken" => RequestState::Taken,
            "done" => RequestState::Done,
            "failed" => RequestState::Failed,
            _ => return None,
        })
    }
}

/// A request to submit ([`CheckpointStore::submit`](super::CheckpointStore::submit)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewRequest {
    /// What to do.
    pub action: RequestAction,
    /// To which saga (`None` for a sweep).
    pub saga_id: Option<SagaId>,
    /// The saga's name and fingerprint: only a process that registered that type takes it.
    pub kind: Option<(String, String)>,
    /// The operator's note (what they did, why they cancel).
    pub note: String,
    /// When it was asked (ms since the Unix epoch).
    pub at_ms: u64,
}

impl NewRequest {
    /// A request of `action` for saga `saga_id` of `kind` (name, fingerprint).
    pub fn new(
        action: RequestAction,
        saga_id: Option<SagaId>,
        kind: Option<(String, String)>,
        note: impl Into<String>,
        at_ms: u64,
    ) -> Self {
        NewRequest { action, saga_id, kind, note: note.into(), at_ms }
    }
}

/// A stored request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Request {
    /// Its number.
    pub id: u64,
    /// What to do.
    pub action: RequestAction,
    /// To which saga.
    pub saga_id: Option<SagaId>,
    /// The saga's name.
    pub saga: Option<String>,
    /// The operator's note.
    pub note: String,
    /// When it was asked (ms since the Unix epoch).
    pub requested_at_ms: u64,
    /// Where it stands.
    pub state: RequestState,
    /// The process that took it.
    pub taken_by: Option<String>,
    /// How it ended, or why it failed.
    pub result: Option<String>,
    /// When it ended.
    pub done_at_ms: Option<u64>,
}
