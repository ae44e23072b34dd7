//! `?` inside steps and effects: `Ok(value)` needs no annotation in `cx.effect`, the common
//! errors convert into `StepError` with a sensible default class, and `Classify` picks another.

use std::io::{Error as IoError, ErrorKind};
use std::path::PathBuf;

use saga_runtime::FailureKind;
use saga_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// Reads a file inside an effect: the first attempt a missing one, the re-prompt one that
/// exists (as a model would correct a path after seeing the error).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReadNotes {
    dir: PathBuf,
}

#[saga]
impl ReadNotes {
    #[step(idempotent)]
    async fn read(&self, cx: &StepContext) -> StepResult<usize> {
        let file = if cx.attempt() == 1 { "missing.md" } else { "NOTES.md" };
        let path = self.dir.join(file);
        let length = cx
            .effect("read_notes", async {
                let text = std::fs::read_to_string(&path)?;
                Ok(text.len())
            })
            .await?;
        Ok(length)
    }

    #[step(idempotent)]
    async fn parse(&self, cx: &StepContext) -> StepResult<u32> {
        // A model's answer that is not JSON the first time: a logical failure, re-prompted.
        let answer = if cx.attempt() == 1 { "forty-two" } else { "42" };
        let value: u32 = serde_json::from_str(answer)?;
        Ok(value)
    }
}

/// An effect's block ends in a plain `Ok(value)`; `?` on an `io::Error` (a missing file:
/// logical) and a `serde_json::Error` (bad JSON: logical) become re-prompts carrying the
/// errors' messages.
#[tokio::test(start_paused = true)]
async fn question_mark_on_io_and_json_errors_is_a_logical_failure_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("NOTES.md"), "twelve chars").unwrap();
    let outcome = Runtime::default().run(ReadNotes { dir: dir.path().to_owned() }).await.unwrap();
    let output = outcome.output().unwrap();
    assert_eq!((output.read, output.parse), (12, 42));
    let escalations: Vec<(Level, FailureClass, FailureKind, &str, &str)> = outcome
        .report()
        .escalations
        .iter()
        .map(|e| (e.level, e.class, e.kind, e.step.as_str(), e.error.as_str()))
        .collect();
    assert_eq!(
        escalations,
        [
            (
                Level::Reprompt,
                FailureClass::Logical,
                FailureKind::Error,
                "read",
                "No such file or directory (os error 2)"
            ),
            (Level::Reprompt, FailureClass::Logical, FailureKind::Error, "parse", "expected ident at line 1 column 2"),
        ]
    );
}

/// The default class of an I/O error follows its kind: what may pass by itself is transient.
#[test]
fn io_errors_are_transient_when_they_may_pass_and_logical_otherwise() {
    let class = |kind: ErrorKind| StepError::from(IoError::new(kind, "x")).class();
    for kind in [
        ErrorKind::TimedOut,
        ErrorKind::Interrupted,
        ErrorKind::WouldBlock,
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionReset,
        ErrorKind::ConnectionAborted,
        ErrorKind::NotConnected,
        ErrorKind::BrokenPipe,
        ErrorKind::UnexpectedEof,
        ErrorKind::AddrNotAvailable,
        ErrorKind::HostUnreachable,
        ErrorKind::NetworkUnreachable,
        ErrorKind::NetworkDown,
        ErrorKind::ResourceBusy,
    ] {
        assert_eq!(class(kind), FailureClass::Transient, "{kind:?}");
    }
    for kind in [
        ErrorKind::NotFound,
        ErrorKind::PermissionDenied,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidData,
        ErrorKind::AlreadyExists,
        ErrorKind::Other,
    ] {
        assert_eq!(class(kind), FailureClass::Logical, "{kind:?}");
    }
    let error = StepError::from(IoError::new(ErrorKind::TimedOut, "the vendor did not answer"));
    assert_eq!((error.kind(), error.message()), (FailureKind::Error, "the vendor did not answer"));
}

/// `Classify` overrides the default class of any error with `Display`.
#[test]
fn classify_picks_the_class_of_any_error() {
    fn step(pick: u8) -> StepResult<()> {
        let call: Result<(), IoError> = Err(IoError::new(ErrorKind::NotFound, "503 from the vendor"));
        match pick {
            0 => call.transient()?,
            1 => call.logical()?,
            _ => call.environmental()?,
        }
        Ok(())
    }
    let classes: Vec<(FailureClass, String)> =
        (0..3).map(|pick| step(pick).unwrap_err()).map(|e| (e.class(), e.message().to_owned())).collect();
    assert_eq!(
        classes,
        [
            (FailureClass::Transient, "503 from the vendor".to_owned()),
            (FailureClass::Logical, "503 from the vendor".to_owned()),
            (FailureClass::Environmental, "503 from the vendor".to_owned()),
        ]
    );
    let parsed: Result<u32, std::num::ParseIntError> = "x".parse();
    assert_eq!(parsed.environmental().unwrap_err().to_string(), "environmental failure: invalid digit found in string");
}

/// `?` on an `anyhow::Error` (feature `anyhow`): a `StepError` inside keeps its class and
/// `retry_after`, an I/O error inside classifies it, anything else is logical; the message is
/// the whole chain.
#[test]
fn anyhow_errors_keep_a_step_error_inside_and_default_to_logical() {
    use anyhow::Context;
    use std::time::Duration;

    fn with_step_error() -> StepResult<()> {
        let call: anyhow::Result<()> =
            Err(StepError::transient("429 Too Many Requests").retry_after(Duration::from_secs(2)).into());
        call.context("posting the comment")?;
        Ok(())
    }
    let error = with_step_error().unwrap_err();
    assert_eq!(
        (error.class(), error.retry_after_delay(), error.message()),
        (
            FailureClass::Transient,
            Some(Duration::from_secs(2)),
            "posting the comment: transient failure: 429 Too Many Requests"
        )
    );

    fn with_io_error() -> StepResult<()> {
        let call: Result<(), IoError> = Err(IoError::new(ErrorKind::ConnectionReset, "reset by peer"));
        call.context("calling the vendor")?;
        Ok(())
    }
    let error = with_io_error().unwrap_err();
    assert_eq!((error.class(), error.message()), (FailureClass::Transient, "calling the vendor: reset by peer"));

    fn plain() -> StepResult<()> {
        Err(anyhow::anyhow!("the plan touches files outside the repository"))?;
        Ok(())
    }
    let error = plain().unwrap_err();
    assert_eq!(
        (error.class(), error.message()),
        (FailureClass::Logical, "the plan touches files outside the repository")
    );

    fn picked() -> StepResult<()> {
        let call: anyhow::Result<()> = Err(anyhow::anyhow!("503"));
        call.transient()?;
        Ok(())
    }
    assert_eq!(picked().unwrap_err().class(), FailureClass::Transient);
}
