//! One client's sketch: counters, coverage bitsets, a cell histogram, a
//! MinHash signature, a HyperLogLog and a ring of recent band keys.

use crate::config::SketchConfig;
use crate::hll;
use crate::strays::Strays;

/// Most coverage levels a config may have.
pub const MAX_LEVELS: usize = 8;

/// Weight of the newest query in the novelty moving average.
const NOVELTY_ALPHA: f32 = 1.0 / 32.0;

/// The word of a level's coverage bitset (starting at word `off`) that
/// holds `cell`'s bit.
#[inline]
fn bit_word(off: usize, cell: usize) -> usize {
    off + (cell >> 6)
}

/// Asks the CPU to bring every cache line of `data` closer. A hint only.
#[inline]
fn prefetch_lines<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let start = data.as_ptr().cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch never faults and reads nothing, and `off`
            // stays inside `data` anyway.
            unsafe { _mm_prefetch(start.add(off), _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// What one prompt contributes, computed before the client is touched.
pub struct Digest<'a> {
    pub sig: &'a [u32],
    pub bands: &'a [u32],
    pub prompt_hash: u64,
    pub cells: &'a [u32],
    pub ts: f64,
    /// The prompt's embedding, for the stray tracker (None: not tracked).
    pub emb: Option<&'a [f32]>,
}

/// Per-client state. Every buffer has the size its config gives.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSketch {
    pub count: u64,
    pub first_ts: f64,
    pub last_ts: f64,
    pub near_dups: u64,
    pub alert_level: u8,
    /// State of the caller's sequential test (for example a CUSUM), kept
    /// here so it is snapshotted and evicted with the client.
    pub evidence: f64,
    pub recent_pos: u32,
    pub novelty: [f32; MAX_LEVELS],
    pub sig: Box<[u32]>,
    pub bits: Box<[u64]>,
    pub hist: Box<[u16]>,
    pub hll: Box<[u8]>,
    pub recent: Box<[u32]>,
    pub strays: Strays,
}

impl ClientSketch {
    /// An empty sketch shaped by `cfg`.
    pub fn new(cfg: &SketchConfig) -> Self {
        ClientSketch {
            count: 0,
            first_ts: f64::INFINITY,
            last_ts: f64::NEG_INFINITY,
            near_dups: 0,
            alert_level: 0,
            evidence: 0.0,
            recent_pos: 0,
            novelty: [0.0; MAX_LEVELS],
            sig: vec![u32::MAX; cfg.num_perm].into_boxed_slice(),
            bits: vec![0; cfg.bitset_words()].into_boxed_slice(),
            hist: vec![0; cfg.hist_cells()].into_boxed_slice(),
            hll: vec![0; 1 << cfg.hll_precision].into_boxed_slice(),
            recent: vec![0; cfg.recent_slots()].into_boxed_slice(),
            strays: Strays::new(&cfg.strays),
        }
    }

    /// Heap bytes held by this sketch's buffers.
    pub fn heap_bytes(&self) -> usize {
        self.sig.len() * 4
            + self.bits.len() * 8
            + self.hist.len() * 2
            + self.hll.len()
            + self.recent.len() * 4
            + self.strays.heap_bytes()
    }

    /// Folds one prompt into the sketch. Returns whether it was a near duplicate
    /// of one of the client's recent prompts.
    pub fn apply(&mut self, cfg: &SketchConfig, offsets: &[usize], d: &Digest) -> bool {
        self.count += 1;
        self.first_ts = self.first_ts.min(d.ts);
        self.last_ts = self.last_ts.max(d.ts);
        for (s, &v) in self.sig.iter_mut().zip(d.sig) {
            *s = (*s).min(v);
        }
        hll::add(&mut self.hll, cfg.hll_precision, d.prompt_hash);

        let b = cfg.keys_per_prompt();
        // Branchless, so the compiler vectorizes the scan of the whole ring.
        let near_dup = self.recent.chunks_exact(b).fold(false, |acc, slot| {
            acc | slot
                .iter()
                .zip(d.bands)
                .fold(false, |a, (old, new)| a | ((old == new) & (*new != 0)))
        });
        if near_dup {
            self.near_dups += 1;
        }
        let pos = self.recent_pos as usize;
        self.recent[pos * b..(pos + 1) * b].copy_from_slice(d.bands);
        self.recent_pos = ((pos + 1) % cfg.recent_prompts) as u32;

        for (level, (&cell, &off)) in d.cells.iter().zip(offsets).enumerate() {
            let word = &mut self.bits[bit_word(off, cell as usize)];
            let mask = 1u64 << (cell & 63);
            let opened = if *word & mask == 0 { 1.0 } else { 0.0 };
            *word |= mask;
            let n = &mut self.novelty[level];
            *n += NOVELTY_ALPHA.max(1.0 / self.count as f32) * (opened - *n);
        }
        let h = &mut self.hist[d.cells[cfg.hist_level] as usize];
        *h = h.saturating_add(1);
        if let Some(e) = d.emb {
            self.strays.add(&cfg.strays, e);
        }
        near_dup
    }

