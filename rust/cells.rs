//! Cell assignment by descent: every level but the finest is searched
//! exactly (inner product with each centroid), and the finest only among the
//! children of the query's `widen` best cells of the level above it. A fine
//! centroid's parent is the coarse centroid nearest to it.
//!
//! The work is laid out for the cache: queries and centroids meet in tiles
//! of four queries by two centroids (one load of a centroid serves four dot
//! products, one load of a query two), and for the finest level the queries
//! are grouped by the coarse cell they probe, so one cell's children are
//! read once per batch.

use crate::error::{CoreError, CoreResult};

/// Centroids of every level, ready to search.
#[derive(Debug, Clone)]
pub struct Cells {
    dim: usize,
    tile: Tile,
    /// Row-major (cells, dim) centroids per level, coarse to fine.
    levels: Vec<Vec<f32>>,
    fine: Option<Fine>,
}

/// The finest level, its rows grouped by parent.
#[derive(Debug, Clone)]
struct Fine {
    widen: usize,
    /// Fine centroids in parent order, row-major.
    rows: Vec<f32>,
    /// The cell id of each row of `rows`.
    ids: Vec<u32>,
    /// Where each parent's rows start in `rows`; one more entry than parents.
    starts: Vec<usize>,
}

impl Cells {
    /// `levels`: row-major centroids per level, coarse to fine, all of
    /// dimension `dim`. With `widen` > 0 and at least two levels, the finest
    /// level is searched by descent; with 0, every level exactly.
    pub fn new(dim: usize, levels: Vec<Vec<f32>>, widen: usize) -> CoreResult<Self> {
        if dim == 0 || levels.is_empty() {
            return Err(CoreError::Input(
                "need a dimension and at least one level".into(),
            ));
        }
        for (j, c) in levels.iter().enumerate() {
            if c.is_empty() || c.len() % dim != 0 {
                return Err(CoreError::Input(format!(
                    "level {j} has {} values, not a whole number of {dim}-dim rows",
                    c.len()
                )));
            }
            if c.len() / dim > u32::MAX as usize {
                return Err(CoreError::Input(format!("level {j} has too many cells")));
            }
        }
        let fine = if widen > 0 && levels.len() >= 2 {
            let coarse = &levels[levels.len() - 2];
            let finest = &levels[levels.len() - 1];
            Some(Fine::build(dim, coarse, finest, widen))
        } else {
            None
        };
        Ok(Cells {
            dim,
            tile: kernel(),
            levels,
            fine,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn n_levels(&self) -> usize {
        self.levels.len()
    }

    /// Cell ids of each query (row-major (n, dim)), one per level:
    /// row-major (n, levels). A tie goes to the lower cell id at exact
    /// levels.
    pub fn assign(&self, queries: &[f32]) -> CoreResult<Vec<u32>> {
        if queries.len() % self.dim != 0 {
            return Err(CoreError::Input(format!(
                "{} values are not a whole number of {}-dim rows",
                queries.len(),
                self.dim
            )));
        }
        Ok(self.assign_any(queries))
    }

    fn assign_any(&self, queries: &[f32]) -> Vec<u32> {
        let (dim, k) = (self.dim, self.levels.len());
        let n = queries.len() / dim;
        let mut out = vec![0u32; n * k];
        let exact = if self.fine.is_some() { k - 1 } else { k };
        let widen = self.fine.as_ref().map_or(0, |f| f.widen);
        // the `widen` best cells of the level above the finest, per query
        let mut probes: Vec<u32> = Vec::with_capacity(n * widen);
        let mut scores: Vec<f32> = Vec::new();
        for (j, level) in self.levels[..exact].iter().enumerate() {
            let cells = level.len() / dim;
            let keep_top = self.fine.is_some() && j == exact - 1;
            let mut block = 0;
            while block < n {
                let m = (n - block).min(Q);
                scores.clear();
                scores.resize(m * cells, 0.0);
                score_block(
                    self.tile,
                    &queries[block * dim..(block + m) * dim],
                    level,
                    dim,
                    &mut scores,
                );
                for r in 0..m {
                    let row = &scores[r * cells..(r + 1) * cells];
                    out[(block + r) * k + j] = argmax(row);
                    if keep_top {
                        top_cells(row, widen, &mut probes);
                    }
                }
                block += m;
            }
        }
        if let Some(fine) = &self.fine {
            let w = widen.min(fine.starts.len() - 1);
            fine.search(self.tile, queries, dim, &probes, w, &mut out, k);
        }
        out
    }
}

impl Fine {
    fn build(dim: usize, coarse: &[f32], finest: &[f32], widen: usize) -> Self {
        let (parents, tile) = (coarse.len() / dim, kernel());
        let parent: Vec<u32> = finest
            .chunks_exact(dim)
            .map(|row| argmax(&scores_of(tile, row, coarse, dim)))
            .collect();
        let (starts, ids) = group(parents, parent.iter().enumerate().map(|(id, &p)| (p, id)));
        let rows: Vec<f32> = ids
            .iter()
            .flat_map(|&id| &finest[id as usize * dim..(id as usize + 1) * dim])
            .copied()
            .collect();
        Fine {
            widen,
            rows,
            ids,
            starts,
        }
    }

    /// Best child per query among its probed parents; writes column `k - 1`.
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        tile: Tile,
        queries: &[f32],
        dim: usize,
        probes: &[u32],
        w: usize,
        out: &mut [u32],
        k: usize,
    ) {
        let n = queries.len() / dim;
        let parents = self.starts.len() - 1;
        // queries grouped by the parent they probe
        let (counts, members) = group(
            parents,
            (0..n).flat_map(|q| probes[q * w..q * w + w].iter().map(move |&p| (p, q))),
        );
        let mut best = vec![f32::NEG_INFINITY; n];
        let mut found = vec![u32::MAX; n];
        for p in 0..parents {
            let (lo, hi) = (self.starts[p], self.starts[p + 1]);
            if lo == hi {
                continue;
            }
            let group = &members[counts[p]..counts[p + 1]];
            let rows = &self.rows[lo * dim..hi * dim];
            for four in group.chunks(Q) {
                let q = pick(four, |i| &queries[i as usize * dim..(i as usize + 1) * dim]);
                for (t, two) in rows.chunks(C * dim).enumerate() {
                    let c = pick_rows(two, dim);
                    let s = tile(q, c);
                    for (i, &qi) in four.iter().enumerate() {
                        let qi = qi as usize;
                        for (j, &v) in s[i].iter().take(two.len() / dim).enumerate() {
                            if v > best[qi] {
                                best[qi] = v;
                                found[qi] = self.ids[lo + t * C + j];
                            }
                        }
                    }
                }
            }
        }
        for q in 0..n {
            if found[q] == u32::MAX {
                // every cell it probed was childless: search all children
                let scores = scores_of(tile, &queries[q * dim..(q + 1) * dim], &self.rows, dim);
                found[q] = self.ids[argmax(&scores) as usize];
            }
            out[q * k + k - 1] = found[q];
        }
    }
}

/// Items grouped by key (a counting sort, stable): where each of the
/// `groups` keys starts in the returned items, one more entry than keys,
/// and the items in key order.
fn group(
    groups: usize,
    pairs: impl Iterator<Item = (u32, usize)> + Clone,
) -> (Vec<usize>, Vec<u32>) {
    let mut starts = vec![0usize; groups + 1];
    for (key, _) in pairs.clone() {
        starts[key as usize + 1] += 1;
    }
    for i in 0..groups {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut items = vec![0u32; starts[groups]];
    for (key, item) in pairs {
        items[fill[key as usize]] = item as u32;
        fill[key as usize] += 1;
    }
    (starts, items)
}

/// Queries and centroids per tile.
const Q: usize = 4;
const C: usize = 2;
/// Lanes of each accumulator: one AVX2 register.
const LANES: usize = 8;

/// Scores of up to `Q` queries (row-major) against every centroid:
/// (queries, cells), row-major.
#[inline(always)]
fn score_block(tile: Tile, queries: &[f32], centroids: &[f32], dim: usize, scores: &mut [f32]) {
    let m = queries.len() / dim;
    let q = pick_rows(queries, dim);
    let cells = centroids.len() / dim;
    for (t, two) in centroids.chunks(C * dim).enumerate() {
        let s = tile(q, pick_rows(two, dim));
        for (r, row) in s.iter().take(m).enumerate() {
            for (j, &v) in row.iter().take(two.len() / dim).enumerate() {
                scores[r * cells + t * C + j] = v;
            }
        }
    }
}

/// Scores of one query against every centroid.
fn scores_of(tile: Tile, query: &[f32], centroids: &[f32], dim: usize) -> Vec<f32> {
    let mut out = vec![0.0; centroids.len() / dim];
    score_block(tile, query, centroids, dim, &mut out);
    out
}

/// Up to N rows of a row-major block, the last one repeated to fill N.
#[inline(always)]
fn pick_rows<const N: usize>(block: &[f32], dim: usize) -> [&[f32]; N] {
    let m = block.len() / dim;
    std::array::from_fn(|i| {
        let i = i.min(m - 1);
        &block[i * dim..(i + 1) * dim]
    })
}

/// The rows of up to N ids, the last one repeated to fill N.
#[inline(always)]
fn pick<'a, const N: usize>(ids: &[u32], row: impl Fn(u32) -> &'a [f32]) -> [&'a [f32]; N] {
    std::array::from_fn(|i| row(ids[i.min(ids.len() - 1)]))
}

/// Inner products of Q queries with C centroids, all rows of one length.
type Tile = fn([&[f32]; Q], [&[f32]; C]) -> [[f32; C]; Q];

/// The fastest tile this CPU runs. Both give the same bits: each product
/// is summed lane by lane with fused multiply-adds over chunks of LANES,
/// the lanes pairwise (`reduce`), then the tail past the last chunk.
fn kernel() -> Tile {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return tile_avx2;
        }
    }
    tile_scalar
}

