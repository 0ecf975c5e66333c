//! A deterministic text corpus for benchmarks and demos: lines of words drawn from a fixed
//! vocabulary with Zipf's law (exponent 1, as in natural text: the most common word about
//! twice as frequent as the second), so a word count has a long tail and a few very hot keys.
//! The same seed and size give the same bytes on every machine.

use std::io::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// The vocabulary: `size` distinct lowercase words of 2 to 9 letters, the same for a seed.
fn vocabulary(size: usize, rng: &mut SmallRng) -> Vec<String> {
    let mut words = std::collections::BTreeSet::new();
    let mut ordered = Vec::with_capacity(size);
    while ordered.len() < size {
        let len = rng.random_range(2..=9);
        let word: String = (0..len)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect();
        if words.insert(word.clone()) {
            ordered.push(word);
        }
    }
    ordered
}

/// Writes at least `bytes` bytes of text (whole lines of 4 to 16 words) to `out`; returns how
/// many were written.
pub fn write(
    out: &mut impl Write,
    bytes: u64,
    vocabulary_size: usize,
    seed: u64,
) -> std::io::Result<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let words = vocabulary(vocabulary_size.max(1), &mut rng);
    let zipf = Zipf::new(words.len() as f64, 1.0).expect("a vocabulary of at least one word");
    let mut written = 0u64;
    let mut line = String::with_capacity(128);
    while written < bytes {
        line.clear();
        for i in 0..rng.random_range(4..=16) {
            if i > 0 {
                line.push(' ');
            }
            let rank = zipf.sample(&mut rng) as usize;
            line.push_str(&words[rank.clamp(1, words.len()) - 1]);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn the_same_seed_gives_the_same_text_with_a_zipf_tail() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        assert!(write(&mut a, 200_000, 5000, 7).unwrap() >= 200_000);
        write(&mut b, 200_000, 5000, 7).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        write(&mut c, 200_000, 5000, 8).unwrap();
        assert_ne!(a, c, "another seed, another text");
        let text = String::from_utf8(a).unwrap();
        assert!(text.ends_with('\n'));
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for word in text.split_whitespace() {
            *counts.entry(word).or_default() += 1;
        }
        let mut by_count: Vec<u64> = counts.values().copied().collect();
        by_count.sort_unstable_by(|x, y| y.cmp(x));
        // Zipf with exponent 1: the top word about twice the second, far above the median.
        let ratio = by_count[0] as f64 / by_count[1] as f64;
        assert!((1.5..2.8).contains(&ratio), "{ratio}");
        assert!(by_count[0] > 50 * by_count[by_count.len() / 2]);
    }
}