    /// Asks the CPU for the cache lines that `apply` will touch for an
    /// event with these cells (one per level, unchecked) and prompt hash.
    /// A hint only: out-of-range cells are skipped.
    pub fn prefetch(&self, cfg: &SketchConfig, offsets: &[usize], cells: &[i64], prompt_hash: u64) {
        prefetch_lines(&self.sig);
        prefetch_lines(&self.recent);
        let reg = self.hll.get(hll::register(cfg.hll_precision, prompt_hash));
        let words = cells
            .iter()
            .zip(offsets)
            .filter_map(|(&cell, &off)| self.bits.get(bit_word(off, cell as usize)));
        let bin = cells
            .get(cfg.hist_level)
            .and_then(|&c| self.hist.get(c as usize));
        for w in words {
            prefetch_lines(std::slice::from_ref(w));
        }
        if let Some(r) = reg {
            prefetch_lines(std::slice::from_ref(r));
        }
        if let Some(h) = bin {
            prefetch_lines(std::slice::from_ref(h));
        }
    }

    /// Folds another client's sketch into this one: the sketch of the union
    /// of both clients' traffic. The recent-prompt ring and the stray
    /// tracker keep this client's.
    pub fn merge(&mut self, other: &ClientSketch) {
        let total = self.count + other.count;
        if total > 0 {
            let (wa, wb) = (
                self.count as f32 / total as f32,
                other.count as f32 / total as f32,
            );
            for (a, b) in self.novelty.iter_mut().zip(other.novelty) {
                *a = *a * wa + b * wb;
            }
        }
        self.count = total;
        self.first_ts = self.first_ts.min(other.first_ts);
        self.last_ts = self.last_ts.max(other.last_ts);
        self.near_dups += other.near_dups;
        self.alert_level = self.alert_level.max(other.alert_level);
        self.evidence = self.evidence.max(other.evidence);
        for (a, &b) in self.sig.iter_mut().zip(other.sig.iter()) {
            *a = (*a).min(b);
        }
        for (a, &b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
        for (a, &b) in self.hist.iter_mut().zip(other.hist.iter()) {
            *a = a.saturating_add(b);
        }
        hll::merge(&mut self.hll, &other.hll);
    }

    /// Distinct cells touched at each level.
    pub fn cells(&self, cfg: &SketchConfig, offsets: &[usize]) -> Vec<u32> {
        cfg.levels
            .iter()
            .zip(offsets)
            .map(|(&l, &off)| {
                let words = (l as usize).div_ceil(64);
                self.bits[off..off + words]
                    .iter()
                    .map(|w| w.count_ones())
                    .sum()
            })
            .collect()
    }

    /// KL divergence, in nats, of the client's cell histogram from a
    /// reference distribution given as natural logs of its probabilities.
    pub fn kl_from(&self, log_ref: &[f64]) -> f64 {
        let total: f64 = self.hist.iter().map(|&c| c as f64).sum();
        if total == 0.0 {
            return 0.0;
        }
        self.hist
            .iter()
            .zip(log_ref)
            .filter(|(&c, _)| c > 0)
            .map(|(&c, &lq)| {
                let p = c as f64 / total;
                p * (p.ln() - lq)
            })
            .sum::<f64>()
            .max(0.0)
    }

    /// Shannon entropy, in bits, of the cell histogram.
    pub fn entropy(&self) -> f64 {
        let total: f64 = self.hist.iter().map(|&c| c as f64).sum();
        if total == 0.0 {
            return 0.0;
        }
        self.hist
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total;
                -p * p.log2()
            })
            .sum::<f64>()
            .max(0.0)
    }
}

