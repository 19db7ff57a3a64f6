//! MinHash signatures and LSH band keys.
//!
//! Each permutation is a multiply-add-shift hash `(a * x + b) >> 32` of the
//! shingle's 64-bit keyed hash, with `a` odd and both drawn from the key.

use crate::hash::{mix, Key};

/// The permutation family of one store.
#[derive(Clone, Debug)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    /// Draws `num_perm` permutations from the key.
    pub fn new(key: &Key, num_perm: usize) -> Self {
        let a = (0..num_perm as u64)
            .map(|i| key.hash_u64(b"perm-a", i) | 1)
            .collect();
        let b = (0..num_perm as u64)
            .map(|i| key.hash_u64(b"perm-b", i))
            .collect();
        MinHasher { a, b }
    }

    /// Number of permutations.
    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// Writes the signature of a set of shingle hashes into `out`.
    /// An empty set leaves every value at `u32::MAX`.
    pub fn signature(&self, shingles: &[u64], out: &mut [u32]) {
        out.fill(u32::MAX);
        for &x in shingles {
            for ((o, &a), &b) in out.iter_mut().zip(&self.a).zip(&self.b) {
                let h = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
                *o = (*o).min(h);
            }
        }
    }
}

/// Share of equal positions: an unbiased estimate of the Jaccard index.
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// Folds the first `bands * rows` signature values into one key per band.
/// Keys are never zero, so zero can mark an empty slot.
pub fn band_keys(sig: &[u32], bands: usize, rows: usize, out: &mut [u32]) {
    for (j, o) in out.iter_mut().enumerate().take(bands) {
        let h = sig[j * rows..(j + 1) * rows]
            .iter()
            .fold(j as u64 + 1, |acc, &v| mix(acc, v as u64));
        *o = (h as u32).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig_of(set: &[u64]) -> Vec<u32> {
        let m = MinHasher::new(&Key::from_secret(b"m"), 256);
        let mut out = vec![0; 256];
        m.signature(set, &mut out);
        out
    }

    #[test]
    fn identical_sets_have_jaccard_one() {
        let s: Vec<u64> = (0..50).map(|i| i * 7919).collect();
        assert_eq!(jaccard(&sig_of(&s), &sig_of(&s)), 1.0);
    }

    #[test]
    fn disjoint_sets_have_jaccard_near_zero() {
        let a: Vec<u64> = (0..200).map(|i| mix(i, 1)).collect();
        let b: Vec<u64> = (0..200).map(|i| mix(i, 2)).collect();
        assert!(jaccard(&sig_of(&a), &sig_of(&b)) < 0.05);
    }

    #[test]
    fn empty_set_stays_at_max() {
        assert!(sig_of(&[]).iter().all(|&v| v == u32::MAX));
    }

    #[test]
    fn band_keys_match_only_when_rows_match() {
        let s1: Vec<u32> = (0..16).collect();
        let mut s2 = s1.clone();
        s2[5] = 99;
        let (mut k1, mut k2) = ([0u32; 4], [0u32; 4]);
        band_keys(&s1, 4, 4, &mut k1);
        band_keys(&s2, 4, 4, &mut k2);
        assert_eq!(k1[0], k2[0]);
        assert_ne!(k1[1], k2[1]);
        assert_eq!(k1[2..], k2[2..]);
        assert!(k1.iter().all(|&k| k != 0));
    }
}