fn tile_scalar(q: [&[f32]; Q], c: [&[f32]; C]) -> [[f32; C]; Q] {
    let dim = c[0].len();
    let body = dim - dim % LANES;
    let mut acc = [[[0f32; LANES]; C]; Q];
    for k in (0..body).step_by(LANES) {
        for i in 0..Q {
            for j in 0..C {
                let (x, y) = (lanes(&q[i][k..]), lanes(&c[j][k..]));
                for l in 0..LANES {
                    acc[i][j][l] = x[l].mul_add(y[l], acc[i][j][l]);
                }
            }
        }
    }
    finish(q, c, body, &acc)
}

/// Reduces the accumulators and adds the tail.
#[inline(always)]
fn finish(
    q: [&[f32]; Q],
    c: [&[f32]; C],
    body: usize,
    acc: &[[[f32; LANES]; C]; Q],
) -> [[f32; C]; Q] {
    let mut out = [[0f32; C]; Q];
    for i in 0..Q {
        for j in 0..C {
            let tail = q[i][body..].iter().zip(&c[j][body..]);
            out[i][j] = tail.fold(reduce(acc[i][j]), |s, (x, y)| x.mul_add(*y, s));
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
fn tile_avx2(q: [&[f32]; Q], c: [&[f32]; C]) -> [[f32; C]; Q] {
    // SAFETY: `kernel` returns this function only on a CPU with AVX2 and FMA.
    unsafe { tile_avx2_fma(q, c) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2_fma(q: [&[f32]; Q], c: [&[f32]; C]) -> [[f32; C]; Q] {
    use std::arch::x86_64::*;
    let dim = c[0].len();
    assert!(
        q.iter().chain(&c).all(|r| r.len() == dim),
        "rows of one length"
    );
    let body = dim - dim % LANES;
    let mut acc = [[_mm256_setzero_ps(); C]; Q];
    let mut k = 0;
    while k < body {
        // SAFETY: k + LANES <= body <= dim, the length of every row.
        let (c0, c1) = unsafe {
            (
                _mm256_loadu_ps(c[0].as_ptr().add(k)),
                _mm256_loadu_ps(c[1].as_ptr().add(k)),
            )
        };
        for i in 0..Q {
            // SAFETY: as above.
            let x = unsafe { _mm256_loadu_ps(q[i].as_ptr().add(k)) };
            acc[i][0] = _mm256_fmadd_ps(x, c0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(x, c1, acc[i][1]);
        }
        k += LANES;
    }
    let mut lanes_out = [[[0f32; LANES]; C]; Q];
    for i in 0..Q {
        for j in 0..C {
            // SAFETY: the array holds exactly LANES f32.
            unsafe { _mm256_storeu_ps(lanes_out[i][j].as_mut_ptr(), acc[i][j]) };
        }
    }
    finish(q, c, body, &lanes_out)
}

/// A chunk as a fixed-size array, so the lane loops need no bounds checks.
#[inline(always)]
fn lanes(chunk: &[f32]) -> &[f32; LANES] {
    chunk[..LANES].try_into().expect("a chunk of LANES values")
}

/// Sums the lanes pairwise, in a fixed order.
#[inline(always)]
fn reduce(v: [f32; LANES]) -> f32 {
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// Index of the largest value; the first one on a tie. NaN never wins.
#[inline(always)]
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    let mut top = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > top {
            top = v;
            best = i;
        }
    }
    best as u32
}

/// Appends the indices of the `w` largest values of `row` (any order;
/// all of them if the row is shorter).
#[inline(always)]
fn top_cells(row: &[f32], w: usize, out: &mut Vec<u32>) {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let w = w.min(row.len());
    if w < row.len() {
        idx.select_nth_unstable_by(w, |&x, &y| {
            row[y as usize]
                .partial_cmp(&row[x as usize])
                .unwrap_or(std::cmp::Ordering::Equal)
        });
    }
    out.extend_from_slice(&idx[..w]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v = Vec::with_capacity(n * dim);
        for _ in 0..n * dim {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            v.push((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5);
        }
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }

    /// Nearest centroid by inner products in f64 (the reference).
    fn exact(q: &[f32], c: &[f32], dim: usize) -> Vec<u32> {
        q.chunks_exact(dim)
            .map(|row| {
                let mut best = (f64::NEG_INFINITY, 0);
                for (j, cc) in c.chunks_exact(dim).enumerate() {
                    let s: f64 = row.iter().zip(cc).map(|(x, y)| *x as f64 * *y as f64).sum();
                    if s > best.0 {
                        best = (s, j as u32);
                    }
                }
                best.1
            })
            .collect()
    }

    #[test]
    fn exact_levels_match_a_plain_search() {
        let dim = 37; // not a multiple of the lanes: the tail counts
        let (c1, c2) = (unit_rows(5, dim, 1), unit_rows(60, dim, 2));
        let q = unit_rows(23, dim, 3); // not a multiple of four queries
        let cells = Cells::new(dim, vec![c1.clone(), c2.clone()], 0).unwrap();
        let got = cells.assign(&q).unwrap();
        let (e1, e2) = (exact(&q, &c1, dim), exact(&q, &c2, dim));
        for i in 0..23 {
            assert_eq!(got[i * 2], e1[i]);
            assert_eq!(got[i * 2 + 1], e2[i]);
        }
    }

    #[test]
    fn descent_that_probes_every_parent_is_exact() {
        let dim = 24;
        let (c1, c2) = (unit_rows(8, dim, 4), unit_rows(200, dim, 5));
        let q = unit_rows(50, dim, 6);
        let cells = Cells::new(dim, vec![c1, c2.clone()], 8).unwrap();
        let got = cells.assign(&q).unwrap();
        let want = exact(&q, &c2, dim);
        for i in 0..50 {
            assert_eq!(got[i * 2 + 1], want[i]);
        }
    }

    #[test]
    fn narrow_descent_finds_mostly_the_nearest_cell() {
        let dim = 16;
        let (c1, c2) = (unit_rows(16, dim, 7), unit_rows(400, dim, 8));
        let q = unit_rows(300, dim, 9);
        let got = Cells::new(dim, vec![c1, c2.clone()], 4)
            .unwrap()
            .assign(&q)
            .unwrap();
        let want = exact(&q, &c2, dim);
        let same = (0..300).filter(|&i| got[i * 2 + 1] == want[i]).count();
        assert!(same > 150 && same < 300, "{same} of 300");
    }

    fn row(v: &[f32], i: usize, dim: usize) -> &[f32] {
        &v[i * dim..(i + 1) * dim]
    }

    #[test]
    fn a_score_does_not_depend_on_its_neighbours_in_a_tile() {
        let dim = 50; // a tail past the last full chunk of lanes
        let q = unit_rows(5, dim, 10);
        let c = unit_rows(3, dim, 11);
        let a = tile_scalar(
            [
                row(&q, 0, dim),
                row(&q, 1, dim),
                row(&q, 2, dim),
                row(&q, 3, dim),
            ],
            [row(&c, 0, dim), row(&c, 1, dim)],
        );
        let b = kernel()(
            [
                row(&q, 4, dim),
                row(&q, 2, dim),
                row(&q, 1, dim),
                row(&q, 0, dim),
            ],
            [row(&c, 2, dim), row(&c, 0, dim)],
        );
        assert_eq!(a[0][0].to_bits(), b[3][1].to_bits());
        assert_eq!(a[1][0].to_bits(), b[2][1].to_bits());
        assert_eq!(a[2][0].to_bits(), b[1][1].to_bits());
        let want: f64 = row(&q, 0, dim)
            .iter()
            .zip(row(&c, 0, dim))
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum();
        assert!((a[0][0] as f64 - want).abs() < 1e-6);
    }

    #[test]
    fn bad_shapes_are_input_errors() {
        assert!(Cells::new(0, vec![vec![1.0]], 0).is_err());
        assert!(Cells::new(3, vec![], 0).is_err());
        assert!(Cells::new(3, vec![vec![1.0; 4]], 0).is_err());
        let cells = Cells::new(2, vec![vec![1.0, 0.0, 0.0, 1.0]], 0).unwrap();
        assert!(cells.assign(&[1.0, 2.0, 3.0]).is_err());
        assert_eq!(cells.assign(&[]).unwrap(), Vec::<u32>::new());
        assert_eq!(cells.assign(&[0.1, 0.9]).unwrap(), vec![1]);
    }
}
