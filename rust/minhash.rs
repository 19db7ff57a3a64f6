//! MinHash signatures by one permutation hashing (Li, Owen and Zhang, 2012)
//! with rotation densification (Shrivastava and Li, 2014), and LSH band keys.
//!
//! Each shingle's keyed 64-bit hash picks one of `k` bins with its high half
//! and competes for that bin's minimum with its low half: one hash per
//! shingle instead of `k`. A raw signature (empty bins at `u32::MAX`) is the
//! exact sketch of a set, so the elementwise minimum of two raw signatures is
//! the raw signature of their union. Before two sets are compared, empty bins
//! borrow a value from the nearest filled bin in a keyed direction, offset by
//! the distance, which keeps the Jaccard estimate consistent across sets.

use crate::hash::{mix, Key};

/// Marks an empty bin in a raw signature.
pub const EMPTY: u32 = u32::MAX;

/// The bin layout of one store.
#[derive(Clone, Debug)]
pub struct MinHasher {
    bins: usize,
    /// Per bin: borrow from the right (all ones) or the left (zero) when empty.
    right: Vec<u32>,
    /// Per distance `d`: the keyed offset XORed into a value borrowed from
    /// `d` bins away (Shrivastava and Li add `d` times a constant; a keyed
    /// offset per distance needs no multiply and cannot be predicted).
    offset: Vec<u32>,
    /// `offset` backwards, so the bins of a run read both tables forwards.
    offset_rev: Vec<u32>,
}

impl MinHasher {
    /// `num_perm` bins, with densification directions drawn from the key.
    pub fn new(key: &Key, num_perm: usize) -> Self {
        let right = (0..num_perm as u64)
            .map(|i| 0u32.wrapping_sub((key.hash_u64(b"dens-dir", i) & 1) as u32))
            .collect();
        let offset: Vec<u32> = (0..num_perm as u64)
            .map(|d| key.hash_u64(b"dens-offset", d) as u32)
            .collect();
        let offset_rev = offset.iter().rev().copied().collect();
        MinHasher {
            bins: num_perm,
            right,
            offset,
            offset_rev,
        }
    }

    /// Number of bins (the signature length).
    pub fn num_perm(&self) -> usize {
        self.bins
    }

    /// Writes the raw signature of a set of shingle hashes into `out`.
    pub fn signature(&self, shingles: &[u64], out: &mut [u32]) {
        out.fill(EMPTY);
        let k = self.bins as u64;
        for &x in shingles {
            let bin = (((x >> 32) * k) >> 32) as usize;
            let v = (x as u32).min(EMPTY - 1);
            let o = &mut out[bin];
            *o = (*o).min(v);
        }
    }

    /// Fills the empty bins of a raw signature. A set with no shingles stays
    /// all empty. `out` may be shorter than `raw`: then only that prefix is
    /// filled (band keys need only their bins). `scratch` is scratch space.
    ///
    /// An empty bin `i` borrows the value `v` of the nearest filled bin `d`
    /// bins away in its direction (circular) and takes `v ^ offset[d]`. For
    /// one distance that is a bijection of `v`, so two sets agree on a
    /// filled-in bin exactly when they agree on its donor at the same
    /// distance (up to the rare clamp below `EMPTY`).
    pub fn densify(&self, raw: &[u32], out: &mut [u32], scratch: &mut Vec<u32>) {
        let k = raw.len();
        out.copy_from_slice(&raw[..out.len()]);
        // The filled bins, in order, without a branch per bin.
        scratch.clear();
        scratch.resize(k, 0);
        let mut m = 0;
        for (i, &v) in raw.iter().enumerate() {
            scratch[m] = i as u32;
            m += (v != EMPTY) as usize;
        }
        if m == 0 || m == k {
            // no shingles, or a long prompt that fills every bin
            return;
        }
        let filled = &scratch[..m];
        let (first, last) = (filled[0] as usize, filled[m - 1] as usize);
        // Each run of empty bins lies between two filled bins p < i < q
        // (around the end: q counts from k, p from -k), so along the run
        // both distances step by one and the fill vectorizes.
        for w in filled.windows(2) {
            let (p, q) = (w[0] as usize, w[1] as usize);
            self.fill_run(raw, out, p + 1, q, raw[p], p + 1 - p, raw[q], q - (p + 1));
        }
        self.fill_run(
            raw,
            out,
            last + 1,
            k,
            raw[last],
            1,
            raw[first],
            first + k - last - 1,
        );
        self.fill_run(raw, out, 0, first, raw[last], k - last, raw[first], first);
    }

