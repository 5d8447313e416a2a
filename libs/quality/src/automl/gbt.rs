//! Histogram gradient-boosted trees: features quantized into at most 256 bins, leaf-wise trees
//! grown on gradient/hessian histograms (the smaller child's built, the larger's by subtraction),
//! second-order leaf values `−G/(H+λ)` shrunk by the learning rate. Multiclass: one tree per class
//! per round on the softmax gradients `p − y` and hessians `p(1 − p)`; regression: squared loss.
//! With enough rows, a tenth of the training rows is held out to stop early, and each round's
//! trees are grown on a seeded sample of at most [`GbtOptions::max_rows_per_tree`] rows
//! (stochastic gradient boosting); every row's score is still updated.

use rayon::prelude::*;

use crate::Features;

/// Hyperparameters of the boosted trees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GbtOptions {
    /// Boosting rounds at most.
    pub rounds: usize,
    /// Shrinkage of every leaf value.
    pub learning_rate: f64,
    /// Leaves per tree at most.
    pub max_leaves: usize,
    /// Training rows per leaf at least.
    pub min_leaf: usize,
    /// L2 penalty on leaf values.
    pub lambda: f64,
    /// Stop after this many rounds without a better validation loss (with at least
    /// [`EARLY_STOP_MIN_ROWS`] training rows).
    pub patience: usize,
    /// Rows each round's trees are grown on at most (a seeded sample when there are more).
    pub max_rows_per_tree: usize,
}

impl Default for GbtOptions {
    fn default() -> Self {
        Self {
            rounds: 100,
            learning_rate: 0.1,
            max_leaves: 15,
            min_leaf: 10,
            lambda: 1.0,
            patience: 10,
            max_rows_per_tree: 20_000,
        }
    }
}

/// Training rows from which a validation tenth is held out for early stopping.
pub const EARLY_STOP_MIN_ROWS: usize = 2000;
/// Most bins per feature (bin indices fit a `u8`).
const MAX_BINS: usize = 256;
/// Fewest bins per feature; between the two, a quarter of the rows (small tables get coarser
/// histograms, which also keeps their per-node cost proportional to the data).
const MIN_BINS: usize = 32;
/// Values sampled per feature to place the bin edges.
const BIN_SAMPLE: usize = 50_000;

/// The features quantized, row-major.
pub(super) struct Binned {
    d: usize,
    /// Bins per feature at most: the histograms' stride.
    stride: usize,
    bins: Vec<u8>,
}

impl Binned {
    /// Quantizes each column at (sampled) quantile edges, or between its distinct values when it has
    /// few.
    pub(super) fn new(features: &Features) -> Self {
        let (n, d) = (features.n(), features.d());
        let step = n.div_ceil(BIN_SAMPLE).max(1);
        let stride = (n / 4).clamp(MIN_BINS, MAX_BINS);
        let columns: Vec<Vec<u8>> = (0..d)
            .into_par_iter()
            .map(|j| {
                let mut sample: Vec<f32> =
                    (0..n).step_by(step).map(|i| features.row(i)[j]).collect();
                sample.sort_unstable_by(f32::total_cmp);
                sample.dedup();
                let edges: Vec<f32> = if sample.len() <= stride {
                    sample.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect()
                } else {
                    let mut e: Vec<f32> = (1..stride)
                        .map(|q| sample[q * sample.len() / stride])
                        .collect();
                    e.dedup();
                    e
                };
                (0..n)
                    .map(|i| edges.partition_point(|&e| e < features.row(i)[j]) as u8)
                    .collect()
            })
            .collect();
        let mut bins = vec![0u8; n * d];
        for (j, column) in columns.iter().enumerate() {
            for (i, b) in column.iter().enumerate() {
                bins[i * d + j] = *b;
            }
        }
        Self { d, stride, bins }
    }

    fn bin(&self, feature: usize, row: usize) -> u8 {
        self.bins[row * self.d + feature]
    }

