//! What an edge holds, summarised: 256 buckets by hash of key, each the sum of its entries'
//! hashes. 10,000 objects cost 2 KiB; two sides compare bucket by bucket and expand only the
//! buckets that differ.
//!
//! The hash is FNV-1a 64 (stable across builds, platforms and Rust versions, unlike std's
//! `DefaultHasher`), mixed by a 64-bit finaliser so that small changes spread over all bits. A
//! bucket is the wrapping sum of its entries' hashes: independent of order, and updated in O(1)
//! when one entry is added, changed or removed.

use serde::{Deserialize, Serialize};

/// Number of buckets in a digest.
pub const BUCKETS: usize = 256;

/// The summary of a set of (key, version) pairs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u64>", into = "Vec<u64>")]
pub struct Digest {
    buckets: Box<[u64; BUCKETS]>,
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self.buckets.iter().filter(|b| **b != 0).count();
        write!(f, "Digest({used} of {BUCKETS} buckets used)")
    }
}

impl Default for Digest {
    fn default() -> Self {
        Digest {
            buckets: Box::new([0; BUCKETS]),
        }
    }
}

impl TryFrom<Vec<u64>> for Digest {
    type Error = String;
    fn try_from(v: Vec<u64>) -> Result<Self, String> {
        let n = v.len();
        let buckets: Box<[u64; BUCKETS]> = v
            .into_boxed_slice()
            .try_into()
            .map_err(|_| format!("a digest has {BUCKETS} buckets, not {n}"))?;
        Ok(Digest { buckets })
    }
}

impl From<Digest> for Vec<u64> {
    fn from(d: Digest) -> Vec<u64> {
        d.buckets.to_vec()
    }
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            // A separator that cannot occur in UTF-8, so ("ab", "c") and ("a", "bc") differ.
            h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
        }
        for b in *p {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// murmur3's 64-bit finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The bucket a key belongs to.
pub fn bucket_of(key: &str) -> u8 {
    (mix(fnv1a(&[key.as_bytes()])) >> 56) as u8
}

/// An entry's contribution to its bucket. Never 0, so a bucket with entries is never mistaken
/// for an empty one by a single entry.
fn entry_hash(key: &str, version: &str) -> u64 {
    mix(fnv1a(&[key.as_bytes(), version.as_bytes()])) | 1
}

impl Digest {
    /// The digest of a set of entries.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Digest {
        let mut d = Digest::default();
        for (k, v) in entries {
            d.insert(k, v);
        }
        d
    }

    /// Adds an entry (the key must not be present: `remove` its old version first).
    pub fn insert(&mut self, key: &str, version: &str) {
        let b = &mut self.buckets[usize::from(bucket_of(key))];
        *b = b.wrapping_add(entry_hash(key, version));
    }

    /// Removes an entry that was inserted.
    pub fn remove(&mut self, key: &str, version: &str) {
        let b = &mut self.buckets[usize::from(bucket_of(key))];
        *b = b.wrapping_sub(entry_hash(key, version));
    }

    /// The buckets whose contents differ between the two digests, in ascending order.
    pub fn differing(&self, other: &Digest) -> Vec<u8> {
        (0..BUCKETS)
            .filter(|&i| self.buckets[i] != other.buckets[i])
            .map(|i| i as u8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_and_updates_are_incremental() {
        let a = Digest::of([("Device/a/x", "1"), ("Device/a/y", "7")]);
        let b = Digest::of([("Device/a/y", "7"), ("Device/a/x", "1")]);
        assert_eq!(a, b);
        let mut c = a.clone();
        c.remove("Device/a/x", "1");
        c.insert("Device/a/x", "2");
        assert_eq!(c, Digest::of([("Device/a/x", "2"), ("Device/a/y", "7")]));
        assert_eq!(a.differing(&c), vec![bucket_of("Device/a/x")]);
        c.remove("Device/a/x", "2");
        c.remove("Device/a/y", "7");
        assert_eq!(c, Digest::default());
    }

    #[test]
    fn key_and_version_do_not_run_together() {
        assert_ne!(entry_hash("ab", "c"), entry_hash("a", "bc"));
    }

    #[test]
    fn keys_spread_over_the_buckets() {
        let mut counts = [0u32; BUCKETS];
        for i in 0..25_600 {
            counts[usize::from(bucket_of(&format!("Device/site-{}/pump-{i}", i % 7)))] += 1;
        }
        // 100 per bucket on average; a poor hash leaves buckets empty or crowded.
        assert!(
            counts.iter().all(|&c| (50..=160).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn serializes_as_256_numbers_and_refuses_other_lengths() {
        let d = Digest::of([("k", "v")]);
        let json = serde_json::to_string(&d).unwrap();
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        let err = serde_json::from_str::<Digest>("[1,2,3]").unwrap_err();
        assert!(err.to_string().contains("256 buckets, not 3"), "{err}");
    }
}
