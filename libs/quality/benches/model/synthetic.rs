//! A seeded classification table in the manner of scikit-learn's `make_classification`: each class
//! owns `clusters_per_class` Gaussian clusters centred on distinct vertices of a hypercube of side
//! `2·class_sep` in the informative subspace, each cluster's covariance mixed by a random matrix;
//! redundant features are random linear combinations of the informative ones, the rest is N(0, 1)
//! noise; `flip` of the labels are then replaced by a uniformly random class.
//! Shared by the model benchmark and tests.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use trustmesh_quality::Features;

/// The shape of a synthetic table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) n: usize,
    pub(crate) classes: usize,
    pub(crate) informative: usize,
    pub(crate) redundant: usize,
    pub(crate) noise: usize,
    pub(crate) clusters_per_class: usize,
    pub(crate) class_sep: f64,
    pub(crate) flip: f64,
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u: f64 = 1.0 - rng.r#gen::<f64>();
    let v: f64 = rng.r#gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Generates the table: features (`informative + redundant + noise` columns) and labels.
pub(crate) fn make_classification(spec: &Spec, seed: u64) -> (Features, Vec<usize>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (inf, red) = (spec.informative, spec.redundant);
    let clusters = spec.classes * spec.clusters_per_class;
    assert!(clusters <= 1 << inf, "not enough hypercube vertices");
    let mut vertices: Vec<u64> = Vec::with_capacity(clusters);
    while vertices.len() < clusters {
        let v = rng.gen_range(0..1u64 << inf);
        if !vertices.contains(&v) {
            vertices.push(v);
        }
    }
    let centroids: Vec<Vec<f64>> = vertices
        .iter()
        .map(|v| {
            (0..inf)
                .map(|j| {
                    if v >> j & 1 == 1 {
                        spec.class_sep
                    } else {
                        -spec.class_sep
                    }
                })
                .collect()
        })
        .collect();
    let mut uniform_matrix = |rows: usize, cols: usize| -> Vec<f64> {
        (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect()
    };
    let mixes: Vec<Vec<f64>> = (0..clusters).map(|_| uniform_matrix(inf, inf)).collect();
    let redundant_mix = uniform_matrix(inf, red);
    let d = inf + red + spec.noise;
    let mut data = Vec::with_capacity(spec.n * d);
    let mut labels = Vec::with_capacity(spec.n);
    let mut z = vec![0.0; inf];
    let mut x = vec![0.0; inf];
    for _ in 0..spec.n {
        let cluster = rng.gen_range(0..clusters);
        z.iter_mut().for_each(|v| *v = normal(&mut rng));
        for (j, x) in x.iter_mut().enumerate() {
            *x = centroids[cluster][j]
                + (0..inf)
                    .map(|i| z[i] * mixes[cluster][i * inf + j])
                    .sum::<f64>();
        }
        data.extend(x.iter().map(|v| *v as f32));
        data.extend((0..red).map(|r| {
            (0..inf)
                .map(|i| x[i] * redundant_mix[i * red + r])
                .sum::<f64>() as f32
        }));
        data.extend((0..spec.noise).map(|_| normal(&mut rng) as f32));
        let class = cluster % spec.classes;
        labels.push(if rng.r#gen::<f64>() < spec.flip {
            rng.gen_range(0..spec.classes)
        } else {
            class
        });
    }
    (
        Features::new(data, d).expect("finite synthetic features"),
        labels,
    )
}
