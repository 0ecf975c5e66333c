//! Which reduce task a key goes to. Two ways:
//!
//! - [`by_hash`]: FNV-1a of the key's bytes, modulo R. The hash is written out (not Rust's
//!   `Hasher`, which is seeded per process), so a key lands in the same partition on every
//!   worker, in every run, on every machine; a map re-run after a crash writes exactly the
//!   partitions the first run wrote.
//! - [`Ranges`]: split points sampled from the input, so reduce task *i* gets keys below those
//!   of task *i + 1*: concatenated in order, the reduce outputs are globally sorted (the sort
//!   job).

use distlab_runtime::hash::fnv1a;

/// The reduce task of `key` among `reduces` (at least 1).
pub fn by_hash(key: &[u8], reduces: u32) -> u32 {
    (fnv1a(key.iter().copied()) % u64::from(reduces.max(1))) as u32
}

/// Key ranges, one per reduce task: task *i* takes the keys `k` with `bounds[i-1] <= k <
/// bounds[i]` (the first from the smallest key, the last to the largest).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ranges {
    bounds: Vec<Vec<u8>>,
}

impl Ranges {
    /// `reduces` ranges of about equal size, from a sample of the keys: the split points are
    /// the sample's quantiles. Duplicate split points (a sample dominated by one key) are kept,
    /// leaving some ranges empty rather than any range ambiguous.
    pub fn from_sample(mut sample: Vec<Vec<u8>>, reduces: u32) -> Self {
        sample.sort();
        let reduces = reduces.max(1) as usize;
        let bounds = if sample.is_empty() {
            Vec::new()
        } else {
            (1..reduces)
                .map(|i| sample[(i * sample.len() / reduces).min(sample.len() - 1)].clone())
                .collect()
        };
        Self { bounds }
    }

    /// Ranges from their split points (as [`Ranges::bounds`] gave them), which must be sorted.
    pub fn from_bounds(bounds: Vec<Vec<u8>>) -> Result<Self, String> {
        if bounds.windows(2).any(|w| w[0] > w[1]) {
            return Err("range split points are not sorted".into());
        }
        Ok(Self { bounds })
    }

    /// The split points: reduce task `i` takes the keys below `bounds[i]`.
    pub fn bounds(&self) -> &[Vec<u8>] {
        &self.bounds
    }

    /// The reduce task of `key`.
    pub fn of(&self, key: &[u8]) -> u32 {
        self.bounds.partition_point(|b| b.as_slice() <= key) as u32
    }

    /// How many reduce tasks the ranges are for.
    pub fn reduces(&self) -> u32 {
        self.bounds.len() as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_partition() {
        // Fixed values: a change to the hash would move every key of a job being re-run.
        assert_eq!(by_hash(b"apple", 10), by_hash(b"apple", 10));
        assert_eq!(by_hash(b"", 7), (0xcbf29ce484222325u64 % 7) as u32);
        assert_eq!(by_hash(b"a", 1), 0);
        let counts = (0..10_000).fold([0u32; 8], |mut counts, i| {
            counts[by_hash(format!("key{i}").as_bytes(), 8) as usize] += 1;
            counts
        });
        assert!(
            counts.iter().all(|c| (1000..1500).contains(c)),
            "{counts:?}"
        );
    }

    #[test]
    fn ranges_from_a_sample_keep_keys_in_order_across_partitions() {
        let sample: Vec<Vec<u8>> = (0..100u32)
            .rev()
            .map(|i| format!("{i:03}").into_bytes())
            .collect();
        let ranges = Ranges::from_sample(sample, 4);
        assert_eq!(ranges.reduces(), 4);
        let parts: Vec<u32> = (0..100u32)
            .map(|i| ranges.of(format!("{i:03}").as_bytes()))
            .collect();
        assert!(
            parts.windows(2).all(|w| w[0] <= w[1]),
            "monotone: {parts:?}"
        );
        for p in 0..4 {
            assert_eq!(parts.iter().filter(|x| **x == p).count(), 25);
        }
        assert_eq!(ranges.of(b""), 0);
        assert_eq!(ranges.of(b"zzz"), 3);
        assert_eq!(Ranges::from_sample(Vec::new(), 3).of(b"x"), 0);
    }
}
