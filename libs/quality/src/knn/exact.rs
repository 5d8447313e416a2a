//! Exact search: the symmetric `N × N` distance matrix in f32 tiles, rayon-parallel over tile pairs.
//!
//! Rows are packed in panels of [`PANEL`] rows stored transposed (`d × PANEL`), so a micro-kernel
//! computes a [`GROUP`]-row × two-vector block of dot products in registers and turns it into
//! search keys monotone in the distance (`−a·b` on unit rows for cosine, `‖a‖² + ‖b‖² − 2a·b` on
//! centred rows for Euclidean). Each unordered pair of tiles is visited once and updates both
//! sides' candidate lists; a vector of keys is looked at element by element only when one of them
//! beats its row's or column's current worst kept candidate. The tiles are first each compared with
//! themselves, and the bounds that pass leaves seed every row's lists for the other pairs, so
//! after it few vectors leave the SIMD path.
//!
//! The kernel is written with [`pulp`]'s safe SIMD types and runs under its runtime dispatch
//! (AVX-512, AVX2 + FMA, or scalar). Every rayon piece of work keeps candidate lists for all rows
//! (no locking); the pieces' lists are merged per row, and the kept candidates' distances are
//! recomputed exactly in f64 by [`super::finalize`]. The f32 search keeps [`MARGIN`] extra
//! candidates per row, so f32 rounding near the k-th distance does not drop a true neighbour
//! (recall@10 measured at 1.0 on 100k × 32).
//!
//! NOTE: a fused kernel rather than a GEMM crate: `gemm` 0.19 and `matrixmultiply` 0.3 expose only
//! `unsafe fn` entry points (the workspace forbids `unsafe_code`), and a GEMM would write every
//! product tile to memory to be read back for the top-k; here the bound checks run on the
//! accumulators while they are still in registers.

use rayon::prelude::*;

use super::{Metric, Points};

/// Rows per packed panel: one AVX-512 micro-kernel call's width (two AVX2 calls).
const PANEL: usize = 32;
/// Rows per micro-kernel call (accumulators: `GROUP × PANEL` f32).
const GROUP: usize = 8;
/// Panels per tile (1,024 rows): a tile pair's packed rows stay in L2.
const TILE_PANELS: usize = 32;
/// Extra f32 candidates kept per row beyond `k`, re-ranked in f64.
const MARGIN: usize = 4;
/// Rayon pieces per thread: each holds candidate lists for all rows.
const PIECES_PER_THREAD: usize = 2;

/// Dot product with independent accumulators (so it vectorises without reassociation).
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// The rows in f32 panels, twice: as queries and as candidates, extended so that the dot product of
/// a query with a candidate is the search key.
struct Packed {
    n: usize,
    /// Panel rows per row: `d`, plus two for Euclidean.
    d: usize,
    /// `panels × d × PANEL`: panel `p`, column `c`, row `p·PANEL + r` at `(p·d + c)·PANEL + r`.
    /// Cosine: the unit row `a`. Euclidean: `[a, ‖a‖², 1]` on centred rows.
    queries: Vec<f32>,
    /// As `queries`. Cosine: `−b`. Euclidean: `[−2b, 1, ‖b‖²]`, so the key is `‖a − b‖²`.
    candidates: Vec<f32>,
}

impl Packed {
    fn new(points: &Points) -> Self {
        let (n, d) = (points.n, points.d);
        let n_panels = n.div_ceil(PANEL);
        let euclidean = points.metric == Metric::Euclidean;
        // Euclidean keys lose precision far from the origin: centre the rows (distances are unchanged).
        let mean: Vec<f64> = if euclidean {
            (0..d)
                .map(|c| (0..n).map(|i| points.row(i)[c]).sum::<f64>() / n as f64)
                .collect()
        } else {
            vec![0.0; d]
        };
        let da = if euclidean { d + 2 } else { d };
        let pack = |query: bool| {
            let mut panels = vec![0.0f32; n_panels * da * PANEL];
            panels
                .par_chunks_mut(da * PANEL)
                .enumerate()
                .for_each(|(p, panel)| {
                    for r in 0..PANEL {
                        let i = p * PANEL + r;
                        if i >= n {
                            // Padding: infinite Euclidean keys; cosine padding is skipped by index.
                            if euclidean {
                                panel[(d + usize::from(!query)) * PANEL + r] = f32::INFINITY;
                                panel[(d + usize::from(query)) * PANEL + r] = 1.0;
                            }
                            continue;
                        }
                        let mut sq = 0.0f64;
                        for (c, (v, m)) in points.row(i).iter().zip(&mean).enumerate() {
                            let x = v - m;
                            sq += x * x;
                            panel[c * PANEL + r] = match (query, euclidean) {
                                (true, _) => x as f32,
                                (false, false) => -x as f32,
                                (false, true) => (-2.0 * x) as f32,
                            };
                        }
                        if euclidean {
                            panel[(d + usize::from(!query)) * PANEL + r] = sq as f32;
                            panel[(d + usize::from(query)) * PANEL + r] = 1.0;
                        }
                    }
                });
            panels
        };
        Self {
            n,
            d: da,
            queries: pack(true),
            candidates: pack(false),
        }
    }

