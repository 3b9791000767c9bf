//! Keys that protect codes at rest: a keyed hash (HMAC-SHA-256) for checking, and an
//! encryption (AES-256-GCM) for the short trip through the delivery outbox.
//!
//! The host supplies 32-byte master secrets, each under a [`KeyId`]; two independent sub-keys are
//! derived from each with HKDF-SHA-256, so the MAC key and the encryption key never coincide.
//! New codes use the ring's current key; codes made under an older key still check as long as
//! that key stays in the ring, which is how keys rotate.

use std::collections::HashMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::code::VerificationCode;
use crate::ids::RegistrationId;

const MAC_INFO: &[u8] = b"otp-sms/code-mac/v1";
const ENC_INFO: &[u8] = b"otp-sms/code-enc/v1";

/// The name of a key in the ring, recorded next to every hash and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(std::sync::Arc<str>);

impl KeyId {
    /// A key id; any non-secret label such as `2026-11` or `k7`.
    pub fn new(id: impl Into<String>) -> Self {
        Self(std::sync::Arc::from(id.into()))
    }
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The hash or ciphertext names a key that is no longer (or not yet) in the ring.
    #[error("code key `{}` is not in the key ring", .0.as_str())]
    UnknownKey(KeyId),
    /// The ciphertext does not authenticate under its key and binding.
    #[error("sealed code failed to authenticate")]
    Tampered,
}

/// What a code is bound to: a hash or ciphertext made for one registration's n-th code is
/// useless for any other, so copying stored values between registrations gains nothing.
#[derive(Debug, Clone, Copy)]
pub struct CodeBinding<'a> {
    /// The registration the code belongs to.
    pub registration: &'a RegistrationId,
    /// The code's number within the registration (1 for the first code).
    pub number: u32,
}

impl CodeBinding<'_> {
    fn feed(&self, mac: &mut Hmac<Sha256>) {
        let id = self.registration.as_str().as_bytes();
        mac.update(&(id.len() as u64).to_be_bytes());
        mac.update(id);
        mac.update(&self.number.to_be_bytes());
    }

    fn bytes(&self) -> Vec<u8> {
        let id = self.registration.as_str().as_bytes();
        let mut out = Vec::with_capacity(12 + id.len());
        out.extend_from_slice(&(id.len() as u64).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&self.number.to_be_bytes());
        out
    }
}

/// One key of the ring: derived MAC and encryption keys. `Debug` shows only the id.
#[derive(Clone)]
pub struct CodeKey {
    id: KeyId,
    mac: Hmac<Sha256>,
    aead: Aes256Gcm,
}

