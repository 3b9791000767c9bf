//! The code keys: from a file only its owner may read, from the environment, or (in
//! development only) generated.

use otp_sms_core::{CodeKey, CodeKeyRing, KeyId};
use zeroize::Zeroizing;

use crate::{config, Args, StartError};

/// Parses keys from `KEY_ID HEX64` lines or `KEY_ID:HEX64` items; the first is current.
pub fn parse_keys(text: &str) -> Result<CodeKeyRing, StartError> {
    let mut ring: Option<CodeKeyRing> = None;
    for item in text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (id, hex_key) = item
            .split_once([' ', ':', '\t'])
            .ok_or_else(|| StartError::Keys("expected `KEY_ID HEX64`".into()))?;
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim())
                .map_err(|_| StartError::Keys(format!("key `{id}` is not hex")))?,
        );
        let master: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                StartError::Keys(format!("key `{id}` must be 32 bytes (64 hex digits)"))
            })?);
        let key = CodeKey::new(KeyId::new(id.trim()), &master);
        ring = Some(match ring {
            None => CodeKeyRing::new(key),
            Some(r) => r.with_previous(key),
        });
    }
    ring.ok_or_else(|| StartError::Keys("no key given".into()))
}

/// The keys `args` name: `--key-file`, else `--keys`, else (with `--dev`) a generated one.
pub(crate) fn load_keys(args: &Args) -> Result<CodeKeyRing, StartError> {
    if let Some(path) = &args.key_file {
        let text = config::read_private_file(path)
            .map_err(|e| StartError::Keys(format!("--key-file {e}")))?;
        return parse_keys(&text);
    }
    if let Some(keys) = &args.keys {
        return parse_keys(keys);
    }
    if args.dev {
        tracing::warn!("DEVELOPMENT MODE: using a generated code key; codes of this run cannot be checked after a restart");
        let mut master = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut master[..]);
        return Ok(CodeKeyRing::new(CodeKey::new(KeyId::new("dev"), &master)));
    }
    Err(StartError::Keys(
        "no code key: pass --key-file or --keys (OTP_SMS_KEY_FILE / OTP_SMS_KEYS), or --dev for a generated development key".into(),
    ))
}
