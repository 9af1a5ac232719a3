//! Small secrets (BMC passwords) kept secret in transit and at rest, with RustCrypto's
//! ChaCha20-Poly1305, X25519 and HKDF-SHA256:
//!
//! - [`seal`] / [`SealKey::open`]: a sealed box to a service's X25519 public key. The sender
//!   makes an ephemeral key pair; the box key is HKDF-SHA256 of the shared secret, salted with
//!   both public keys, under a domain label; the box is `x25519:<hex of ephemeral public key ‖
//!   ChaCha20-Poly1305 ciphertext>`. Whoever sees the box on the bus learns nothing; only the
//!   holder of the secret key opens it.
//! - [`AtRest`]: ChaCha20-Poly1305 with a random nonce under a key derived from a service's own
//!   secret (HKDF-SHA256 with a domain label), bound to a context (the row's id) as associated
//!   data, so a ciphertext copied to another row does not open.
//!
//! Keys are derived from a secret the caller already keeps; nothing here stores anything.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

const SEALED_PREFIX: &str = "x25519:";
const SEAL_INFO: &[u8] = b"bootfleet sealed box v1";
const NONCE: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealError(pub &'static str);

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SealError {}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn derive32(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
    out
}

fn cipher(key: &[u8; 32]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 takes 32-byte keys"))
}

/// A service's X25519 key pair, derived from its secret.
#[derive(Clone)]
pub struct SealKey(StaticSecret);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey(public {})", self.public_hex())
    }
}

fn box_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let salt = [ephemeral.as_slice(), recipient.as_slice()].concat();
    derive32(&salt, shared, SEAL_INFO)
}

impl SealKey {
    /// The key pair derived from `secret` under `label` (a domain label naming its use).
    pub fn derive(secret: &[u8], label: &str) -> SealKey {
        SealKey(StaticSecret::from(derive32(b"", secret, label.as_bytes())))
    }

    /// The public key, hex (what senders seal to).
    pub fn public_hex(&self) -> String {
        hex(PublicKey::from(&self.0).as_bytes())
    }

    /// Opens a box [`seal`] made for this key.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(unhex)
            .filter(|b| b.len() > 32)
            .ok_or(SealError("not a sealed box (x25519:<hex>)"))?;
        let (eph, ct) = bytes.split_at(32);
        let eph: [u8; 32] = eph.try_into().map_err(|_| SealError("not a sealed box"))?;
        let shared = self.0.diffie_hellman(&PublicKey::from(eph));
        if !shared.was_contributory() {
            return Err(SealError("the box's key is degenerate"));
        }
        let mine = PublicKey::from(&self.0);
        let key = box_key(shared.as_bytes(), &eph, mine.as_bytes());
        cipher(&key)
            .decrypt(&[0u8; NONCE].into(), ct)
            .map_err(|_| SealError("the box does not open with this key"))
    }
}

/// Seals `plaintext` to `public_hex` (a [`SealKey::public_hex`]).
pub fn seal(public_hex: &str, plaintext: &[u8]) -> Result<String, SealError> {
    let recipient: [u8; 32] = unhex(public_hex)
        .and_then(|b| b.try_into().ok())
        .ok_or(SealError("not an X25519 public key (64 hex digits)"))?;
    let mut eph_bytes = [0u8; 32];
    OsRng.fill_bytes(&mut eph_bytes);
    let eph = StaticSecret::from(eph_bytes);
    let eph_public = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&PublicKey::from(recipient));
    if !shared.was_contributory() {
        return Err(SealError("the public key is degenerate"));
    }
    let key = box_key(shared.as_bytes(), eph_public.as_bytes(), &recipient);
    // Every box has its own key (a fresh ephemeral key pair), so a fixed nonce is safe.
    let ct = cipher(&key)
        .encrypt(&[0u8; NONCE].into(), plaintext)
        .map_err(|_| SealError("cannot seal"))?;
    Ok(format!(
        "{SEALED_PREFIX}{}",
        hex(&[eph_public.as_bytes().as_slice(), &ct].concat())
    ))
}

/// AEAD at rest under a key derived from a service's secret.
#[derive(Clone)]
pub struct AtRest([u8; 32]);

impl std::fmt::Debug for AtRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtRest(***)")
    }
}

impl AtRest {
    pub fn derive(secret: &[u8], label: &str) -> AtRest {
        AtRest(derive32(b"", secret, label.as_bytes()))
    }

    /// `hex(nonce ‖ ciphertext)`, bound to `context`.
    pub fn encrypt(&self, plaintext: &[u8], context: &str) -> String {
        let mut nonce = [0u8; NONCE];
        OsRng.fill_bytes(&mut nonce);
        let ct = cipher(&self.0)
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_else(|_| unreachable!("encryption into a Vec does not fail"));
        hex(&[nonce.as_slice(), &ct].concat())
    }

    pub fn decrypt(&self, stored: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let bytes = unhex(stored)
            .filter(|b| b.len() > NONCE)
            .ok_or(SealError("not a stored ciphertext"))?;
        let (nonce, ct) = bytes.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce
            .try_into()
            .map_err(|_| SealError("not a stored ciphertext"))?;
        cipher(&self.0)
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: ct,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError("the stored ciphertext does not open with this key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_box_opens_only_with_its_key() {
        let key = SealKey::derive(b"service secret", "test seal");
        let other = SealKey::derive(b"another secret", "test seal");
        let sealed = seal(&key.public_hex(), b"hunter2").expect("seal");
        assert!(!sealed.contains(&hex(b"hunter2")));
        assert_eq!(key.open(&sealed).as_deref(), Ok(&b"hunter2"[..]));
        assert!(other.open(&sealed).is_err());
        // Two boxes of the same text differ (fresh ephemeral keys).
        assert_ne!(sealed, seal(&key.public_hex(), b"hunter2").expect("seal"));
        // A flipped bit does not open.
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).expect("hex");
        assert!(key.open(&tampered).is_err());
        assert!(seal("00", b"x").is_err());
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn at_rest_is_bound_to_its_context_and_key() {
        let a = AtRest::derive(b"service secret", "test at rest");
        let stored = a.encrypt(b"hunter2", "row-1");
        assert_eq!(a.decrypt(&stored, "row-1").as_deref(), Ok(&b"hunter2"[..]));
        assert!(a.decrypt(&stored, "row-2").is_err());
        assert!(AtRest::derive(b"service secret", "other label")
            .decrypt(&stored, "row-1")
            .is_err());
        assert_ne!(stored, a.encrypt(b"hunter2", "row-1"));
    }
}
