//! The one place where payloads cross the store boundary, for every store: records become
//! sealed, hash-chained [`RecordRow`]s on the way in, and come back out checked and opened.
//!
//! - **Sealing**: the saga input and each record's JSON body are sealed with the store's
//!   keyring (see [`seal`](crate::seal)), bound to the saga id, the record's position, kind and
//!   step.
//! - **Integrity**: every row carries `hash = SHA-256(previous hash ‖ seq ‖ time ‖ epoch ‖
//!   kind ‖ step ‖ sealed body)`, chained from a genesis hash over the saga's id, name,
//!   version, fingerprint and sealed input; the saga row keeps the head of the chain and the
//!   number of records. Loading recomputes the chain, so an edited, reordered, inserted or
//!   deleted record (the tail included) is a clear error even without a key. Without a key
//!   this catches every change made by anything but a writer that recomputes the chain; with a
//!   key, each body is also authenticated where it stands.

use sha2::{Digest, Sha256};

use crate::id::SagaId;
use crate::journal::{Event, Payload, Record};
use crate::seal::{self, Keyring};
use crate::store::{ChainHash, RecordRow, SagaSummary, StoreError, StoredSaga};

/// The version tag of the chain's genesis: a new journal format gets a new tag.
const GENESIS_TAG: &[u8] = b"saga-runtime/journal/v2\0";
/// What the keyring check of a store seals and opens.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const CANARY_AAD: &[u8] = b"saga-runtime/key-check";
#[cfg(any(feature = "sqlite", feature = "postgres"))]
const CANARY: &[u8] = b"saga-runtime";

/// Seals and opens the payloads of one store. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Codec {
    keys: Option<std::sync::Arc<Keyring>>,
}

/// A saga as the runtime reads it: checked against its chain, opened, decoded.
#[derive(Clone, Debug)]
pub(crate) struct OpenedSaga {
    pub(crate) summary: SagaSummary,
    pub(crate) input: Payload,
    pub(crate) records: Vec<Record>,
}

impl Codec {
    pub(crate) fn new(keys: Option<Keyring>) -> Self {
        Codec { keys: keys.map(std::sync::Arc::new) }
    }

    fn keys(&self) -> Option<&Keyring> {
        self.keys.as_deref()
    }

    pub(crate) fn seal_input(&self, saga_id: &SagaId, input: &[u8]) -> Vec<u8> {
        seal::seal(self.keys(), &input_aad(saga_id), input)
    }

    /// Opens a stored saga's sealed input.
    pub(crate) fn open_input(&self, saga_id: &SagaId, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal::open(self.keys(), &input_aad(saga_id), sealed).map_err(|e| StoreError::Unreadable {
            saga_id: saga_id.clone(),
            what: "the input".to_owned(),
            reason: e.to_string(),
        })
    }

    /// Seals one record and links it to `prev`.
    pub(crate) fn seal_record(
        &self,
        saga_id: &SagaId,
        prev: &ChainHash,
        epoch: u64,
        record: &Record,
        step: Option<&'static str>,
    ) -> Result<RecordRow, StoreError> {
        let kind = record.event.kind();
        let encode_error = |e: serde_json::Error| {
            StoreError::backend(format!("saga-runtime could not encode a `{kind}` record ({e}); this is a bug"))
        };
        let body = match self.keys() {
            // Plain: the JSON is written straight after the format byte, with no copy.
            None => {
                let mut body = seal::plain_prefix(128);
                serde_json::to_writer(&mut body, &record.event).map_err(encode_error)?;
                body
            }
            Some(keys) => {
                let json = serde_json::to_vec(&record.event).map_err(encode_error)?;
                seal::seal(Some(keys), &record_aad(saga_id, record.seq, kind, step), &json)
            }
        };
        let hash = link(prev, record.seq, record.at_ms, epoch, kind, step, &body);
        Ok(RecordRow::new(record.seq, record.at_ms, epoch, kind, step, body, hash))
    }

    /// Checks a stored saga against its hash chain, then opens and decodes it.
    pub(crate) fn open(&self, stored: StoredSaga) -> Result<OpenedSaga, StoreError> {
        let StoredSaga { summary, input, records: rows, .. } = stored;
        let saga_id = summary.id.clone();
        let unreadable =
            |what: String, reason: String| StoreError::Unreadable { saga_id: saga_id.clone(), what, reason };
        verify_chain(&summary, &input, &rows).map_err(|(what, reason)| unreadable(what, reason))?;
        let input = seal::open(self.keys(), &input_aad(&saga_id), &input)
            .map_err(|e| unreadable("the input".to_owned(), e.to_string()))?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let what = || format!("record {} ({})", row.seq, row.kind);
            let json =
                seal::open(self.keys(), &record_aad(&saga_id, row.seq, &row.kind, row.step.as_deref()), &row.body)
                    .map_err(|e| unreadable(what(), e.to_string()))?;
            let event: Event = serde_json::from_slice(&json)
                .map_err(|e| unreadable(what(), format!("its contents are not a journal record ({e})")))?;
            if event.kind() != row.kind {
                return Err(unreadable(what(), format!("its contents are a `{}` record", event.kind())));
            }
            records.push(Record { seq: row.seq, at_ms: row.at_ms, event });
        }
        Ok(OpenedSaga { summary, input: Payload::from(input), records })
    }
}

/// The hash the chain of a new saga starts from.
pub(crate) fn genesis(saga_id: &SagaId, name: &str, version: u32, fingerprint: &str, sealed_input: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(GENESIS_TAG);
    field(&mut hasher, saga_id.as_str().as_bytes());
    field(&mut hasher, name.as_bytes());
    hasher.update(version.to_le_bytes());
    field(&mut hasher, fingerprint.as_bytes());
    field(&mut hasher, sealed_input);
    hasher.finalize().into()
}