    /// Fills the empty bins `lo..hi` (clipped to `out`), the first of which
    /// is `behind` bins after the left donor `left` and `ahead` bins before
    /// the right donor `right`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn fill_run(
        &self,
        raw: &[u32],
        out: &mut [u32],
        lo: usize,
        hi: usize,
        left: u32,
        behind: usize,
        right: u32,
        ahead: usize,
    ) {
        let hi = hi.min(out.len());
        if lo >= hi {
            return;
        }
        debug_assert!(raw[lo..hi].iter().all(|&v| v == EMPTY));
        let n = hi - lo;
        let k = raw.len();
        let from_left = &self.offset[behind..behind + n];
        // offset[ahead - t] sits at offset_rev[k - 1 - ahead + t]
        let from_right = &self.offset_rev[k - 1 - ahead..k - 1 - ahead + n];
        for (((o, &b), &a), &dir) in out[lo..hi]
            .iter_mut()
            .zip(from_left)
            .zip(from_right)
            .zip(&self.right[lo..hi])
        {
            let v = ((right ^ a) & dir) | ((left ^ b) & !dir);
            *o = v.min(EMPTY - 1);
        }
    }
}

/// Share of equal positions of two densified signatures: an estimate of
/// the Jaccard index.
pub fn jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// Folds the first `bands * rows` values of a raw signature into one key
/// per band. A band whose bins are all empty gets no key (zero), so short
/// prompts do not match on empty bins alone; other keys are never zero.
pub fn band_keys(sig: &[u32], bands: usize, rows: usize, out: &mut [u32]) {
    for (j, o) in out.iter_mut().enumerate().take(bands) {
        let band = &sig[j * rows..(j + 1) * rows];
        if band.iter().all(|&v| v == EMPTY) {
            *o = 0;
            continue;
        }
        let h = band.iter().fold(j as u64 + 1, |acc, &v| mix(acc, v as u64));
        *o = (h as u32).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig_of(set: &[u64]) -> Vec<u32> {
        let m = MinHasher::new(&Key::from_secret(b"m"), 256);
        let (mut raw, mut out) = (vec![0; 256], vec![0; 256]);
        m.signature(set, &mut raw);
        m.densify(&raw, &mut out, &mut Vec::new());
        out
    }

    #[test]
    fn identical_sets_have_jaccard_one() {
        let s: Vec<u64> = (0..50).map(|i| mix(i, 9)).collect();
        assert_eq!(jaccard(&sig_of(&s), &sig_of(&s)), 1.0);
    }

    #[test]
    fn disjoint_sets_have_jaccard_near_zero() {
        let a: Vec<u64> = (0..200).map(|i| mix(i, 1)).collect();
        let b: Vec<u64> = (0..200).map(|i| mix(i, 2)).collect();
        assert!(jaccard(&sig_of(&a), &sig_of(&b)) < 0.05);
    }

    #[test]
    fn empty_set_stays_empty() {
        assert!(sig_of(&[]).iter().all(|&v| v == EMPTY));
    }

    #[test]
    fn densified_bins_are_all_filled() {
        let s: Vec<u64> = (0..3).map(|i| mix(i, 4)).collect();
        assert!(sig_of(&s).iter().all(|&v| v != EMPTY));
    }

    #[test]
    fn a_prefix_densifies_like_the_whole() {
        let m = MinHasher::new(&Key::from_secret(b"p"), 128);
        let s: Vec<u64> = (0..5).map(|i| mix(i, 8)).collect();
        let (mut raw, mut whole, mut head) = (vec![0; 128], vec![0; 128], vec![0; 32]);
        m.signature(&s, &mut raw);
        m.densify(&raw, &mut whole, &mut Vec::new());
        m.densify(&raw, &mut head, &mut Vec::new());
        assert_eq!(&whole[..32], &head[..]);
    }

    /// The definition: for each empty bin, search the sorted filled bins.
    fn densify_by_search(m: &MinHasher, raw: &[u32], out: &mut [u32]) {
        let k = raw.len();
        let filled: Vec<usize> = (0..k).filter(|&i| raw[i] != EMPTY).collect();
        out.copy_from_slice(&raw[..out.len()]);
        if filled.is_empty() {
            return;
        }
        for (i, o) in out.iter_mut().enumerate().filter(|(i, _)| raw[*i] == EMPTY) {
            let at = filled.partition_point(|&f| f < i);
            let j = if m.right[i] != 0 {
                *filled.get(at).unwrap_or(&filled[0])
            } else if at == 0 {
                filled[filled.len() - 1]
            } else {
                filled[at - 1]
            };
            let d = if m.right[i] != 0 {
                (j + k - i) % k
            } else {
                (i + k - j) % k
            };
            *o = (raw[j] ^ m.offset[d]).min(EMPTY - 1);
        }
    }

    #[test]
    fn densify_matches_its_definition() {
        let m = MinHasher::new(&Key::from_secret(b"d"), 128);
        let mut scratch = Vec::new();
        for seed in 0..300u64 {
            let n = (mix(seed, 1) % 200) as usize;
            let set: Vec<u64> = (0..n as u64).map(|i| mix(i, seed)).collect();
            let mut raw = vec![0; 128];
            m.signature(&set, &mut raw);
            for len in [128, 32, 1] {
                let (mut fast, mut slow) = (vec![0; len], vec![0; len]);
                m.densify(&raw, &mut fast, &mut scratch);
                densify_by_search(&m, &raw, &mut slow);
                assert_eq!(fast, slow, "seed {seed}, {n} shingles, prefix {len}");
            }
        }
    }

    #[test]
    fn min_of_raw_signatures_is_the_union() {
        let m = MinHasher::new(&Key::from_secret(b"u"), 64);
        let a: Vec<u64> = (0..30).map(|i| mix(i, 5)).collect();
        let b: Vec<u64> = (20..70).map(|i| mix(i, 5)).collect();
        let u: Vec<u64> = (0..70).map(|i| mix(i, 5)).collect();
        let (mut ra, mut rb, mut ru) = (vec![0; 64], vec![0; 64], vec![0; 64]);
        m.signature(&a, &mut ra);
        m.signature(&b, &mut rb);
        m.signature(&u, &mut ru);
        let merged: Vec<u32> = ra.iter().zip(&rb).map(|(x, y)| *x.min(y)).collect();
        assert_eq!(merged, ru);
    }

    #[test]
    fn empty_bands_have_no_key() {
        let mut sig = vec![EMPTY; 16];
        sig[5] = 7;
        let mut k = [9u32; 4];
        band_keys(&sig, 4, 4, &mut k);
        assert_eq!(k[0], 0);
        assert_ne!(k[1], 0);
        assert_eq!(&k[2..], &[0, 0]);
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

#[cfg(test)]
mod small_sets {
    use super::*;

    #[test]
    fn two_different_single_shingles_do_not_match() {
        let m = MinHasher::new(&Key::from_secret(b"m"), 128);
        let (mut ra, mut rb, mut da, mut db) =
            (vec![0; 128], vec![0; 128], vec![0; 128], vec![0; 128]);
        m.signature(&[mix(1, 2)], &mut ra);
        m.signature(&[mix(3, 4)], &mut rb);
        m.densify(&ra, &mut da, &mut Vec::new());
        m.densify(&rb, &mut db, &mut Vec::new());
        eprintln!("{:?}\n{:?}", &da[..8], &db[..8]);
        assert!(jaccard(&da, &db) < 0.1, "{}", jaccard(&da, &db));
    }
}
