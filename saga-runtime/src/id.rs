//! Saga identifiers.

use std::fmt;
use std::sync::Arc;

/// The identity of one run of a saga.
///
/// `Runtime::run` gives each new saga a UUIDv7 (time-ordered); `Runtime::run_with_id` takes
/// one from the caller, which makes starting a saga idempotent: the same id never starts a
/// second saga. Cloning is cheap (the text is shared).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SagaId(Arc<str>);

impl SagaId {
    /// A saga id from any text, such as `"pr-42"` or a request id.
    pub fn new(id: impl Into<String>) -> Self {
        SagaId(Arc::from(id.into()))
    }

    /// A fresh, time-ordered UUIDv7.
    pub fn generate() -> Self {
        SagaId(Arc::from(uuid::Uuid::now_v7().to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SagaId({:?})", &*self.0)
    }
}

impl From<&str> for SagaId {
    fn from(id: &str) -> Self {
        SagaId::new(id)
    }
}

impl From<String> for SagaId {
    fn from(id: String) -> Self {
        SagaId::new(id)
    }
}

impl AsRef<str> for SagaId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
