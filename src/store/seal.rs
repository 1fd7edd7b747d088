//! Encryption at rest. With `[node] encryption_key`, every value the store
//! writes that holds an event (outbox batches, dead letters, parked events,
//! local-first records) is sealed with ChaCha20-Poly1305 (ring), which is
//! fast without AES instructions, as on many edge boards:
//!
//! ```text
//! sealed = "JES1" | key id (4 bytes) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The key id is the start of a SHA-256 of the key: it names the key that
//! opens a value without telling anything about it, so `previous_keys` can
//! open what older keys sealed while new values use the current one. The
//! magic and key id are bound to the ciphertext as associated data. Nonces
//! are random (96 bits; a node writes far fewer values per key than the
//! 2^32 at which random nonces start to matter).
//!
//! Values written without a key start with a version byte (1 or 2), never
//! with the magic, and are read as they are: a node that turns encryption
//! on needs no migration, its older values drain as before. Idempotency
//! keys, marks and bookkeeping hold no payload and stay plain.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;

const MAGIC: &[u8; 4] = b"JES1";
const KEY_ID: usize = 4;
const HEADER: usize = MAGIC.len() + KEY_ID + NONCE_LEN;
const TAG: usize = 16;
/// Bytes a key has (its base64 text decodes to this many).
pub const KEY_BYTES: usize = 32;

/// Names a key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl KeyId {
    pub fn bytes(&self) -> [u8; KEY_ID] {
        self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a stored value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "the store holds events sealed with key {0}, which is neither [node] encryption_key \
         nor one of [node] previous_keys; start with the key that sealed them"
    )]
    UnknownKey(KeyId),
    #[error(
        "the store holds events sealed with key {0}, and [node] encryption_key is not set; \
         start with the key that sealed them"
    )]
    NoKey(KeyId),
    /// The tag does not match: the bytes changed on disk.
    #[error("a sealed value is damaged (its authentication tag does not match)")]
    Damaged,
}

impl SealError {
    /// Whether the configuration, not the data, is at fault: such a value
    /// must be left where it is, never set aside as damage.
    pub fn is_key_problem(&self) -> bool {
        !matches!(self, SealError::Damaged)
    }
}

struct Key {
    id: KeyId,
    aead: LessSafeKey,
}

/// The keys a node seals and opens with; without any, values are written
/// and read plain.
pub struct Keys {
    current: Option<Key>,
    previous: Vec<Key>,
    rng: SystemRandom,
}

impl Keys {
    pub fn new(current: Option<&[u8; KEY_BYTES]>, previous: &[[u8; KEY_BYTES]]) -> Self {
        Self {
            current: current.map(key),
            previous: previous.iter().map(key).collect(),
            rng: SystemRandom::new(),
        }
    }

    /// The keys of `[node] encryption_key` and `previous_keys`.
    pub fn from_config(cfg: &crate::config::NodeConfig) -> Result<Self, String> {
        let current = match &cfg.encryption_key {
            Some(r) => Some(decode_key(r.resolve()?.expose()).map_err(|e| format!("{r}: {e}"))?),
            None => None,
        };
        let mut previous = Vec::with_capacity(cfg.previous_keys.len());
        for r in &cfg.previous_keys {
            previous.push(decode_key(r.resolve()?.expose()).map_err(|e| format!("{r}: {e}"))?);
        }
        Ok(Self::new(current.as_ref(), &previous))
    }

    /// The id of the key new values are sealed with, if any.
    pub fn current(&self) -> Option<KeyId> {
        self.current.as_ref().map(|k| k.id)
    }

    pub fn previous(&self) -> Vec<KeyId> {
        self.previous.iter().map(|k| k.id).collect()
    }