/// The hash of one row, linked to the previous one.
pub(crate) fn link(
    prev: &ChainHash,
    seq: u64,
    at_ms: u64,
    epoch: u64,
    kind: &str,
    step: Option<&str>,
    body: &[u8],
) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_le_bytes());
    hasher.update(at_ms.to_le_bytes());
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

/// A length-prefixed field, so that no two different rows hash the same bytes.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// Recomputes the chain of a stored saga: `Err((which row, why))` at the first break.
pub(crate) fn verify_chain(summary: &SagaSummary, input: &[u8], rows: &[RecordRow]) -> Result<(), (String, String)> {
    const RESTORE: &str = "restore the store from a backup";
    if rows.len() as u64 != summary.records {
        return Err((
            "the journal".to_owned(),
            format!(
                "it holds {} records where the saga row counts {}: records were lost or added outside saga-runtime, so {RESTORE}",
                rows.len(),
                summary.records
            ),
        ));
    }
    let mut prev = genesis(&summary.id, &summary.name, summary.version, &summary.fingerprint, input);
    for (position, row) in rows.iter().enumerate() {
        let what = || format!("record {} ({})", row.seq, row.kind);
        if row.seq > position as u64 {
            return Err((
                what(),
                format!("it stands at position {position}: records before it were deleted, so {RESTORE}"),
            ));
        }
        if row.seq < position as u64 {
            return Err((what(), format!("it stands at position {position}: the journal was reordered, so {RESTORE}")));
        }
        let expected = link(&prev, row.seq, row.at_ms, row.epoch, &row.kind, row.step.as_deref(), &row.body);
        if expected != row.hash {
            let reason = if position == 0 {
                format!(
                    "it does not follow from the saga's row (its id, name, version, fingerprint or input was edited, or the record was), so {RESTORE}"
                )
            } else {
                format!("it does not match the journal's hash chain: it was edited, replaced or moved, so {RESTORE}")
            };
            return Err((what(), reason));
        }
        prev = expected;
    }
    if prev != summary.head {
        return Err((
            "the journal".to_owned(),
            format!("its last record is not the last one written: records were deleted from its end, so {RESTORE}"),
        ));
    }
    Ok(())
}

fn input_aad(saga_id: &SagaId) -> Vec<u8> {
    format!("saga-input\0{saga_id}").into_bytes()
}

/// The associated data of a journal row: the saga id, the record's position, kind and step,
/// so a sealed row decrypts only where it was written.
fn record_aad(saga_id: &SagaId, seq: u64, kind: &str, step: Option<&str>) -> Vec<u8> {
    format!("saga-journal\0{saga_id}\0{seq}\0{kind}\0{}", step.unwrap_or("")).into_bytes()
}

/// What a store records about its encryption, and what it should do when opened with `keys`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyCheck {
    /// The store holds sealed sagas and was opened without a keyring: why it refuses writes.
    pub(crate) read_only: Option<String>,
    /// Mark the store as sealed and keep this canary (sealed with the current key).
    pub(crate) new_canary: Option<Vec<u8>>,
}

/// What a store knows about its own encryption when it opens.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct Sealing<'a> {
    /// Whether the store was marked as holding sealed sagas.
    pub(crate) sealed: bool,
    /// The canary sealed when it was marked.
    pub(crate) canary: Option<&'a [u8]>,
    /// The sealed input of one stored saga, if any (stores marked before canaries existed).
    pub(crate) sample: Option<(&'a SagaId, &'a [u8])>,
}

/// The keyring check every store runs when it opens: a wrong key is an error before anything
/// is read or written, a store of plaintext sagas is not silently mixed with sealed ones, and a
/// sealed store opened without a keyring refuses to write (it can still be read).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn check_keys(location: &str, keys: Option<&Keyring>, sealing: Sealing<'_>) -> Result<KeyCheck, StoreError> {
    let wrong_key = |reason: String| StoreError::WrongKey { location: location.to_owned(), reason };
    match (sealing.sealed, keys) {
        (false, None) => Ok(KeyCheck::default()),
        (false, Some(keys)) => {
            if sealing.sample.is_some() {
                return Err(wrong_key(
                    "it holds sagas stored in plaintext, and encryption is turned on for a new store only: open it without a keyring, or start a new store with the keyring".to_owned(),
                ));
            }
            Ok(KeyCheck { read_only: None, new_canary: Some(seal::seal(Some(keys), CANARY_AAD, CANARY)) })
        }
        (true, None) => Ok(KeyCheck {
            read_only: Some(
                "it holds encrypted sagas and was opened without a keyring, so it refuses every write (reading works, with payloads sealed): open it with its keyring to run sagas".to_owned(),
            ),
            new_canary: None,
        }),
        (true, Some(keys)) => {
            let opened = match (sealing.canary, sealing.sample) {
                (Some(canary), _) => seal::open(Some(keys), CANARY_AAD, canary).map(drop),
                (None, Some((saga_id, input))) => seal::open(Some(keys), &input_aad(saga_id), input).map(drop),
                (None, None) => Ok(()),
            };
            match opened {
                Ok(()) => Ok(KeyCheck {
                    read_only: None,
                    new_canary: sealing.canary.is_none().then(|| seal::seal(Some(keys), CANARY_AAD, CANARY)),
                }),
                Err(seal::SealError::Plaintext) => Err(wrong_key("its key check is stored in plaintext: it was tampered with".to_owned())),
                Err(error) => Err(wrong_key(error.to_string())),
            }
        }
    }
}

/// Whether a stored payload is sealed with a key.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn is_encrypted(sealed: &[u8]) -> bool {
    seal::is_encrypted(sealed)
}
