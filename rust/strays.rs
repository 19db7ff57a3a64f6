//! Stray queries: a query with no other query of the same client within a
//! cosine radius. A user who keeps to a few topics has almost none; a
//! harvest mixed into an account brings queries from everywhere, and each
//! stays alone.
//!
//! Per client: a uniform reservoir of past embeddings and a short list of
//! open strays, both as int8 unit vectors. A query that nothing in either
//! list comes near opens a stray; a query near open strays closes them (they
//! have a neighbour now). The mass sums how far each stray's closest
//! neighbour stays below the radius: a count with finer steps.

/// int8 scale of a unit vector's components.
const Q: f32 = 127.0;

/// Shape of the tracker; `dim == 0` turns it off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StrayConfig {
    /// Embedding dimensions.
    pub dim: usize,
    /// Past embeddings kept per client.
    pub reservoir: usize,
    /// Most open strays kept per client.
    pub open: usize,
    /// Cosine distance within which two queries are neighbours.
    pub radius: f32,
}

impl StrayConfig {
    pub fn enabled(&self) -> bool {
        self.dim > 0
    }

    /// Bytes of tracker state per client.
    pub fn bytes(&self) -> usize {
        if self.enabled() {
            (self.reservoir + self.open) * self.dim + 4 * self.open
        } else {
            0
        }
    }
}

/// One client's reservoir and open strays.
#[derive(Clone, Debug, PartialEq)]
pub struct Strays {
    /// Queries seen (the reservoir's sampling denominator).
    pub seen: u64,
    /// Filled reservoir rows.
    pub filled: u32,
    /// Open strays held.
    pub n_open: u32,
    /// Strays pushed out of a full open list: still counted, never closed.
    pub dropped: u32,
    pub dropped_mass: f32,
    /// State of the reservoir's random draws.
    pub rng: u64,
    pub reservoir: Box<[i8]>,
    pub open: Box<[i8]>,
    /// Per open stray: its highest similarity to anything the client sent.
    pub best: Box<[f32]>,
}

