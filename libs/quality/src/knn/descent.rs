//! Approximate search: random-projection-forest initialisation refined by NN-descent (Dong, Charikar
//! & Li, WWW 2011: "a neighbour of a neighbour is likely a neighbour").
//!
//! Every step is rayon-parallel and writes only its own rows: leaves of the random-projection trees
//! are brute-forced, then each round every row pulls candidates from its neighbours' and reverse
//! neighbours' lists (only pairs not compared before: at least one of the two links is new) and keeps
//! the best. Rounds stop when fewer than `delta · n · K` entries change. The search runs in f32 on
//! squared Euclidean distance between the prepared rows (unit-normalised for cosine, where it is
//! monotone in cosine distance); the kept neighbours' distances are recomputed exactly in f64.

use rayon::prelude::*;

use super::{KnnOptions, Points, TopK};

/// One row's working list: neighbours sorted by distance, with "new since last round" flags.
#[derive(Clone)]
struct List {
    items: Vec<(f32, u32, bool)>,
}

/// Every row's `k` approximate nearest other rows: `(indices, distances)`, row-major `n × k`.
pub(super) fn search(points: &Points, k: usize, options: &KnnOptions) -> (Vec<u32>, Vec<f64>) {
    let (n, d) = (points.n, points.d);
    let original: Vec<f32> = points.data.iter().map(|v| *v as f32).collect();
    // Work in the leaf order of one random-projection tree, so that rows close in space are close in
    // memory: the rounds are bound by memory latency, not arithmetic.
    let order: Vec<u32> =
        rp_tree_leaves(n, d, &original, options.leaf_size, !options.seed).concat();
    let data: Vec<f32> = order
        .iter()
        .flat_map(|i| &original[*i as usize * d..(*i as usize + 1) * d])
        .copied()
        .collect();
    drop(original);
    let row = |i: usize| &data[i * d..(i + 1) * d];
    let dist = |a: usize, b: usize| sq_dist(row(a), row(b));
    let width = options.candidates.max(k).min(n - 1);

    let mut lists = forest_init(n, d, &data, width, options);
    for round in 0..options.max_rounds {
        let reverse = reverse_lists(&lists, n, width);
        let updated: Vec<(List, usize)> = (0..n)
            .into_par_iter()
            // Few, large pieces: each piece allocates an `n`-long `seen` array.
            .with_min_len(4096)
            .map_init(
                || vec![u32::MAX; n],
                |seen, v| {
                    // `seen[w] == v`: w is v itself, already listed, or already compared this round.
                    let tag = v as u32;
                    let own = &lists[v].items;
                    seen[v] = tag;
                    for (_, u, _) in own {
                        seen[*u as usize] = tag;
                    }
                    let mut merged: Vec<(f32, u32, bool)> =
                        own.iter().map(|(dd, u, _)| (*dd, *u, false)).collect();
                    let hops = own
                        .iter()
                        .map(|(_, u, new)| (*u, *new))
                        .chain(reverse[v].iter().copied());
                    for (u, new_vu) in hops {
                        for (_, w, new_uw) in &lists[u as usize].items {
                            if !(new_vu || *new_uw) || seen[*w as usize] == tag {
                                continue;
                            }
                            seen[*w as usize] = tag;
                            let dw = dist(v, *w as usize);
                            if merged.len() < width || dw < merged[merged.len() - 1].0 {
                                let pos =
                                    merged.partition_point(|m| m.0 < dw || (m.0 == dw && m.1 < *w));
                                merged.insert(pos, (dw, *w, true));
                                merged.truncate(width);
                            }
                        }
                    }
                    let changes = merged.iter().filter(|m| m.2).count();
                    (List { items: merged }, changes)
                },
            )
            .collect();
        let changes: usize = updated.iter().map(|(_, c)| c).sum();
        lists = updated.into_iter().map(|(l, _)| l).collect();
        if round > 0 && (changes as f64) < options.delta * (n * width) as f64 {
            break;
        }
    }

    let mut position = vec![0usize; n];
    for (p, i) in order.iter().enumerate() {
        position[*i as usize] = p;
    }
    let finals: Vec<Vec<(f64, u32)>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let cands: Vec<u32> = lists[position[i]]
                .items
                .iter()
                .map(|(_, j, _)| order[*j as usize])
                .collect();
            super::finalize(points, i, &cands, k)
        })
        .collect();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for list in finals {
        for (dd, j) in list {
            indices.push(j);
            distances.push(dd);
        }
    }
    (indices, distances)
}

