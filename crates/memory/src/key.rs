//! Stream ids as the shard tables keep them: the three parts in one buffer, inline when short.
//!
//! A `StreamId` holds its instance and aggregate id in two separate heap strings. Comparing a
//! looked-up id with a stored one had to load both stored strings, two cache misses per look-up
//! once the store outgrows the CPU caches (and a verify looks a stream up twice). Encoded
//! inline, the stored key sits in the table slot the probe has already loaded.

use otp_sms_core::StreamId;

/// Keys up to this many bytes live inline: an 18-digit instance id, a 12-byte aggregate type
/// and a 36-byte UUID take 82 with their length prefixes.
const INLINE: usize = 94;

/// A stream id encoded as `len(instance) instance len(type) type id`, lengths as 8 bytes
/// little-endian: distinct ids encode to distinct bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl StreamKey {
    pub(crate) fn new(stream: &StreamId) -> Self {
        let parts = [
            stream.instance.as_str().as_bytes(),
            stream.aggregate_type.as_bytes(),
            stream.aggregate_id.as_bytes(),
        ];
        let total = 16 + parts.iter().map(|p| p.len()).sum::<usize>();
        if total <= INLINE {
            let mut bytes = [0u8; INLINE];
            let mut at = 0;
            encode(&parts, |chunk| {
                bytes[at..at + chunk.len()].copy_from_slice(chunk);
                at += chunk.len();
            });
            // `total <= INLINE < 256`.
            StreamKey::Inline {
                len: total as u8,
                bytes,
            }
        } else {
            let mut bytes = Vec::with_capacity(total);
            encode(&parts, |chunk| bytes.extend_from_slice(chunk));
            StreamKey::Heap(bytes.into_boxed_slice())
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            StreamKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            StreamKey::Heap(bytes) => bytes,
        }
    }
}

fn encode(parts: &[&[u8]; 3], mut write: impl FnMut(&[u8])) {
    for part in &parts[..2] {
        write(&(part.len() as u64).to_le_bytes());
        write(part);
    }
    write(parts[2]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use otp_sms_core::InstanceId;

    fn key(instance: &str, kind: &'static str, id: &str) -> StreamKey {
        StreamKey::new(&StreamId::new(
            InstanceId::parse("instance", instance).unwrap(),
            kind,
            id,
        ))
    }

    #[test]
    fn distinct_ids_give_distinct_keys_even_where_concatenations_agree() {
        assert_ne!(
            key("ab", "t", "c").as_bytes(),
            key("a", "t", "bc").as_bytes()
        );
        assert_ne!(
            key("a", "tb", "c").as_bytes(),
            key("a", "t", "bc").as_bytes()
        );
        assert_eq!(key("a", "t", "c"), key("a", "t", "c"));
    }

    #[test]
    fn long_ids_go_to_the_heap_and_compare_the_same() {
        let long = "x".repeat(200);
        let k = key("instance-1", "user.otp_sms", &long);
        assert!(matches!(k, StreamKey::Heap(_)));
        assert_eq!(k, key("instance-1", "user.otp_sms", &long));
        assert_ne!(k, key("instance-2", "user.otp_sms", &long));
        let short = key(
            "312909075211944344",
            "user.otp_sms",
            &uuid::Uuid::now_v7().to_string(),
        );
        assert!(matches!(short, StreamKey::Inline { .. }));
    }
}
