//! The synthetic inputs of `shared/fixtures/cleanlab-reference/speed.md`: true labels uniform over
//! `K` classes; logits `N(0,1)` with `+3` on the true class, `pred_probs = softmax(logits)`; 10% of
//! labels replaced by a uniformly random class; features `N(0,1)` with `+2` on coordinate `y`.
//! Shared by the bench binary and the criterion benches.

use trustmesh_quality::{Features, PredProbs};

/// One synthetic dataset.
pub(crate) struct Synthetic {
    /// Given (noisy) labels.
    pub(crate) labels: Vec<usize>,
    /// Predicted probabilities.
    pub(crate) pred_probs: PredProbs,
    /// Features, when asked for.
    pub(crate) features: Option<Features>,
}

/// SplitMix64 with Box–Muller normals.
struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let theta = std::f64::consts::TAU * v;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// Generates `n` rows over `k` classes, with `d`-column features if `d` is given (`d > k` so the
/// `+2` coordinate exists).
pub(crate) fn generate(n: usize, k: usize, d: Option<usize>, seed: u64) -> Synthetic {
    let mut rng = Rng {
        state: seed,
        spare: None,
    };
    let truth: Vec<usize> = (0..n).map(|_| rng.below(k)).collect();
    let mut probs = Vec::with_capacity(n * k);
    let mut logits = vec![0.0f64; k];
    for y in &truth {
        for (c, l) in logits.iter_mut().enumerate() {
            *l = rng.normal() + if c == *y { 3.0 } else { 0.0 };
        }
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        probs.extend(logits.iter().map(|l| (l - max).exp() / total));
    }
    let labels = truth
        .iter()
        .map(|y| {
            if rng.uniform() < 0.1 {
                rng.below(k)
            } else {
                *y
            }
        })
        .collect();
    let features = d.map(|d| {
        let data: Vec<f32> = truth
            .iter()
            .flat_map(|y| (0..d).map(move |c| (c, *y)))
            .map(|(c, y)| (rng.normal() + if c == y { 2.0 } else { 0.0 }) as f32)
            .collect();
        Features::new(data, d).expect("finite synthetic features")
    });
    Synthetic {
        labels,
        pred_probs: PredProbs::new(probs, k).expect("valid synthetic pred_probs"),
        features,
    }
}