    fn row(&self, row: usize) -> &[u8] {
        &self.bins[row * self.d..(row + 1) * self.d]
    }
}

#[derive(Clone, Copy, Default)]
struct Cell {
    g: f64,
    h: f64,
    n: u32,
}

enum Node {
    Split {
        feature: usize,
        threshold: u8,
        left: usize,
        right: usize,
    },
    Leaf(f64),
}

struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn predict(&self, x: &Binned, row: usize) -> f64 {
        let mut at = 0;
        loop {
            match self.nodes[at] {
                Node::Leaf(v) => return v,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    at = if x.bin(feature, row) <= threshold {
                        left
                    } else {
                        right
                    }
                }
            }
        }
    }
}

/// A leaf being grown: its rows, histogram and best split.
struct Open {
    node: usize,
    rows: Vec<u32>,
    hist: Vec<Cell>,
    best: Option<(f64, usize, u8)>,
}

fn histogram(x: &Binned, rows: &[u32], g: &[f64], h: &[f64]) -> Vec<Cell> {
    let mut hist = vec![Cell::default(); x.d * x.stride];
    for &r in rows {
        let (gr, hr) = (g[r as usize], h[r as usize]);
        for (cells, &b) in hist.chunks_exact_mut(x.stride).zip(x.row(r as usize)) {
            let c = &mut cells[usize::from(b)];
            c.g += gr;
            c.h += hr;
            c.n += 1;
        }
    }
    hist
}

fn best_split(hist: &[Cell], stride: usize, opts: &GbtOptions) -> Option<(f64, usize, u8)> {
    let d = hist.len() / stride;
    let total = hist[..stride].iter().fold(Cell::default(), |a, c| Cell {
        g: a.g + c.g,
        h: a.h + c.h,
        n: a.n + c.n,
    });
    let score = |g: f64, h: f64| g * g / (h + opts.lambda);
    let parent = score(total.g, total.h);
    let min = opts.min_leaf as u32;
    let mut best: Option<(f64, usize, u8)> = None;
    for j in 0..d {
        let mut left = Cell::default();
        for (b, c) in hist[j * stride..(j + 1) * stride - 1].iter().enumerate() {
            left.g += c.g;
            left.h += c.h;
            left.n += c.n;
            if left.n < min {
                continue;
            }
            if total.n - left.n < min {
                break;
            }
            let gain = score(left.g, left.h) + score(total.g - left.g, total.h - left.h) - parent;
            if gain > 1e-12 && best.is_none_or(|(bg, _, _)| gain > bg) {
                best = Some((gain, j, b as u8));
            }
        }
    }
    best
}

fn leaf_value(hist: &[Cell], stride: usize, opts: &GbtOptions) -> f64 {
    let (g, h) = hist[..stride]
        .iter()
        .fold((0.0, 0.0), |(g, h), c| (g + c.g, h + c.h));
    -g / (h + opts.lambda) * opts.learning_rate
}

