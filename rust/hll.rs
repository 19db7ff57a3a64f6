//! HyperLogLog over a register slice owned by a client sketch.

/// The register (of `2^p`) that a 64-bit hash goes to.
#[inline]
pub fn register(p: u8, hash: u64) -> usize {
    (hash >> (64 - p)) as usize
}

/// Adds one 64-bit hash to the registers (`2^p` of them).
#[inline]
pub fn add(regs: &mut [u8], p: u8, hash: u64) {
    let idx = register(p, hash);
    let rest = hash << p;
    let rank = (rest.leading_zeros() as u8).min(64 - p) + 1;
    if regs[idx] < rank {
        regs[idx] = rank;
    }
}

/// Estimated number of distinct hashes added.
pub fn estimate(regs: &[u8]) -> f64 {
    let m = regs.len() as f64;
    let alpha = match regs.len() {
        16 => 0.673,
        32 => 0.697,
        64 => 0.709,
        _ => 0.7213 / (1.0 + 1.079 / m),
    };
    let sum: f64 = regs.iter().map(|&r| (-(r as f64)).exp2()).sum();
    let raw = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    }
}

/// Register-wise maximum: the sketch of the union.
pub fn merge(dst: &mut [u8], src: &[u8]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = (*d).max(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::mix;

    #[test]
    fn estimates_within_expected_error() {
        for &n in &[10u64, 300, 5000, 100_000] {
            let mut regs = vec![0u8; 256];
            for i in 0..n {
                add(&mut regs, 8, mix(i, 77));
            }
            let e = estimate(&regs);
            let err = (e - n as f64).abs() / n as f64;
            // 1.04 / sqrt(256) = 6.5% standard error; allow four of them.
            assert!(err < 0.26, "n={n} estimate={e}");
        }
    }

    #[test]
    fn duplicates_do_not_count() {
        let mut regs = vec![0u8; 256];
        for _ in 0..1000 {
            add(&mut regs, 8, mix(5, 5));
        }
        assert!(estimate(&regs) < 1.5);
    }

    #[test]
    fn merge_is_union() {
        let (mut a, mut b, mut u) = (vec![0u8; 64], vec![0u8; 64], vec![0u8; 64]);
        for i in 0..500 {
            add(&mut a, 6, mix(i, 1));
            add(&mut u, 6, mix(i, 1));
        }
        for i in 250..900 {
            add(&mut b, 6, mix(i, 1));
            add(&mut u, 6, mix(i, 1));
        }
        merge(&mut a, &b);
        assert_eq!(a, u);
    }
}