    /// `plain` sealed with the current key; `plain` itself when there is none.
    pub fn seal(&self, plain: Vec<u8>) -> Vec<u8> {
        let Some(key) = &self.current else {
            return plain;
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the operating system's random source works");
        let mut out = Vec::with_capacity(HEADER + plain.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&key.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        let (header, body) = out.split_at_mut(HEADER);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&header[..MAGIC.len() + KEY_ID]),
                body,
            )
            .expect("a value under 256 GiB seals");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The plain bytes of a stored value (opened in place; a plain value
    /// comes back as it is).
    pub fn open(&self, mut stored: Vec<u8>) -> Result<Vec<u8>, SealError> {
        let Some(id) = sealed_with(&stored) else {
            return Ok(stored);
        };
        let key = self.key(id)?;
        let len = {
            let (header, body) = stored.split_at_mut(HEADER);
            let nonce = Nonce::try_assume_unique_for_key(&header[MAGIC.len() + KEY_ID..])
                .map_err(|_| SealError::Damaged)?;
            let aad = Aad::from(&header[..MAGIC.len() + KEY_ID]);
            key.aead
                .open_in_place(nonce, aad, body)
                .map_err(|_| SealError::Damaged)?
                .len()
        };
        stored.truncate(HEADER + len);
        stored.drain(..HEADER);
        Ok(stored)
    }

    /// Whether a stored value can be opened with these keys, by its key id
    /// only (no decryption): the check a start makes.
    pub fn check(&self, stored: &[u8]) -> Result<(), SealError> {
        match sealed_with(stored) {
            Some(id) => self.key(id).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Whether a stored value is not what this node writes now: sealed
    /// with a previous key, or plain while a key is set.
    pub fn is_older(&self, stored: &[u8]) -> bool {
        self.current.is_some() && sealed_with(stored) != self.current()
    }

    fn key(&self, id: KeyId) -> Result<&Key, SealError> {
        let mut all = self.current.iter().chain(&self.previous);
        match all.find(|k| k.id == id) {
            Some(k) => Ok(k),
            None if self.current.is_none() => Err(SealError::NoKey(id)),
            None => Err(SealError::UnknownKey(id)),
        }
    }
}

/// The key id of a sealed value; `None` for a plain one.
fn sealed_with(stored: &[u8]) -> Option<KeyId> {
    if stored.len() < HEADER + TAG || !stored.starts_with(MAGIC) {
        return None;
    }
    let id = stored[MAGIC.len()..MAGIC.len() + KEY_ID]
        .try_into()
        .expect("4 bytes");
    Some(KeyId(id))
}

fn key(bytes: &[u8; KEY_BYTES]) -> Key {
    Key {
        id: key_id(bytes),
        aead: LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("a 32-byte key fits ChaCha20"),
        ),
    }
}

/// The id of a key: the first bytes of a SHA-256 over a label and the key.
pub fn key_id(bytes: &[u8; KEY_BYTES]) -> KeyId {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"jetedge encryption key id\0");
    ctx.update(bytes);
    let digest = ctx.finish();
    KeyId(digest.as_ref()[..KEY_ID].try_into().expect("4 bytes"))
}

/// A key from its base64 text (`openssl rand -base64 32`).
pub fn decode_key(text: &str) -> Result<[u8; KEY_BYTES], String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| "not base64 (make a key with `openssl rand -base64 32`)".to_string())?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "decodes to {} bytes, not {KEY_BYTES} (make a key with `openssl rand -base64 32`)",
            b.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [7; 32];
    const B: [u8; 32] = [9; 32];

    #[test]
    fn sealed_values_open_hide_their_bytes_and_refuse_damage() {
        let keys = Keys::new(Some(&A), &[]);
        let plain = b"card 4111 1111 1111 1111".to_vec();
        let sealed = keys.seal(plain.clone());
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(4).any(|w| w == b"4111"));
        assert_ne!(
            keys.seal(plain.clone()),
            sealed,
            "each seal takes a fresh nonce"
        );
        assert_eq!(keys.open(sealed.clone()), Ok(plain.clone()));
        for at in [5, HEADER + 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(keys.open(bad).is_err(), "a flipped byte at {at} is caught");
        }
        // A plain value passes through either way.
        assert_eq!(keys.open(plain.clone()), Ok(plain.clone()));
        assert_eq!(Keys::new(None, &[]).seal(plain.clone()), plain);
    }

    #[test]
    fn previous_keys_open_and_missing_keys_are_named() {
        let old = Keys::new(Some(&A), &[]).seal(b"x".to_vec());
        let rotated = Keys::new(Some(&B), &[A]);
        assert_eq!(rotated.open(old.clone()), Ok(b"x".to_vec()));
        assert!(rotated.is_older(&old));
        assert!(rotated.is_older(b"\x01plain"));
        assert!(!rotated.is_older(&rotated.seal(b"y".to_vec())));
        assert!(!Keys::new(None, &[]).is_older(b"\x01plain"));
        let id = key_id(&A);
        let err = Keys::new(Some(&B), &[]).open(old.clone()).unwrap_err();
        assert_eq!(err, SealError::UnknownKey(id));
        assert!(err.is_key_problem());
        assert!(err.to_string().contains(&id.to_string()));
        assert_eq!(Keys::new(None, &[]).check(&old), Err(SealError::NoKey(id)));
        assert_eq!(Keys::new(Some(&B), &[A]).check(&old), Ok(()));
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(A);
        assert_eq!(decode_key(&format!("{text}\n")), Ok(A));
        assert!(decode_key("c2hvcnQ=").unwrap_err().contains("5 bytes"));
        assert!(decode_key("not base64!").is_err());
    }
}
