//! Exact search: query blocks × candidate tiles, rayon-parallel over query blocks.
//!
//! Candidates are stored tile-transposed (`d × TILE` per tile), so the inner loop over a tile's
//! candidates is contiguous and vectorises; a query block reuses each tile while it is in cache.

use rayon::prelude::*;

use super::{Metric, Points, TopK};

/// Candidates per tile.
const TILE: usize = 256;
/// Queries per parallel task.
const QUERY_BLOCK: usize = 128;
/// Queries × candidates computed at once in registers by [`micro_kernel`].
const ROWS: usize = 4;
const LANES: usize = 8;

/// Dot products of `ROWS` queries with the `LANES` tile columns from `col0`, accumulated in a small
/// fixed-size block the compiler keeps in registers.
#[inline]
fn micro_kernel(q: &[&[f64]; ROWS], tile: &[f64], col0: usize, d: usize) -> [[f64; LANES]; ROWS] {
    let mut acc = [[0.0f64; LANES]; ROWS];
    for c in 0..d {
        let cols: &[f64; LANES] = tile[c * TILE + col0..c * TILE + col0 + LANES]
            .try_into()
            .expect("tile width is a multiple of LANES");
        for (r, row) in acc.iter_mut().enumerate() {
            let qv = q[r][c];
            for (a, v) in row.iter_mut().zip(cols) {
                *a += qv * v;
            }
        }
    }
    acc
}

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

/// Every row's `k` nearest other rows: `(indices, distances)`, row-major `n × k`, ascending.
pub(super) fn search(points: &Points, k: usize) -> (Vec<u32>, Vec<f64>) {
    let (n, d) = (points.n, points.d);
    let tiles: Vec<Vec<f64>> = (0..n.div_ceil(TILE))
        .into_par_iter()
        .map(|t| {
            let (start, end) = (t * TILE, ((t + 1) * TILE).min(n));
            let mut tile = vec![0.0; d * TILE];
            for (col, j) in (start..end).enumerate() {
                for (c, v) in points.row(j).iter().enumerate() {
                    tile[c * TILE + col] = *v;
                }
            }
            tile
        })
        .collect();
    let blocks: Vec<(Vec<u32>, Vec<f64>)> = (0..n.div_ceil(QUERY_BLOCK))
        .into_par_iter()
        .map(|b| {
            let queries = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(n);
            let mut tops: Vec<TopK> = queries.clone().map(|_| TopK::new(k)).collect();
            let qs: Vec<usize> = queries.clone().collect();
            for (t, tile) in tiles.iter().enumerate() {
                let start = t * TILE;
                let width = TILE.min(n - start);
                for (group, tops4) in qs.chunks(ROWS).zip(tops.chunks_mut(ROWS)) {
                    // Pad a short group by repeating its last query; padded results are dropped.
                    let q: [&[f64]; ROWS] =
                        std::array::from_fn(|r| points.row(group[r.min(group.len() - 1)]));
                    for col0 in (0..width).step_by(LANES) {
                        let dots = micro_kernel(&q, tile, col0, d);
                        for (r, top) in tops4.iter_mut().enumerate() {
                            for (l, dot) in dots[r].iter().enumerate().take(width - col0) {
                                let j = start + col0 + l;
                                let key = search_key(points, group[r], j, *dot);
                                if key < top.bound() && j != group[r] {
                                    top.push(key, j as u32);
                                }
                            }
                        }
                    }
                }
            }
            let mut idx = Vec::with_capacity(queries.len() * k);
            let mut dist = Vec::with_capacity(queries.len() * k);
            for (q, top) in queries.zip(tops) {
                let cands: Vec<u32> = top.into_sorted().into_iter().map(|(_, j)| j).collect();
                for (dj, j) in super::finalize(points, q, &cands, k) {
                    idx.push(j);
                    dist.push(dj);
                }
            }
            (idx, dist)
        })
        .collect();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for (i, dd) in blocks {
        indices.extend(i);
        distances.extend(dd);
    }
    (indices, distances)
}

/// A key monotone in the distance, cheap to compute from a dot product.
#[inline]
fn search_key(points: &Points, i: usize, j: usize, dot: f64) -> f64 {
    match points.metric {
        Metric::Cosine => points.cosine_from_dot(i, j, dot),
        Metric::Euclidean => points.sq_norms[i] + points.sq_norms[j] - 2.0 * dot,
    }
}
