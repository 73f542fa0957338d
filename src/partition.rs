//! Partitions: one credential's share of the quotas, a keyed hash of the header that carries it.
//! A leaf: it imports nothing of the crate.

use std::fmt;
use std::hash::BuildHasher;

use http::{HeaderMap, HeaderName};

/// One credential's share of the quotas: a keyed hash of a header's value (or of the partition
/// key a server names, IETF `pk`, which may be derived from one).
///
/// The key is random per process (or the fleet's secret, with a shared store) and never shown,
/// so the tag cannot be recomputed from a guess at the credential nor turned back into it;
/// the credential itself is never kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Partition(u64);

impl Partition {
    /// The partition a server names with an IETF `RateLimit` `pk` parameter: the key's bytes
    /// hashed with a secret key random per process, as credentials are. (Server-named quotas
    /// are not shared across processes, so no fleet-wide key is needed.)
    pub(crate) fn of_server_key(bytes: &[u8]) -> Partition {
        static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
        keyed_hash(KEY.get_or_init(process_key), [bytes])
    }

    /// The partition's part of record and store keys: all 64 bits of the hash, so that two
    /// credentials share a record only if their hashes collide in full.
    pub(crate) fn key(&self) -> String {
        format!("p{:016x}", self.0)
    }

    /// The partition part of a key, `-` for requests that are not partitioned.
    pub(crate) fn key_of(partition: Option<Partition>) -> String {
        partition.map_or_else(|| "-".to_string(), |p| p.key())
    }
}

impl fmt::Display for Partition {
    /// The tag shown in snapshots and events: 32 of the hash's 64 bits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{:08x}", self.0 >> 32)
    }
}

/// Hashes the partitioning header's value with a secret key (see [`keyed_hash`]), random per
/// process, or the fleet's secret when a shared store is in use, so that one credential maps
/// to one shared quota in every process. Its `Debug` shows the header, never the key.
#[derive(Clone)]
pub(crate) struct Partitioner {
    header: HeaderName,
    key: [u8; 32],
}

impl fmt::Debug for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitioner")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Partitioner {
    /// Keyed at random for this process.
    pub(crate) fn new(header: HeaderName) -> Self {
        Partitioner {
            header,
            key: process_key(),
        }
    }

    /// The header it reads.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The key, for tests that check it is never shown.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &[u8; 32] {
        &self.key
    }

    /// Keyed with a secret the fleet shares.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_secret(header: HeaderName, secret: &[u8; 32]) -> Self {
        Partitioner {
            header,
            key: *secret,
        }
    }

    /// The partition of a request; `None` when it does not carry the header (those share one).
    /// Every value of a repeated header counts, in order.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<Partition> {
        let mut values = headers.get_all(&self.header).iter().peekable();
        values.peek()?;
        Some(keyed_hash(&self.key, values.map(|v| v.as_bytes())))
    }
}

/// Keyed BLAKE3 (a keyed pseudo-random function: without the key, no one can tell which
/// credential a partition stands for, even by hashing guesses) of `values`, in order; the
/// partition is the first 64 bits of the hash.
fn keyed_hash<'a>(key: &[u8; 32], values: impl IntoIterator<Item = &'a [u8]>) -> Partition {
    let mut hasher = blake3::Hasher::new_keyed(key);
    for value in values {
        // each value after its length: a value may hold any byte from 0x80 up (obs-text), so
        // with a separator byte, `["a\xff", "b"]` and `["a", "\xffb"]` would hash alike
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    Partition(u64::from_le_bytes(first))
}

/// A key random per process: from the operating system's random source, or, should that
/// fail, from the random seeds `std` draws for its hash maps.
fn process_key() -> [u8; 32] {
    use rand::TryRngCore;
    let mut key = [0u8; 32];
    if rand::rngs::OsRng.try_fill_bytes(&mut key).is_err() {
        let random = std::hash::RandomState::new();
        for (word, chunk) in key.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&random.hash_one(word).to_le_bytes());
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_hash_values_and_never_show_them() {
        let p = Partitioner::new(HeaderName::from_static("authorization"));
        let mut a = HeaderMap::new();
        a.insert("authorization", "Bearer secret-a".parse().expect("valid"));
        let mut b = HeaderMap::new();
        b.insert("authorization", "Bearer secret-b".parse().expect("valid"));
        let (pa, pb) = (p.of(&a).expect("has it"), p.of(&b).expect("has it"));
        assert_ne!(pa, pb, "distinct credentials, distinct partitions");
        assert_eq!(p.of(&a), Some(pa), "stable within the process");
        assert_eq!(
            p.of(&HeaderMap::new()),
            None,
            "without it: the shared partition"
        );
        let tag = pa.to_string();
        assert!(!tag.contains("secret"), "{tag}");
        assert_eq!(tag.len(), 9);
        let other = Partitioner::new(HeaderName::from_static("authorization"));
        assert_ne!(other.of(&a), Some(pa), "keyed: another key, another tag");
    }

    #[test]
    fn repeated_values_keep_their_boundaries() {
        let p = Partitioner::new(HeaderName::from_static("x-api-key"));
        let of = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    "x-api-key",
                    http::HeaderValue::from_bytes(v).expect("valid"),
                );
            }
            p.of(&h)
        };
        assert_ne!(of(&[b"a\xff", b"b"]), of(&[b"a", b"\xffb"]));
        assert_ne!(of(&[b"ab"]), of(&[b"a", b"b"]));
    }

    #[test]
    fn huge_and_non_utf8_values_partition_without_trouble() {
        let p = Partitioner::new(HeaderName::from_static("x-api-key"));
        let mut h = HeaderMap::new();
        let huge = "k".repeat(64 * 1024);
        h.insert("x-api-key", huge.parse().expect("valid"));
        assert!(p.of(&h).is_some());
        let mut h = HeaderMap::new();
        h.insert(
            "x-api-key",
            http::HeaderValue::from_bytes(&[0xff, 0xfe, 0x80]).expect("obs-text is allowed"),
        );
        assert!(p.of(&h).is_some());
    }
}