impl CodeKey {
    /// Derives the key `id` from a 32-byte master secret (which the caller should wipe after).
    pub fn new(id: KeyId, master: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, master);
        let mut mac_key = Zeroizing::new([0u8; 32]);
        let mut enc_key = Zeroizing::new([0u8; 32]);
        hk.expand(MAC_INFO, &mut mac_key[..])
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        hk.expand(ENC_INFO, &mut enc_key[..])
            .expect("32 bytes is a valid HKDF-SHA-256 output length");
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&mac_key[..])
            .expect("HMAC takes keys of any length");
        let aead = Aes256Gcm::new_from_slice(&enc_key[..]).expect("AES-256 key is 32 bytes");
        Self { id, mac, aead }
    }

    /// This key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    fn tag(&self, binding: CodeBinding<'_>, code: &VerificationCode) -> [u8; 32] {
        // Cloning the keyed state skips re-hashing the key for every code.
        let mut mac = self.mac.clone();
        binding.feed(&mut mac);
        mac.update(code.expose().as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys a host supplies: one current key for new codes and older keys still accepted.
///
/// ```
/// use otp_sms_core::{CodeKey, CodeKeyRing, KeyId};
/// let ring = CodeKeyRing::new(CodeKey::new(KeyId::new("2026-11"), &[7u8; 32]))
///     .with_previous(CodeKey::new(KeyId::new("2026-10"), &[6u8; 32]));
/// assert_eq!(ring.current().id().as_str(), "2026-11");
/// ```
#[derive(Debug, Clone)]
pub struct CodeKeyRing {
    current: CodeKey,
    previous: HashMap<KeyId, CodeKey>,
}

impl CodeKeyRing {
    /// A ring whose current key is `current`.
    pub fn new(current: CodeKey) -> Self {
        Self {
            current,
            previous: HashMap::new(),
        }
    }

    /// Adds a key that is no longer used for new codes but still checks and opens old ones.
    /// A key with the current key's id is ignored.
    pub fn with_previous(mut self, key: CodeKey) -> Self {
        if key.id != self.current.id {
            self.previous.insert(key.id.clone(), key);
        }
        self
    }

    /// The key new codes are made under.
    pub fn current(&self) -> &CodeKey {
        &self.current
    }

    fn get(&self, id: &KeyId) -> Result<&CodeKey, KeyError> {
        // Almost every hash is under the current key: no map lookup then.
        if *id == self.current.id {
            return Ok(&self.current);
        }
        self.previous
            .get(id)
            .ok_or_else(|| KeyError::UnknownKey(id.clone()))
    }

    /// The keyed hash the event log keeps instead of the code.
    pub fn hash(&self, binding: CodeBinding<'_>, code: &VerificationCode) -> CodeHash {
        let key = self.current();
        CodeHash {
            key_id: key.id.clone(),
            mac: key.tag(binding, code),
        }
    }

    /// Whether `code` is the one `hash` was made from, compared in constant time.
    pub fn matches(
        &self,
        binding: CodeBinding<'_>,
        code: &VerificationCode,
        hash: &CodeHash,
    ) -> Result<bool, KeyError> {
        let key = self.get(&hash.key_id)?;
        let tag = key.tag(binding, code);
        Ok(bool::from(tag.ct_eq(&hash.mac)))
    }

    /// Encrypts the code for the delivery outbox under the current key, with a random nonce.
    pub fn seal<R: RngCore + CryptoRng + ?Sized>(
        &self,
        binding: CodeBinding<'_>,
        code: &VerificationCode,
        rng: &mut R,
    ) -> SealedCode {
        let key = self.current();
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let aad = binding.bytes();
        let ciphertext = key
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: code.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        SealedCode {
            key_id: key.id.clone(),
            nonce,
            ciphertext,
        }
    }

    /// Decrypts a sealed code; fails if the key is gone or anything was altered.
    pub fn open(
        &self,
        binding: CodeBinding<'_>,
        sealed: &SealedCode,
    ) -> Result<VerificationCode, KeyError> {
        let key = self.get(&sealed.key_id)?;
        let aad = binding.bytes();
        let plain = Zeroizing::new(
            key.aead
                .decrypt(
                    Nonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| KeyError::Tampered)?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| KeyError::Tampered)?;
        VerificationCode::from_input(text.to_owned()).map_err(|_| KeyError::Tampered)
    }
}

/// The keyed hash of a code (HMAC-SHA-256), with the id of the key that made it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeHash {
    /// The key the hash was made under.
    pub key_id: KeyId,
    /// The 32-byte tag.
    #[serde(with = "b64_array")]
    pub mac: [u8; 32],
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeHash")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A code encrypted with AES-256-GCM for the delivery outbox. `Debug` shows only the key id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedCode {
    /// The key the code was encrypted under.
    pub key_id: KeyId,
    /// The 96-bit random nonce.
    #[serde(with = "b64_array")]
    pub nonce: [u8; 12],
    /// Ciphertext and 16-byte tag.
    #[serde(with = "b64_vec")]
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCode")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

mod b64_array {
    use super::*;
    use serde::{de::Error as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = B64.decode(text.as_bytes()).map_err(D::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| D::Error::custom(format!("expected {N} bytes")))
    }
}

mod b64_vec {
    use super::*;
    use serde::{de::Error as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        B64.decode(text.as_bytes()).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn ring() -> CodeKeyRing {
        CodeKeyRing::new(CodeKey::new(KeyId::new("k2"), &[2; 32]))
            .with_previous(CodeKey::new(KeyId::new("k1"), &[1; 32]))
    }

    fn code(s: &str) -> VerificationCode {
        VerificationCode::from_input(s).unwrap()
    }

    #[test]
    fn hash_matches_only_the_same_code_and_binding() {
        let ring = ring();
        let reg = RegistrationId::parse("otp_sms_id", "r1").unwrap();
        let other = RegistrationId::parse("otp_sms_id", "r2").unwrap();
        let b = CodeBinding {
            registration: &reg,
            number: 1,
        };
        let hash = ring.hash(b, &code("12345678"));
        assert!(ring.matches(b, &code("12345678"), &hash).unwrap());
        assert!(!ring.matches(b, &code("12345679"), &hash).unwrap());
        let b2 = CodeBinding { number: 2, ..b };
        assert!(!ring.matches(b2, &code("12345678"), &hash).unwrap());
        let b3 = CodeBinding {
            registration: &other,
            number: 1,
        };
        assert!(!ring.matches(b3, &code("12345678"), &hash).unwrap());
    }

    #[test]
    fn rotated_keys_still_check_and_unknown_keys_are_an_error() {
        let reg = RegistrationId::parse("otp_sms_id", "r1").unwrap();
        let b = CodeBinding {
            registration: &reg,
            number: 1,
        };
        let old = CodeKeyRing::new(CodeKey::new(KeyId::new("k1"), &[1; 32]));
        let hash = old.hash(b, &code("12345678"));
        assert!(ring().matches(b, &code("12345678"), &hash).unwrap());
        let fresh = CodeKeyRing::new(CodeKey::new(KeyId::new("k3"), &[3; 32]));
        assert_eq!(
            fresh.matches(b, &code("12345678"), &hash),
            Err(KeyError::UnknownKey(KeyId::new("k1")))
        );
    }

    #[test]
    fn sealed_codes_open_only_with_their_binding_and_untampered() {
        let ring = ring();
        let reg = RegistrationId::parse("otp_sms_id", "r1").unwrap();
        let b = CodeBinding {
            registration: &reg,
            number: 1,
        };
        let sealed = ring.seal(b, &code("87654321"), &mut OsRng);
        assert_eq!(ring.open(b, &sealed).unwrap().expose(), "87654321");
        let b2 = CodeBinding { number: 2, ..b };
        assert_eq!(ring.open(b2, &sealed), Err(KeyError::Tampered));
        let mut bad = sealed.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(ring.open(b, &bad), Err(KeyError::Tampered));
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("87654321"));
        let back: SealedCode = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sealed);
    }

    #[test]
    fn debug_shows_no_key_material() {
        let ring = ring();
        let debug = format!("{ring:?}");
        assert!(debug.contains("k2"));
        assert!(!debug.contains("mac:") && !debug.contains("aead"));
    }
}