/// Squared Euclidean distance with independent accumulators (so it vectorises).
fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += (x[l] - y[l]) * (x[l] - y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Reverse links: for each row, up to `width` rows that list it, each with its link's "new" flag.
fn reverse_lists(lists: &[List], n: usize, width: usize) -> Vec<Vec<(u32, bool)>> {
    let mut reverse: Vec<Vec<(u32, bool)>> = vec![Vec::new(); n];
    for (v, l) in lists.iter().enumerate() {
        for (_, u, new) in &l.items {
            let r = &mut reverse[*u as usize];
            if r.len() < width {
                r.push((v as u32, *new));
            }
        }
    }
    reverse
}

/// Initial lists from a random-projection forest: each row's best `width` among its leaf-mates.
fn forest_init(n: usize, d: usize, data: &[f32], width: usize, options: &KnnOptions) -> Vec<List> {
    let leaf_size = options.leaf_size.max(width + 1);
    let leaves: Vec<Vec<u32>> = (0..options.trees)
        .into_par_iter()
        .flat_map(|t| rp_tree_leaves(n, d, data, leaf_size, options.seed.wrapping_add(t as u64)))
        .collect();
    let mut tops: Vec<TopK> = (0..n).map(|_| TopK::new(width)).collect();
    let leaf_results: Vec<(u32, Vec<(f64, u32)>)> = leaves
        .par_iter()
        .flat_map_iter(|leaf| {
            leaf.iter()
                .map(|a| {
                    let ra = &data[*a as usize * d..(*a as usize + 1) * d];
                    let mut top = TopK::new(width);
                    for b in leaf.iter().filter(|b| *b != a) {
                        let rb = &data[*b as usize * d..(*b as usize + 1) * d];
                        top.push(f64::from(sq_dist(ra, rb)), *b);
                    }
                    (*a, top.into_sorted())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (a, found) in leaf_results {
        let top = &mut tops[a as usize];
        for (dd, b) in found {
            if !top.contains(b) {
                top.push(dd, b);
            }
        }
    }
    tops.into_iter()
        .map(|t| List {
            items: t
                .into_sorted()
                .into_iter()
                .map(|(dd, j)| (dd as f32, j, true))
                .collect(),
        })
        .collect()
}

/// Leaves of one random-projection tree: split by the hyperplane halfway between two random rows
/// until at most `leaf_size` rows remain (halving by position when a split is degenerate).
fn rp_tree_leaves(n: usize, d: usize, data: &[f32], leaf_size: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = crate::detectors::SplitMix64::new(seed);
    let row = |i: u32| &data[i as usize * d..(i as usize + 1) * d];
    let mut stack: Vec<Vec<u32>> = vec![(0..n as u32).collect()];
    let mut leaves = Vec::new();
    while let Some(node) = stack.pop() {
        if node.len() <= leaf_size {
            leaves.push(node);
            continue;
        }
        let a = node[rng.below(node.len())];
        let b = node[rng.below(node.len())];
        let normal: Vec<f32> = row(a).iter().zip(row(b)).map(|(x, y)| x - y).collect();
        let offset: f32 = row(a)
            .iter()
            .zip(row(b))
            .zip(&normal)
            .map(|((x, y), w)| w * (x + y) / 2.0)
            .sum();
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = node.iter().partition(|i| {
            let side: f32 = row(**i).iter().zip(&normal).map(|(x, w)| x * w).sum();
            side < offset
        });
        if left.is_empty() || right.is_empty() {
            let mut all = node;
            let half = all.len() / 2;
            right = all.split_off(half);
            left = all;
        }
        stack.push(left);
        stack.push(right);
    }
    leaves
}
