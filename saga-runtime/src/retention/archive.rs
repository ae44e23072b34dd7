//! Archives: each pruned saga as one line of JSON (its row, its sealed input, its whole journal
//! with the hash chain), appended to a file or a writer, and read back line by line.
//!
//! A line, pretty-printed (payloads are the bytes the store kept, base64: a sealed payload
//! stays sealed, a plain one is a 0 byte followed by JSON; hashes are hex):
//!
//! ```json
//! {"format": "saga-runtime/archive/v1", "archived_at_ms": 1764650000000,
//!  "saga": {"id": "pr-42", "name": "release-pr", "version": 1, "fingerprint": "9534e7c78a355667",
//!           "status": "completed", "stage": "completed", "records": 14, "head": "5f1c…",
//!           "created_at_ms": 1764640000000, "finished_at_ms": 1764640000900, "epoch": 1},
//!  "input": "AHsicmVwbyI6…",
//!  "journal": [{"seq": 0, "at_ms": 1764640000000, "epoch": 1, "kind": "started", "step": null,
//!               "body": "AHsic3RhcnRlZCI6…", "hash": "a3b2…"}, …]}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::id::SagaId;
use crate::outcome::Status;
use crate::store::{RecordRow, SagaSummary, StoredSaga};

/// The version tag of an archive line.
const FORMAT: &str = "saga-runtime/archive/v1";

/// Where pruned sagas are archived: a file (appended to, synced after each batch) or any
/// writer (flushed after each batch). Cheap to clone: clones write to the same place.
#[derive(Clone)]
pub struct Archive {
    sink: Arc<Mutex<Sink>>,
    name: Arc<str>,
}

enum Sink {
    File(File),
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("to", &self.name).finish()
    }
}

/// An archive that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive file cannot be opened.
    #[error("the archive `{path}` cannot be opened ({error}): check the path and its permissions")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        error: std::io::Error,
    },
    /// Writing to the archive failed: the batch being archived was not pruned.
    #[error(
        "writing to the archive `{archive}` failed ({error}): the sagas of this batch were not pruned; free space or fix the archive's file, and the next round archives them again"
    )]
    Write {
        /// The archive.
        archive: String,
        /// What the file system or writer said.
        error: std::io::Error,
    },
    /// Reading the archive failed.
    #[error("reading the archive `{archive}` failed at line {line} ({error})")]
    Read {
        /// The archive.
        archive: String,
        /// The line being read (from 1).
        line: usize,
        /// What the file system or reader said.
        error: std::io::Error,
    },
    /// A line is not an archived saga.
    #[error(
        "line {line} of the archive `{archive}` is not an archived saga ({reason}): it was cut short or edited; the other lines still read (skip this one), or restore the file from a copy"
    )]
    Line {
        /// The archive.
        archive: String,
        /// The line (from 1).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl Archive {
    /// Appends to the file at `path`, creating it if needed. Each batch is synced to disk before
    /// its sagas are pruned.
    pub fn file(path: impl AsRef<Path>) -> Result<Archive, ArchiveError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|error| ArchiveError::Open { path: path.to_owned(), error })?;
        Ok(Archive { sink: Arc::new(Mutex::new(Sink::File(file))), name: path.display().to_string().into() })
    }

    /// Writes to `writer` (a socket, a pipe to a compressor, an object-store upload), flushed
    /// after each batch: the sagas of a batch are pruned once `flush` returned.
    pub fn writer(writer: impl Write + Send + 'static) -> Archive {
        Archive { sink: Arc::new(Mutex::new(Sink::Writer(Box::new(writer)))), name: "the archive writer".into() }
    }

    /// Appends one line per saga and makes them durable (sync for a file, flush for a writer).
    pub(crate) fn append(&self, sagas: &[StoredSaga], archived_at_ms: u64) -> Result<u64, ArchiveError> {
        let mut lines = Vec::with_capacity(sagas.len() * 2048);
        for saga in sagas {
            serde_json::to_writer(&mut lines, &Line::of(saga, archived_at_ms))
                .map_err(|e| ArchiveError::Write { archive: self.name.to_string(), error: std::io::Error::other(e) })?;
            lines.push(b'\n');
        }
        let failed = |error| ArchiveError::Write { archive: self.name.to_string(), error };
        // A poisoned lock: a writer panicked mid-batch; what it wrote is at worst a partial
        // line, which the reader reports by number.
        let mut sink = self.sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &mut *sink {
            Sink::File(file) => {
                file.write_all(&lines).map_err(failed)?;
                file.sync_data().map_err(failed)?;
            }
            Sink::Writer(writer) => {
                writer.write_all(&lines).map_err(failed)?;
                writer.flush().map_err(failed)?;
            }
        }
        Ok(sagas.len() as u64)
    }
}

/// A saga read back from an archive: what the store held when it was pruned.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ArchivedSaga {
    /// The row, the sealed input and the whole journal, as stored.
    pub saga: StoredSaga,
    /// When it was archived (milliseconds since the Unix epoch).
    pub archived_at_ms: u64,
}

impl ArchivedSaga {
    /// Its id.
    pub fn id(&self) -> &SagaId {
        &self.saga.summary.id
    }
}

