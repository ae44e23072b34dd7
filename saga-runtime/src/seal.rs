//! How payloads are sealed at rest: XChaCha20-Poly1305 with a key id and a random nonce
//! stored next to the ciphertext, and the saga id, the record and the step as associated
//! data, so that a row cannot be decrypted under another saga or step.
//!
//! Sealed format: `0x00 ‖ plaintext` without a key, or `0x01 ‖ len(key id) ‖ key id ‖ nonce
//! (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`. New writes use the keyring's current key; rows
//! written under older keys are opened with those (key rotation). Under a keyring a plaintext
//! payload is refused: it was written without the key, or put there by someone else.
//!
//! The keys exist with the `encryption` feature; without it every payload is written plain
//! and a sealed one is reported as needing the feature.

const PLAIN: u8 = 0x00;
const XCHACHA: u8 = 0x01;

#[cfg(feature = "encryption")]
pub use keys::{EncryptionKey, KeyError, Keyring};

/// Without the `encryption` feature there are no keys: `Option<&Keyring>` is always `None`.
#[cfg(not(feature = "encryption"))]
#[derive(Clone, Debug)]
pub(crate) enum Keyring {}

/// Why a sealed payload could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The payload is encrypted and the store has no key.
    #[error("it is encrypted with key `{0}` and the store was opened without a keyring: open it with that key")]
    NoKey(String),
    /// The payload is encrypted with a key the keyring does not hold.
    #[error(
        "it is encrypted with key `{0}`, which the store's keyring does not hold: add that key (rotated keys stay readable with `with_older`)"
    )]
    UnknownKey(String),
    /// Authentication failed.
    #[error("it cannot be decrypted with key `{0}`: the key is wrong or the row was tampered with")]
    Rejected(String),
    /// A plaintext payload where a keyring is in use.
    #[error(
        "it is stored in plaintext while the store is encrypted: it was written without the key or replaced by hand, so it is not trusted"
    )]
    Plaintext,
    /// The payload is encrypted and this build cannot decrypt.
    #[error("it is encrypted, and this build of saga-runtime has no `encryption` feature: enable it to open the store")]
    NoEncryption,
    /// The bytes are not a sealed payload.
    #[error("it is not a sealed payload ({0})")]
    Malformed(&'static str),
}

/// An empty plain payload (its format byte), with room for `capacity` bytes: what `seal`
/// without a key produces once the plaintext is written after it.
pub(crate) fn plain_prefix(capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + 1);
    out.push(PLAIN);
    out
}

/// Seals `plaintext` with the current key, bound to `aad`.
pub(crate) fn seal(keys: Option<&Keyring>, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    match keys {
        None => {
            let mut out = Vec::with_capacity(plaintext.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(plaintext);
            out
        }
        #[cfg(feature = "encryption")]
        Some(keys) => keys::seal(keys, aad, plaintext),
        #[cfg(not(feature = "encryption"))]
        Some(never) => {
            let _ = aad;
            match *never {}
        }
    }
}

/// Opens what [`seal`] produced with the same `aad`.
pub(crate) fn open(keys: Option<&Keyring>, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    match (sealed.split_first(), keys) {
        (Some((&PLAIN, plaintext)), None) => Ok(plaintext.to_vec()),
        (Some((&PLAIN, _)), Some(_)) => Err(SealError::Plaintext),
        #[cfg(feature = "encryption")]
        (Some((&XCHACHA, rest)), keys) => keys::open(keys, aad, rest),
        #[cfg(not(feature = "encryption"))]
        (Some((&XCHACHA, _)), _) => {
            let _ = aad;
            Err(SealError::NoEncryption)
        }
        (Some(_), _) => Err(SealError::Malformed("unknown format byte")),
        (None, _) => Err(SealError::Malformed("empty")),
    }
}

/// Whether a payload is sealed with a key (rather than stored plain).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn is_encrypted(sealed: &[u8]) -> bool {
    sealed.first() == Some(&XCHACHA)
}

#[cfg(feature = "encryption")]
mod keys {
    use std::fmt;

    use chacha20poly1305::aead::{Aead, Generate, Payload};
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

    use super::{SealError, XCHACHA};

    const NONCE: usize = 24;

    /// A 256-bit key with an id, for [`Keyring`].
    #[derive(Clone)]
    pub struct EncryptionKey {
        id: String,
        key: [u8; 32],
    }