/// Grows one tree on `rows` (indices into `g`, `h` and the binned rows); returns it with each
/// training row's leaf value.
fn grow(
    x: &Binned,
    rows: &[u32],
    g: &[f64],
    h: &[f64],
    opts: &GbtOptions,
) -> (Tree, Vec<(u32, f64)>) {
    let hist = histogram(x, rows, g, h);
    let best = best_split(&hist, x.stride, opts);
    let mut nodes = vec![Node::Leaf(0.0)];
    let mut open = vec![Open {
        node: 0,
        rows: rows.to_vec(),
        hist,
        best,
    }];
    while open.len() < opts.max_leaves {
        let Some(pick) = open
            .iter()
            .enumerate()
            .filter_map(|(i, o)| o.best.map(|b| (i, b.0)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
        else {
            break;
        };
        let leaf = open.swap_remove(pick);
        let Some((_, feature, threshold)) = leaf.best else {
            break;
        };
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = leaf
            .rows
            .iter()
            .partition(|&&r| x.bin(feature, r as usize) <= threshold);
        let (small, large_is_left) = if left_rows.len() <= right_rows.len() {
            (&left_rows, false)
        } else {
            (&right_rows, true)
        };
        let small_hist = histogram(x, small, g, h);
        let large_hist: Vec<Cell> = leaf
            .hist
            .iter()
            .zip(&small_hist)
            .map(|(p, s)| Cell {
                g: p.g - s.g,
                h: p.h - s.h,
                n: p.n - s.n,
            })
            .collect();
        let (left_hist, right_hist) = if large_is_left {
            (large_hist, small_hist)
        } else {
            (small_hist, large_hist)
        };
        let (left, right) = (nodes.len(), nodes.len() + 1);
        nodes.push(Node::Leaf(0.0));
        nodes.push(Node::Leaf(0.0));
        nodes[leaf.node] = Node::Split {
            feature,
            threshold,
            left,
            right,
        };
        for (node, rows, hist) in [
            (left, left_rows, left_hist),
            (right, right_rows, right_hist),
        ] {
            let best = best_split(&hist, x.stride, opts);
            open.push(Open {
                node,
                rows,
                hist,
                best,
            });
        }
    }
    let mut updates = Vec::with_capacity(rows.len());
    for leaf in open {
        let value = leaf_value(&leaf.hist, x.stride, opts);
        nodes[leaf.node] = Node::Leaf(value);
        updates.extend(leaf.rows.iter().map(|&r| (r, value)));
    }
    (Tree { nodes }, updates)
}

/// What the trees learn.
pub(super) enum Target<'a> {
    /// Class labels in `0..k`: softmax probabilities.
    Classes(&'a [usize], usize),
    /// Real values: squared loss.
    Values(&'a [f64]),
}

/// Fits on `train` rows of `x` and predicts `test` rows: `test.len() × k` probabilities for
/// classes, `test.len()` values for regression.
pub(super) fn fit_predict(
    x: &Binned,
    target: &Target<'_>,
    train: &[usize],
    test: &[usize],
    opts: &GbtOptions,
) -> Vec<f64> {
    // Early stopping: every tenth training row validates.
    let (fit, valid): (Vec<usize>, Vec<usize>) = if train.len() >= EARLY_STOP_MIN_ROWS {
        let (fit, valid): (Vec<_>, Vec<_>) =
            train.iter().enumerate().partition(|(i, _)| i % 10 != 9);
        (
            fit.into_iter().map(|(_, &r)| r).collect(),
            valid.into_iter().map(|(_, &r)| r).collect(),
        )
    } else {
        (train.to_vec(), Vec::new())
    };
    let init: Vec<f64> = match target {
        Target::Classes(labels, k) => {
            let mut counts = vec![1.0; *k];
            fit.iter().for_each(|&r| counts[labels[r]] += 1.0);
            let total: f64 = counts.iter().sum();
            counts.iter().map(|c| (c / total).ln()).collect()
        }
        Target::Values(y) => vec![fit.iter().map(|&r| y[r]).sum::<f64>() / fit.len().max(1) as f64],
    };
    // Raw scores per class, then per row of `fit`, `valid`, `test` (class-major, so each class's
    // tree updates its own contiguous scores, in parallel).
    let raw = |rows: usize| -> Vec<Vec<f64>> { init.iter().map(|&v| vec![v; rows]).collect() };
    let (mut s_fit, mut s_valid, mut s_test) = (raw(fit.len()), raw(valid.len()), raw(test.len()));
    let sample_share = opts.max_rows_per_tree as f64 / fit.len().max(1) as f64;
    let mut best = (f64::INFINITY, s_test.clone());
    let mut since_best = 0;
    // Trees see rows by their position in `fit`; bins are looked up through `fit_x`.
    let fit_x = Binned {
        d: x.d,
        stride: x.stride,
        bins: fit.iter().flat_map(|&r| x.row(r).iter().copied()).collect(),
    };
    let all: Vec<u32> = (0..fit.len() as u32).collect();
    for round in 0..opts.rounds {
        let (positions, sampled) = if sample_share < 1.0 {
            let mut sampled = vec![false; fit.len()];
            let rows: Vec<u32> = all
                .iter()
                .copied()
                .filter(|&p| {
                    let u = splitmix(((round as u64) << 32) | u64::from(p));
                    let keep = ((u >> 11) as f64 / (1u64 << 53) as f64) < sample_share;
                    sampled[p as usize] = keep;
                    keep
                })
                .collect();
            (rows, Some(sampled))
        } else {
            (all.clone(), None)
        };
        let grads: Vec<(Vec<f64>, Vec<f64>)> = match target {
            Target::Classes(labels, _) => softmax_class_major(&s_fit)
                .iter()
                .enumerate()
                .map(|(c, q)| {
                    fit.iter()
                        .zip(q)
                        .map(|(&r, &q)| {
                            let y = f64::from(u8::from(labels[r] == c));
                            (q - y, (q * (1.0 - q)).max(1e-6))
                        })
                        .unzip()
                })
                .collect(),
            Target::Values(y) => vec![
                fit.iter()
                    .zip(&s_fit[0])
                    .map(|(&r, s)| (s - y[r], 1.0))
                    .unzip(),
            ],
        };
        let trees: Vec<(Tree, Vec<(u32, f64)>)> = grads
            .par_iter()
            .map(|(g, h)| grow(&fit_x, &positions, g, h, opts))
            .collect();
        s_fit
            .par_iter_mut()
            .zip(s_valid.par_iter_mut())
            .zip(s_test.par_iter_mut())
            .zip(trees.par_iter())
            .for_each(|(((s_fit, s_valid), s_test), (tree, updates))| {
                for &(p, v) in updates {
                    s_fit[p as usize] += v;
                }
                if let Some(sampled) = &sampled {
                    for (p, _) in sampled.iter().enumerate().filter(|(_, s)| !**s) {
                        s_fit[p] += tree.predict(&fit_x, p);
                    }
                }
                for (p, &r) in valid.iter().enumerate() {
                    s_valid[p] += tree.predict(x, r);
                }
                for (p, &r) in test.iter().enumerate() {
                    s_test[p] += tree.predict(x, r);
                }
            });
        if valid.is_empty() {
            continue;
        }
        let loss = match target {
            Target::Classes(labels, _) => {
                let probs = softmax_class_major(&s_valid);
                valid
                    .iter()
                    .enumerate()
                    .map(|(p, &r)| -probs[labels[r]][p].max(1e-15).ln())
                    .sum::<f64>()
            }
            Target::Values(y) => valid
                .iter()
                .zip(&s_valid[0])
                .map(|(&r, s)| (s - y[r]).powi(2))
                .sum(),
        };
        if loss < best.0 {
            best = (loss, s_test.clone());
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= opts.patience {
                break;
            }
        }
    }
    let scores = if valid.is_empty() { s_test } else { best.1 };
    let scores = match target {
        Target::Classes(..) => softmax_class_major(&scores),
        Target::Values(_) => scores,
    };
    // Row-major for the caller.
    (0..test.len())
        .flat_map(|p| scores.iter().map(move |class| class[p]))
        .collect()
}

/// Softmax over classes of class-major `scores` (`scores[c][row]`), class-major.
fn softmax_class_major(scores: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = scores.first().map_or(0, Vec::len);
    let mut out = vec![vec![0.0; n]; scores.len()];
    let mut z = vec![0.0; scores.len()];
    for p in 0..n {
        z.iter_mut().zip(scores).for_each(|(z, s)| *z = s[p]);
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        z.iter_mut().for_each(|v| {
            *v = (*v - max).exp();
            sum += *v;
        });
        z.iter().zip(&mut out).for_each(|(v, o)| o[p] = v / sum);
    }
    out
}

/// SplitMix64's output function: a well-mixed hash of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