/// Reads an archive back, one [`ArchivedSaga`] per line (blank lines skipped). A line that is
/// not an archived saga is an error naming it, and reading goes on with the next line.
/// [`Runtime::open_archived`](crate::Runtime::open_archived) checks a saga's hash chain and
/// opens its journal; [`Runtime::archived_timeline`](crate::Runtime::archived_timeline)
/// renders it as the timeline of a stored saga.
pub struct ArchiveReader<R> {
    lines: std::io::Lines<BufReader<R>>,
    line: usize,
    name: String,
}

impl ArchiveReader<File> {
    /// Reads the archive file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ArchiveError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|error| ArchiveError::Open { path: path.to_owned(), error })?;
        Ok(ArchiveReader::new(file, path.display().to_string()))
    }
}

impl<R: std::io::Read> ArchiveReader<R> {
    /// Reads an archive from `reader`; `name` names it in errors.
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        ArchiveReader { lines: BufReader::new(reader).lines(), line: 0, name: name.into() }
    }
}

impl<R: std::io::Read> Iterator for ArchiveReader<R> {
    type Item = Result<ArchivedSaga, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let text = match self.lines.next()? {
                Ok(text) => text,
                Err(error) => {
                    return Some(Err(ArchiveError::Read { archive: self.name.clone(), line: self.line, error }));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            let bad = |reason: String| ArchiveError::Line { archive: self.name.clone(), line: self.line, reason };
            let parsed = serde_json::from_str::<Line>(&text)
                .map_err(|e| bad(format!("not the JSON of an archived saga: {e}")))
                .and_then(|line| line.into_saga().map_err(bad));
            return Some(parsed);
        }
    }
}

/// One line of an archive.
#[derive(Serialize, Deserialize)]
struct Line {
    format: String,
    archived_at_ms: u64,
    saga: SagaLine,
    input: String,
    journal: Vec<RecordLine>,
}

#[derive(Serialize, Deserialize)]
struct SagaLine {
    id: String,
    name: String,
    version: u32,
    fingerprint: String,
    status: String,
    stage: String,
    records: u64,
    head: String,
    created_at_ms: u64,
    finished_at_ms: u64,
    epoch: u64,
}

#[derive(Serialize, Deserialize)]
struct RecordLine {
    seq: u64,
    at_ms: u64,
    epoch: u64,
    kind: String,
    step: Option<String>,
    body: String,
    hash: String,
}

impl Line {
    fn of(saga: &StoredSaga, archived_at_ms: u64) -> Line {
        let s = &saga.summary;
        Line {
            format: FORMAT.to_owned(),
            archived_at_ms,
            saga: SagaLine {
                id: s.id.as_str().to_owned(),
                name: s.name.clone(),
                version: s.version,
                fingerprint: s.fingerprint.clone(),
                status: s.status.as_str().to_owned(),
                stage: s.stage.clone(),
                records: s.records,
                head: hex::encode(s.head),
                created_at_ms: s.created_at_ms,
                finished_at_ms: s.updated_at_ms,
                epoch: s.epoch,
            },
            input: BASE64.encode(&saga.input),
            journal: saga
                .records
                .iter()
                .map(|r| RecordLine {
                    seq: r.seq,
                    at_ms: r.at_ms,
                    epoch: r.epoch,
                    kind: r.kind.to_string(),
                    step: r.step.as_ref().map(|s| s.to_string()),
                    body: BASE64.encode(&r.body),
                    hash: hex::encode(r.hash),
                })
                .collect(),
        }
    }

    fn into_saga(self) -> Result<ArchivedSaga, String> {
        if self.format != FORMAT {
            return Err(format!("its format is `{}`, and this build reads `{FORMAT}`", self.format));
        }
        let hash = |what: &str, text: &str| -> Result<[u8; 32], String> {
            let bytes = hex::decode(text).map_err(|e| format!("{what} is not hex ({e})"))?;
            bytes.try_into().map_err(|_| format!("{what} is not 32 bytes"))
        };
        let bytes = |what: &str, text: &str| BASE64.decode(text).map_err(|e| format!("{what} is not base64 ({e})"));
        let s = self.saga;
        let status = [Status::Completed, Status::Compensated, Status::NeedsHuman, Status::Running]
            .into_iter()
            .find(|status| status.as_str() == s.status)
            .ok_or_else(|| format!("its status `{}` is unknown", s.status))?;
        let mut summary = SagaSummary::new(SagaId::new(s.id), s.name, s.version, s.fingerprint);
        summary.status = status;
        summary.stage = s.stage;
        summary.records = s.records;
        summary.head = hash("the head", &s.head)?;
        summary.created_at_ms = s.created_at_ms;
        summary.updated_at_ms = s.finished_at_ms;
        summary.epoch = s.epoch;
        let input = bytes("the input", &self.input)?;
        let mut records = Vec::with_capacity(self.journal.len());
        for r in self.journal {
            let what = format!("record {}", r.seq);
            records.push(RecordRow::new(
                r.seq,
                r.at_ms,
                r.epoch,
                r.kind,
                r.step,
                bytes(&format!("the body of {what}"), &r.body)?,
                hash(&format!("the hash of {what}"), &r.hash)?,
            ));
        }
        Ok(ArchivedSaga { saga: StoredSaga::new(summary, input, records), archived_at_ms: self.archived_at_ms })
    }
}