    /// An encryption key that cannot be made.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum KeyError {
        /// The id is empty or longer than 255 bytes.
        #[error("an encryption key id has 1 to 255 bytes, got {0} bytes: give the key a short name such as `2026-12`")]
        BadId(usize),
        /// The hex text is not 64 hex digits.
        #[error(
            "an encryption key is 64 hex digits (32 bytes), got {0} characters: generate one with `openssl rand -hex 32`"
        )]
        BadHex(usize),
    }

    impl EncryptionKey {
        /// A key with an id (1 to 255 bytes) that is stored with every row it seals.
        pub fn new(id: impl Into<String>, key: [u8; 32]) -> Result<Self, KeyError> {
            let id = id.into();
            if id.is_empty() || id.len() > 255 {
                return Err(KeyError::BadId(id.len()));
            }
            Ok(EncryptionKey { id, key })
        }

        /// A key from 64 hex digits (for keys kept in environment variables).
        pub fn from_hex(id: impl Into<String>, hex: &str) -> Result<Self, KeyError> {
            let hex = hex.trim();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(KeyError::BadHex(hex.chars().count()));
            }
            let mut key = [0u8; 32];
            for (i, byte) in key.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| KeyError::BadHex(hex.len()))?;
            }
            EncryptionKey::new(id, key)
        }

        /// The key's id.
        pub fn id(&self) -> &str {
            &self.id
        }
    }

    impl fmt::Debug for EncryptionKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("EncryptionKey").field("id", &self.id).field("key", &"[redacted]").finish()
        }
    }

    /// The keys a store seals with (the current one) and opens with (all of them).
    #[derive(Clone, Debug)]
    pub struct Keyring {
        current: EncryptionKey,
        older: Vec<EncryptionKey>,
    }

    impl Keyring {
        /// A keyring whose every new write is sealed with `current`.
        pub fn new(current: EncryptionKey) -> Self {
            Keyring { current, older: Vec::new() }
        }

        /// Adds a retired key, to open rows written before a rotation.
        pub fn with_older(mut self, key: EncryptionKey) -> Self {
            self.older.push(key);
            self
        }

        /// The key new writes use.
        pub fn current(&self) -> &EncryptionKey {
            &self.current
        }

        /// The retired keys, which only open.
        pub fn older(&self) -> &[EncryptionKey] {
            &self.older
        }

        fn find(&self, id: &str) -> Option<&EncryptionKey> {
            std::iter::once(&self.current).chain(&self.older).find(|k| k.id == id)
        }
    }

    pub(super) fn seal(keys: &Keyring, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = &keys.current;
        let nonce = XNonce::generate();
        let cipher = XChaCha20Poly1305::new(&key.key.into());
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad })
            .expect("XChaCha20-Poly1305 encrypts any payload below 256 GiB");
        let mut out = Vec::with_capacity(2 + key.id.len() + NONCE + sealed.len());
        out.push(XCHACHA);
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens the part of a sealed payload after its format byte.
    pub(super) fn open(keys: Option<&Keyring>, aad: &[u8], rest: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&id_len, rest) = rest.split_first().ok_or(SealError::Malformed("no key id"))?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE + 16 {
            return Err(SealError::Malformed("too short"));
        }
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).map_err(|_| SealError::Malformed("key id is not text"))?;
        let (nonce, ciphertext) = rest.split_at(NONCE);
        let keys = keys.ok_or_else(|| SealError::NoKey(id.to_owned()))?;
        let key = keys.find(id).ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed("bad nonce"))?;
        XChaCha20Poly1305::new(&key.key.into())
            .decrypt(&nonce, Payload { msg: ciphertext, aad })
            .map_err(|_| SealError::Rejected(id.to_owned()))
    }
}

#[cfg(all(test, feature = "encryption"))]
mod tests {
    use super::*;

    fn keyring(id: &str, byte: u8) -> Keyring {
        Keyring::new(EncryptionKey::new(id, [byte; 32]).unwrap())
    }

    #[test]
    fn sealed_payloads_open_only_with_the_right_key_and_context() {
        let keys = keyring("k1", 7);
        let sealed = seal(Some(&keys), b"saga-1/step-2", b"{\"secret\":1}");
        assert!(!sealed.windows(6).any(|w| w == b"secret"), "the plaintext does not show");
        assert_eq!(open(Some(&keys), b"saga-1/step-2", &sealed).unwrap(), b"{\"secret\":1}");
        assert_eq!(open(Some(&keys), b"saga-1/step-3", &sealed), Err(SealError::Rejected("k1".into())));
        assert_eq!(open(Some(&keyring("k1", 8)), b"saga-1/step-2", &sealed), Err(SealError::Rejected("k1".into())));
        assert_eq!(open(Some(&keyring("k2", 7)), b"saga-1/step-2", &sealed), Err(SealError::UnknownKey("k1".into())));
        assert_eq!(open(None, b"saga-1/step-2", &sealed), Err(SealError::NoKey("k1".into())));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(open(Some(&keys), b"saga-1/step-2", &tampered), Err(SealError::Rejected("k1".into())));
        assert_eq!(open(Some(&keys), b"saga-1/step-2", &sealed).unwrap(), b"{\"secret\":1}", "still readable");
    }

    #[test]
    fn under_a_keyring_a_plaintext_payload_is_refused() {
        let plain = seal(None, b"a", b"{\"secret\":1}");
        assert_eq!(open(None, b"a", &plain).unwrap(), b"{\"secret\":1}");
        assert_eq!(open(Some(&keyring("k1", 7)), b"a", &plain), Err(SealError::Plaintext));
    }

    #[test]
    fn rotated_keys_keep_old_rows_readable() {
        let old = keyring("2025", 1);
        let sealed_old = seal(Some(&old), b"a", b"old row");
        let rotated = Keyring::new(EncryptionKey::new("2026", [2; 32]).unwrap())
            .with_older(EncryptionKey::new("2025", [1; 32]).unwrap());
        let sealed_new = seal(Some(&rotated), b"a", b"new row");
        assert_eq!(&sealed_new[2..6], b"2026", "new writes use the current key");
        assert_eq!(open(Some(&rotated), b"a", &sealed_old).unwrap(), b"old row");
        assert_eq!(open(Some(&rotated), b"a", &sealed_new).unwrap(), b"new row");
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        assert_eq!(EncryptionKey::new("", [0; 32]).unwrap_err(), KeyError::BadId(0));
        assert!(EncryptionKey::new("x".repeat(256), [0; 32]).is_err());
        assert_eq!(EncryptionKey::from_hex("k", "abc").unwrap_err(), KeyError::BadHex(3));
        let key = EncryptionKey::from_hex("k", &"0f".repeat(32)).unwrap();
        assert_eq!(key.id(), "k");
    }
}