    fn query_panel(&self, p: usize) -> &[f32] {
        &self.queries[p * self.d * PANEL..(p + 1) * self.d * PANEL]
    }

    fn candidate_panel(&self, p: usize) -> &[f32] {
        &self.candidates[p * self.d * PANEL..(p + 1) * self.d * PANEL]
    }

    fn n_panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }
}

/// Every row's best `width` candidates by f32 key, each list sorted by (key, index).
struct Lists {
    width: usize,
    keys: Vec<f32>,
    indices: Vec<u32>,
    /// `keys` of each row's last slot: the key a candidate must beat.
    bound: Vec<f32>,
}

impl Lists {
    /// Empty lists that admit only keys below `bound` (one per row).
    fn new(width: usize, bound: Vec<f32>) -> Self {
        let rows = bound.len();
        Self {
            width,
            keys: vec![f32::INFINITY; rows * width],
            indices: vec![u32::MAX; rows * width],
            bound,
        }
    }

    /// Offers `j` at `key` to row `i` (candidates arrive in increasing `j`, so ties keep the first).
    #[inline(always)]
    fn push(&mut self, i: usize, key: f32, j: u32) {
        if key >= self.bound[i] {
            return;
        }
        let w = self.width;
        let (keys, indices) = (
            &mut self.keys[i * w..(i + 1) * w],
            &mut self.indices[i * w..(i + 1) * w],
        );
        let mut pos = w - 1;
        while pos > 0 && keys[pos - 1] > key {
            keys[pos] = keys[pos - 1];
            indices[pos] = indices[pos - 1];
            pos -= 1;
        }
        keys[pos] = key;
        indices[pos] = j;
        self.bound[i] = self.bound[i].min(keys[w - 1]);
    }
}

/// Search keys of the [`GROUP`] rows at `row_off` of query panel `rows` against `2 · S::F32_LANES`
/// columns of candidate panel `cols` from `col_off`, and whether any key beats its row's bound
/// (`bound_i`) or, when `both`, its column's bound (`bound_j`, aligned with `cols`).
#[inline(always)]
fn block<S: pulp::Simd>(
    simd: S,
    d: usize,
    rows: (&[f32], usize, &[f32; GROUP]),
    cols: (&[f32], usize, &[f32]),
    both: bool,
) -> ([[S::f32s; 2]; GROUP], bool) {
    let (rows, row_off, bound_i) = rows;
    let (cols, col_off, bound_j) = cols;
    let lanes = S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 2]; GROUP];
    for c in 0..d {
        let (b, _) = S::as_simd_f32s(&cols[c * PANEL + col_off..c * PANEL + col_off + 2 * lanes]);
        let (b0, b1) = (b[0], b[1]);
        let a = &rows[c * PANEL + row_off..c * PANEL + row_off + GROUP];
        for (acc_r, a_r) in acc.iter_mut().zip(a) {
            let a_r = simd.splat_f32s(*a_r);
            acc_r[0] = simd.mul_add_e_f32s(a_r, b0, acc_r[0]);
            acc_r[1] = simd.mul_add_e_f32s(a_r, b1, acc_r[1]);
        }
    }
    let (bj, _) = S::as_simd_f32s(&bound_j[..2 * lanes]);
    let inf = simd.splat_f32s(f32::INFINITY);
    let mut col_min = [inf; 2];
    let mut row_hit = simd.less_than_f32s(inf, zero);
    for (acc_r, b_i) in acc.iter().zip(bound_i) {
        let b_i = simd.splat_f32s(*b_i);
        row_hit = simd.or_m32s(
            row_hit,
            simd.less_than_f32s(simd.min_f32s(acc_r[0], acc_r[1]), b_i),
        );
        col_min[0] = simd.min_f32s(col_min[0], acc_r[0]);
        col_min[1] = simd.min_f32s(col_min[1], acc_r[1]);
    }
    let mut hit = row_hit;
    if both {
        for v in 0..2 {
            hit = simd.or_m32s(hit, simd.less_than_f32s(col_min[v], bj[v]));
        }
    }
    (acc, simd.first_true_m32s(hit) < lanes)
}

