//! Sizes of the per-client sketch. Fixed for the life of a store and
//! recorded in its snapshots.

use crate::error::{CoreError, CoreResult};
use crate::strays::StrayConfig;

/// Shape of every client's sketch, plus the store's memory bound.
#[derive(Clone, Debug, PartialEq)]
pub struct SketchConfig {
    /// Cells per coverage level, coarse to fine (for example 16, 256, 4096).
    pub levels: Vec<u32>,
    /// Index into `levels` of the level that keeps a full cell histogram.
    pub hist_level: usize,
    /// MinHash permutations.
    pub num_perm: usize,
    /// Words per shingle.
    pub shingle_size: usize,
    /// HyperLogLog precision: 2^p registers.
    pub hll_precision: u8,
    /// LSH bands used for near-duplicate detection between a client's prompts.
    pub band_count: usize,
    /// Signature rows per band.
    pub band_rows: usize,
    /// How many recent prompts' band keys a client keeps.
    pub recent_prompts: usize,
    /// Most clients held at once; the least recently seen is evicted beyond it.
    pub max_clients: usize,
    /// Seconds without events after which a client is evicted (0 = never).
    pub idle_ttl: f64,
    /// The stray-query tracker (off unless `strays.dim > 0`).
    pub strays: StrayConfig,
}

impl Default for SketchConfig {
    fn default() -> Self {
        SketchConfig {
            levels: vec![16, 256, 4096],
            hist_level: 1,
            num_perm: 128,
            shingle_size: 3,
            hll_precision: 8,
            band_count: 8,
            band_rows: 4,
            recent_prompts: 32,
            max_clients: 1_000_000,
            idle_ttl: 0.0,
            strays: StrayConfig {
                dim: 0,
                reservoir: 64,
                open: 32,
                radius: 0.8,
            },
        }
    }
}

const MAX_CELLS: u32 = 1 << 20;
const MAX_HIST_CELLS: u32 = 1 << 16;

impl SketchConfig {
    /// Checks every bound; a store is never built from a config that fails.
    pub fn validate(&self) -> CoreResult<()> {
        let bad = |m: String| Err(CoreError::Config(m));
        if self.levels.is_empty() || self.levels.len() > 8 {
            return bad(format!(
                "levels must hold 1 to 8 entries, got {}",
                self.levels.len()
            ));
        }
        if let Some(l) = self.levels.iter().find(|&&l| !(2..=MAX_CELLS).contains(&l)) {
            return bad(format!(
                "each level must have 2 to {MAX_CELLS} cells, got {l}"
            ));
        }
        if self.hist_level >= self.levels.len() {
            return bad(format!(
                "hist_level {} is not a level index (0..{})",
                self.hist_level,
                self.levels.len()
            ));
        }
        if self.levels[self.hist_level] > MAX_HIST_CELLS {
            return bad(format!(
                "the histogram level may have at most {MAX_HIST_CELLS} cells"
            ));
        }
        if !(8..=1024).contains(&self.num_perm) {
            return bad(format!("num_perm must be 8 to 1024, got {}", self.num_perm));
        }
        if !(1..=8).contains(&self.shingle_size) {
            return bad(format!(
                "shingle_size must be 1 to 8, got {}",
                self.shingle_size
            ));
        }
        if !(4..=16).contains(&self.hll_precision) {
            return bad(format!(
                "hll_precision must be 4 to 16, got {}",
                self.hll_precision
            ));
        }
        if self.band_count == 0 || self.band_rows == 0 {
            return bad("band_count and band_rows must be positive".into());
        }
        if self.band_count * self.band_rows > self.num_perm {
            return bad(format!(
                "band_count * band_rows ({}) exceeds num_perm ({})",
                self.band_count * self.band_rows,
                self.num_perm
            ));
        }
        if !(1..=4096).contains(&self.recent_prompts) {
            return bad(format!(
                "recent_prompts must be 1 to 4096, got {}",
                self.recent_prompts
            ));
        }
        if self.max_clients == 0 || self.max_clients > u32::MAX as usize - 1 {
            return bad(format!(
                "max_clients must be 1 to {}, got {}",
                u32::MAX - 1,
                self.max_clients
            ));
        }
        if !self.idle_ttl.is_finite() || self.idle_ttl < 0.0 {
            return bad(format!(
                "idle_ttl must be a finite number >= 0, got {}",
                self.idle_ttl
            ));
        }
        let st = &self.strays;
        if st.enabled() {
            if st.dim > 4096 || st.reservoir > 4096 || !(1..=1024).contains(&st.open) {
                return bad(format!(
                    "strays need dim 0 to 4096, reservoir 0 to 4096 and open 1 to 1024; \
                     got {}, {} and {}",
                    st.dim, st.reservoir, st.open
                ));
            }
            if !(st.radius > 0.0 && st.radius < 2.0) {
                return bad(format!(
                    "the stray radius is a cosine distance in (0, 2), got {}",
                    st.radius
                ));
            }
        }
        Ok(())
    }

    /// 64-bit words of coverage bitset for all levels together.
    pub fn bitset_words(&self) -> usize {
        self.levels.iter().map(|&l| (l as usize).div_ceil(64)).sum()
    }

    /// Offset in words of each level's bitset.
    pub fn level_offsets(&self) -> Vec<usize> {
        let mut off = 0;
        self.levels
            .iter()
            .map(|&l| {
                let o = off;
                off += (l as usize).div_ceil(64);
                o
            })
            .collect()
    }

    /// Cells in the histogram level.
    pub fn hist_cells(&self) -> usize {
        self.levels[self.hist_level] as usize
    }

    /// Keys kept per recent prompt: its band keys and its whole-prompt key.
    pub fn keys_per_prompt(&self) -> usize {
        self.band_count + 1
    }

    /// Slots of the recent band-key ring.
    pub fn recent_slots(&self) -> usize {
        self.recent_prompts * self.keys_per_prompt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        SketchConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        let mut c = SketchConfig {
            hist_level: 5,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(CoreError::Config(m)) if m.contains("hist_level")));
        c = SketchConfig {
            band_count: 64,
            band_rows: 4,
            ..Default::default()
        };
        assert!(matches!(c.validate(), Err(CoreError::Config(m)) if m.contains("num_perm")));
        c = SketchConfig {
            levels: vec![],
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c = SketchConfig {
            idle_ttl: f64::NAN,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn offsets_follow_level_sizes() {
        let c = SketchConfig::default();
        assert_eq!(c.level_offsets(), vec![0, 1, 5]);
        assert_eq!(c.bitset_words(), 1 + 4 + 64);
    }
}