impl Strays {
    pub fn new(cfg: &StrayConfig) -> Self {
        let dim = if cfg.enabled() { cfg.dim } else { 0 };
        let open = if cfg.enabled() { cfg.open } else { 0 };
        Strays {
            seen: 0,
            filled: 0,
            n_open: 0,
            dropped: 0,
            dropped_mass: 0.0,
            rng: 0x9e37_79b9_7f4a_7c15,
            reservoir: vec![0; cfg.reservoir * dim].into_boxed_slice(),
            open: vec![0; open * dim].into_boxed_slice(),
            best: vec![0.0; open].into_boxed_slice(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.reservoir.len() + self.open.len() + 4 * self.best.len()
    }

    /// Strays so far.
    pub fn count(&self) -> u32 {
        self.n_open + self.dropped
    }

    /// How far the strays' closest neighbours stay below the radius, summed.
    pub fn mass(&self, cfg: &StrayConfig) -> f32 {
        let near = 1.0 - cfg.radius;
        let open: f32 = self.best[..self.n_open as usize]
            .iter()
            .map(|&b| (near - b).max(0.0))
            .sum();
        self.dropped_mass + open
    }

    /// Folds one query's embedding (any norm; `cfg.dim` values) in.
    pub fn add(&mut self, cfg: &StrayConfig, emb: &[f32]) {
        if !cfg.enabled() {
            return;
        }
        let dim = cfg.dim;
        let q = quantize(emb);
        let near = 1.0 - cfg.radius;
        let to_reservoir = self.reservoir[..self.filled as usize * dim]
            .chunks_exact(dim)
            .map(|r| similarity(r, &q))
            .fold(-1.0f32, f32::max);
        let mut matched = to_reservoir >= near;
        let mut to_open = -1.0f32;
        let mut kept = 0usize;
        for i in 0..self.n_open as usize {
            let sim = similarity(&self.open[i * dim..(i + 1) * dim], &q);
            to_open = to_open.max(sim);
            if sim >= near {
                matched = true; // closed: it has a neighbour now
                continue;
            }
            if kept != i {
                self.open.copy_within(i * dim..(i + 1) * dim, kept * dim);
            }
            self.best[kept] = self.best[i].max(sim);
            kept += 1;
        }
        self.n_open = kept as u32;
        if !matched && cfg.open > 0 {
            if kept == cfg.open {
                // the oldest goes; it stays counted, since nothing closed it
                self.dropped += 1;
                self.dropped_mass += (near - self.best[0]).max(0.0);
                self.open.copy_within(dim.., 0);
                self.best.copy_within(1.., 0);
                kept -= 1;
            }
            self.open[kept * dim..(kept + 1) * dim].copy_from_slice(&q);
            self.best[kept] = to_reservoir.max(to_open);
            self.n_open = kept as u32 + 1;
        }
        self.seen += 1;
        if (self.filled as usize) < cfg.reservoir {
            let f = self.filled as usize;
            self.reservoir[f * dim..(f + 1) * dim].copy_from_slice(&q);
            self.filled += 1;
        } else if cfg.reservoir > 0 {
            let j = (self.next_random() % self.seen) as usize;
            if j < cfg.reservoir {
                self.reservoir[j * dim..(j + 1) * dim].copy_from_slice(&q);
            }
        }
    }

    /// splitmix64: deterministic, so a replay gives the same reservoir.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Whether the counters agree with the buffers (for snapshots).
    pub fn is_consistent(&self, cfg: &StrayConfig) -> bool {
        let ok_fill = self.filled as u64 <= self.seen && self.filled as usize <= cfg.reservoir;
        let ok_open = self.n_open as usize <= cfg.open;
        let ok_counts = (self.n_open as u64 + self.dropped as u64) <= self.seen;
        let finite = self.dropped_mass.is_finite() && self.best.iter().all(|b| b.is_finite());
        !cfg.enabled() || (ok_fill && ok_open && ok_counts && finite)
    }
}

/// A unit vector's components times 127, rounded (zeros stay zeros).
fn quantize(emb: &[f32]) -> Vec<i8> {
    let norm = emb.iter().map(|x| x * x).sum::<f32>().sqrt();
    let scale = if norm > 0.0 && norm.is_finite() {
        Q / norm
    } else {
        0.0
    };
    emb.iter()
        .map(|&x| (x * scale).round().clamp(-Q, Q) as i8)
        .collect()
}

/// Cosine similarity of two quantized unit vectors.
#[inline]
fn similarity(a: &[i8], b: &[i8]) -> f32 {
    let dot: i32 = a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum();
    dot as f32 / (Q * Q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(reservoir: usize, open: usize) -> StrayConfig {
        StrayConfig {
            dim: 4,
            reservoir,
            open,
            radius: 0.5,
        }
    }

    #[test]
    fn neighbours_are_not_strays_and_a_lone_query_is() {
        let c = cfg(8, 4);
        let mut s = Strays::new(&c);
        s.add(&c, &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(s.count(), 1); // nothing to be near yet
        s.add(&c, &[0.9, 0.1, 0.0, 0.0]);
        assert_eq!(s.count(), 0); // the first one has a neighbour now
        s.add(&c, &[0.0, 0.0, 1.0, 0.0]);
        assert_eq!(s.count(), 1);
        // orthogonal to everything: similarity 0, mass 0.5 below the radius
        assert!((s.mass(&c) - 0.5).abs() < 1e-3);
        s.add(&c, &[0.0, 0.0, -1.0, 0.0]);
        assert_eq!(s.count(), 2);
    }

    #[test]
    fn a_full_open_list_drops_the_oldest_and_keeps_it_counted() {
        let c = cfg(0, 2);
        let mut s = Strays::new(&c);
        for e in [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ] {
            s.add(&c, &e);
        }
        assert_eq!((s.n_open, s.dropped, s.count()), (2, 1, 3));
        // near the first (dropped) one: nothing to close, a new stray
        s.add(&c, &[1.0, 0.05, 0.0, 0.0]);
        assert_eq!(s.count(), 4);
        assert!(s.is_consistent(&c));
    }

    #[test]
    fn the_reservoir_stays_a_uniform_sample_of_bounded_size() {
        let c = cfg(4, 2);
        let mut s = Strays::new(&c);
        for i in 0..1000 {
            let t = i as f32 * 0.01;
            s.add(&c, &[t.cos(), t.sin(), 0.0, 0.0]);
        }
        assert_eq!((s.filled, s.seen), (4, 1000));
        assert_eq!(s.heap_bytes(), c.bytes());
        assert!(s.is_consistent(&c));
    }

    #[test]
    fn off_does_nothing_and_holds_nothing() {
        let c = StrayConfig {
            dim: 0,
            ..cfg(8, 4)
        };
        let mut s = Strays::new(&c);
        s.add(&c, &[]);
        assert_eq!((s.count(), s.heap_bytes(), s.seen), (0, 0, 0));
    }
}