/// Compares every row of tile `ti` with every row of tile `tj` (`ti ≤ tj`). A diagonal pair visits
/// both orders of each pair and updates rows only; an off-diagonal pair updates both sides.
#[inline(always)]
fn scan_pair<S: pulp::Simd>(simd: S, packed: &Packed, lists: &mut Lists, ti: usize, tj: usize) {
    let n_panels = packed.n_panels();
    let both = ti != tj;
    let n = packed.n;
    let lanes = S::F32_LANES;
    let step = 2 * lanes;
    for pj in tj * TILE_PANELS..((tj + 1) * TILE_PANELS).min(n_panels) {
        let cols = packed.candidate_panel(pj);
        let j0 = pj * PANEL;
        let mut bound_j = [f32::INFINITY; PANEL];
        let cols_in = PANEL.min(n - j0);
        for pi in ti * TILE_PANELS..((ti + 1) * TILE_PANELS).min(n_panels) {
            let rows = packed.query_panel(pi);
            for row_off in (0..PANEL).step_by(GROUP) {
                let i0 = pi * PANEL + row_off;
                if i0 >= n {
                    break;
                }
                let mut bound_i = [f32::INFINITY; GROUP];
                let rows_in = GROUP.min(n - i0);
                bound_i[..rows_in].copy_from_slice(&lists.bound[i0..i0 + rows_in]);
                bound_j[..cols_in].copy_from_slice(&lists.bound[j0..j0 + cols_in]);
                for col_off in (0..PANEL).step_by(step) {
                    let (acc, hit) = block(
                        simd,
                        packed.d,
                        (rows, row_off, &bound_i),
                        (cols, col_off, &bound_j[col_off..]),
                        both,
                    );
                    if !hit {
                        continue;
                    }
                    // Look only at the vectors holding a key that beats a bound.
                    let bj = S::as_simd_f32s(&bound_j[col_off..col_off + step]).0;
                    for (r, acc_r) in acc.iter().enumerate().take(rows_in) {
                        let i = i0 + r;
                        let b_i = simd.splat_f32s(bound_i[r]);
                        for (v, key) in acc_r.iter().enumerate() {
                            let row_hit =
                                simd.first_true_m32s(simd.less_than_f32s(*key, b_i)) < lanes;
                            let col_hit = both
                                && simd.first_true_m32s(simd.less_than_f32s(*key, bj[v])) < lanes;
                            if !(row_hit || col_hit) {
                                continue;
                            }
                            let mut buf = [0.0f32; PANEL];
                            S::as_mut_simd_f32s(&mut buf[..lanes]).0[0] = *key;
                            let j_start = j0 + col_off + v * lanes;
                            for (l, key) in buf[..lanes].iter().enumerate() {
                                let j = j_start + l;
                                if i != j && j < n {
                                    if row_hit {
                                        lists.push(i, *key, j as u32);
                                    }
                                    if col_hit {
                                        lists.push(j, *key, i as u32);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`scan_pair`] as a [`pulp::WithSimd`] operation, so that it is compiled for the dispatched
/// instruction set.
struct PairScan<'a> {
    packed: &'a Packed,
    lists: &'a mut Lists,
    ti: usize,
    tj: usize,
}

impl pulp::WithSimd for PairScan<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        scan_pair(simd, self.packed, self.lists, self.ti, self.tj);
    }
}

/// Scans `pairs` of tiles in parallel pieces, each with its own lists starting from `bound`.
fn scan_pairs(
    packed: &Packed,
    pairs: &[(usize, usize)],
    width: usize,
    bound: &[f32],
) -> Vec<Lists> {
    let pieces = rayon::current_num_threads() * PIECES_PER_THREAD;
    let arch = pulp::Arch::new();
    pairs
        .par_iter()
        .with_min_len(pairs.len().div_ceil(pieces).max(1))
        .fold(
            || Lists::new(width, bound.to_vec()),
            |mut lists, &(ti, tj)| {
                arch.dispatch(PairScan {
                    packed,
                    lists: &mut lists,
                    ti,
                    tj,
                });
                lists
            },
        )
        .collect()
}

/// Every row's `k` nearest other rows: `(indices, distances)`, row-major `n × k`, ascending.
pub(super) fn search(points: &Points, k: usize) -> (Vec<u32>, Vec<f64>) {
    let n = points.n;
    let width = (k + MARGIN).min(n - 1);
    let packed = Packed::new(points);
    let tiles = packed.n_panels().div_ceil(TILE_PANELS);
    // First each tile against itself: the lists it leaves bound every row's later candidates, so
    // the other tile pairs start with tight bounds and rarely leave the vector path.
    let diagonal: Vec<(usize, usize)> = (0..tiles).map(|t| (t, t)).collect();
    let mut lists = scan_pairs(&packed, &diagonal, width, &vec![f32::INFINITY; n]);
    let mut seed = vec![f32::INFINITY; n];
    for l in &lists {
        for (s, b) in seed.iter_mut().zip(&l.bound) {
            *s = s.min(*b);
        }
    }
    let pairs: Vec<(usize, usize)> = (0..tiles)
        .flat_map(|ti| (ti + 1..tiles).map(move |tj| (ti, tj)))
        .collect();
    lists.extend(scan_pairs(&packed, &pairs, width, &seed));
    drop(packed);
    let rows: Vec<Vec<(f64, u32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut cands: Vec<(f32, u32)> = lists
                .iter()
                .flat_map(|l| {
                    l.keys[i * width..(i + 1) * width]
                        .iter()
                        .zip(&l.indices[i * width..(i + 1) * width])
                        .filter(|(_, j)| **j != u32::MAX)
                        .map(|(key, j)| (*key, *j))
                })
                .collect();
            cands.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let cands: Vec<u32> = cands.iter().take(width).map(|c| c.1).collect();
            super::finalize(points, i, &cands, k)
        })
        .collect();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for row in rows {
        for (dist, j) in row {
            indices.push(j);
            distances.push(dist);
        }
    }
    (indices, distances)
}