/// Names of the columns that `features` writes, in order.
pub fn feature_names(cfg: &SketchConfig) -> Vec<String> {
    let mut names: Vec<String> = [
        "count",
        "first_ts",
        "last_ts",
        "distinct_prompts",
        "near_dup_share",
        "entropy",
        "alert_level",
        "evidence",
        "kl_ref",
        "singletons",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for &l in &cfg.levels {
        names.push(format!("cells_{l}"));
        names.push(format!("coverage_{l}"));
        names.push(format!("novelty_{l}"));
    }
    names.push("strays".into());
    names.push("stray_mass".into());
    names
}

/// Writes one row of features; `row` has `feature_names(cfg).len()` slots.
/// A missing client (None) gives a row of zeros with NaN timestamps.
/// `kl_ref` is NaN when no reference distribution is set.
pub fn features(
    cfg: &SketchConfig,
    offsets: &[usize],
    log_ref: Option<&[f64]>,
    s: Option<&ClientSketch>,
    row: &mut [f64],
) {
    let Some(s) = s else {
        row.fill(0.0);
        row[1] = f64::NAN;
        row[2] = f64::NAN;
        return;
    };
    let n = s.count as f64;
    row[0] = n;
    row[1] = s.first_ts;
    row[2] = s.last_ts;
    row[3] = hll::estimate(&s.hll).min(n);
    row[4] = if n > 0.0 { s.near_dups as f64 / n } else { 0.0 };
    row[5] = s.entropy();
    row[6] = s.alert_level as f64;
    row[7] = s.evidence;
    row[8] = log_ref.map_or(f64::NAN, |r| s.kl_from(r));
    row[9] = s.hist.iter().filter(|&&c| c == 1).count() as f64;
    for (i, (c, &l)) in s
        .cells(cfg, offsets)
        .into_iter()
        .zip(&cfg.levels)
        .enumerate()
    {
        row[10 + 3 * i] = c as f64;
        row[11 + 3 * i] = c as f64 / l as f64;
        row[12 + 3 * i] = s.novelty[i] as f64;
    }
    let k = 10 + 3 * cfg.levels.len();
    row[k] = s.strays.count() as f64;
    row[k + 1] = s.strays.mass(&cfg.strays) as f64;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest<'a>(
        cfg: &SketchConfig,
        sig: &'a [u32],
        bands: &'a [u32],
        cells: &'a [u32],
        ts: f64,
    ) -> Digest<'a> {
        assert_eq!(sig.len(), cfg.num_perm);
        Digest {
            sig,
            bands,
            prompt_hash: ts.to_bits().wrapping_mul(0x9e37_79b9_7f4a_7c15),
            cells,
            ts,
            emb: None,
        }
    }

    #[test]
    fn apply_counts_cells_and_duplicates() {
        let cfg = SketchConfig::default();
        let off = cfg.level_offsets();
        let mut s = ClientSketch::new(&cfg);
        let sig = vec![7u32; cfg.num_perm];
        let bands = vec![11u32; cfg.keys_per_prompt()];
        assert!(!s.apply(&cfg, &off, &digest(&cfg, &sig, &bands, &[1, 17, 300], 10.0)));
        assert!(s.apply(&cfg, &off, &digest(&cfg, &sig, &bands, &[1, 18, 4095], 5.0)));
        assert_eq!(s.count, 2);
        assert_eq!(s.near_dups, 1);
        assert_eq!((s.first_ts, s.last_ts), (5.0, 10.0));
        assert_eq!(s.cells(&cfg, &off), vec![1, 2, 2]);
        assert_eq!(s.hist[17] + s.hist[18], 2);
        assert!((s.entropy() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn kl_is_zero_for_the_reference_itself_and_grows_with_concentration() {
        let cfg = SketchConfig {
            levels: vec![4, 16],
            hist_level: 0,
            ..Default::default()
        };
        let off = cfg.level_offsets();
        let log_ref = vec![(0.25f64).ln(); 4];
        let sig = vec![1u32; cfg.num_perm];
        let bands = vec![9u32; cfg.keys_per_prompt()];
        let mut spread = ClientSketch::new(&cfg);
        let mut narrow = ClientSketch::new(&cfg);
        for c in 0..4u32 {
            spread.apply(&cfg, &off, &digest(&cfg, &sig, &bands, &[c, c], 1.0));
            narrow.apply(&cfg, &off, &digest(&cfg, &sig, &bands, &[0, 0], 1.0));
        }
        assert!(spread.kl_from(&log_ref).abs() < 1e-12);
        assert!((narrow.kl_from(&log_ref) - 4f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn ring_forgets_old_prompts() {
        let cfg = SketchConfig {
            recent_prompts: 2,
            ..Default::default()
        };
        let off = cfg.level_offsets();
        let mut s = ClientSketch::new(&cfg);
        let sig = vec![1u32; cfg.num_perm];
        let mut dups = 0;
        for i in 0..3u32 {
            let bands = vec![100 + i; cfg.keys_per_prompt()];
            dups += s.apply(&cfg, &off, &digest(&cfg, &sig, &bands, &[0, 0, 0], 1.0)) as u32;
        }
        // the first prompt's keys were overwritten by the third
        let bands = vec![100u32; cfg.keys_per_prompt()];
        dups += s.apply(&cfg, &off, &digest(&cfg, &sig, &bands, &[0, 0, 0], 1.0)) as u32;
        assert_eq!(dups, 0);
    }

    #[test]
    fn features_row_matches_names() {
        let cfg = SketchConfig::default();
        let off = cfg.level_offsets();
        let names = feature_names(&cfg);
        let mut row = vec![0.0; names.len()];
        features(&cfg, &off, None, None, &mut row);
        assert!(row[1].is_nan());
        let s = ClientSketch::new(&cfg);
        features(&cfg, &off, None, Some(&s), &mut row);
        assert!(row[8].is_nan());
        assert_eq!(names[10], "cells_16");
        assert_eq!(names[names.len() - 3], "novelty_4096");
        assert_eq!(names.last().unwrap(), "stray_mass");
    }
}
