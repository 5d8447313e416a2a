//! AutoML beyond the reference fixtures: a generated text dataset with planted label noise, mixed
//! column types, regression, determinism, and bad input (one class, tiny classes, all-null and
//! constant columns, 10,000 columns, garbage in a numeric column).

use trustmesh_quality::QualityError;
use trustmesh_quality::automl::{
    AutoMlOptions, Column, ColumnRole, ModelKind, Table, Task, featurize, infer_schema, train,
};
use trustmesh_quality::label::{LabelIssueOptions, find_label_issues};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn f1(flagged: &[bool], truth: &[bool]) -> f64 {
    let count = |f: bool, t: bool| {
        flagged
            .iter()
            .zip(truth)
            .filter(|&(&a, &b)| a == f && b == t)
            .count() as f64
    };
    let tp = count(true, true);
    2.0 * tp / (2.0 * tp + count(true, false) + count(false, true))
}

/// Flips `share` of `labels` to another of `k` classes; returns which were flipped.
fn plant_noise(labels: &mut [usize], k: usize, share: f64, rng: &mut Rng) -> Vec<bool> {
    labels
        .iter_mut()
        .map(|l| {
            let flip = rng.uniform() < share;
            if flip {
                *l = (*l + 1 + rng.below(k - 1)) % k;
            }
            flip
        })
        .collect()
}

const TOPICS: [&[&str]; 4] = [
    &[
        "match", "goal", "team", "coach", "league", "score", "season", "player", "referee",
        "stadium", "striker", "defence", "trophy", "penalty",
    ],
    &[
        "recipe", "oven", "flour", "garlic", "simmer", "butter", "sauce", "bake", "onion",
        "pepper", "dough", "roast", "spoon", "salt",
    ],
    &[
        "server", "compile", "kernel", "database", "latency", "deploy", "cache", "thread",
        "binary", "network", "query", "cluster", "crash", "patch",
    ],
    &[
        "market",
        "shares",
        "profit",
        "inflation",
        "bond",
        "interest",
        "dividend",
        "budget",
        "investor",
        "revenue",
        "loan",
        "bank",
        "tax",
        "equity",
    ],
];

const COMMON: [&str; 24] = [
    "the", "a", "was", "is", "on", "it", "this", "that", "we", "they", "after", "before", "very",
    "new", "today", "again", "really", "with", "and", "for", "about", "some", "more", "still",
];

/// Short texts over four topics: each word is a topic word with probability 0.35, else common.
fn text_dataset(n: usize, seed: u64) -> (Table, Vec<bool>) {
    let mut rng = Rng(seed);
    let topics = ["sports", "cooking", "tech", "finance"];
    let mut truth: Vec<usize> = (0..n).map(|_| rng.below(4)).collect();
    let texts: Vec<String> = truth
        .iter()
        .map(|&t| {
            let len = 6 + rng.below(10);
            (0..len)
                .map(|_| {
                    if rng.uniform() < 0.35 {
                        TOPICS[t][rng.below(TOPICS[t].len())]
                    } else {
                        COMMON[rng.below(COMMON.len())]
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let noise = plant_noise(&mut truth, 4, 0.1, &mut rng);
    let table = Table::new(vec![
        Column::new("doc_id", (0..n).map(|i| format!("d{i}")).collect()),
        Column::new("body", texts),
        Column::new(
            "topic",
            truth.iter().map(|&t| topics[t].to_owned()).collect(),
        ),
    ])
    .unwrap();
    (table, noise)
}

#[test]
fn text_column_finds_planted_label_noise() {
    let (table, noise) = text_dataset(800, 11);
    let result = train(&table, &AutoMlOptions::new("topic")).unwrap();
    let summary = &result.summary;
    let roles: Vec<(&str, ColumnRole)> = summary
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.role))
        .collect();
    assert_eq!(
        roles,
        [("doc_id", ColumnRole::Id), ("body", ColumnRole::Text)]
    );
    assert!(summary.sparse_features > 100, "{}", summary.sparse_features);
    let pred_probs = result.pred_probs.as_ref().unwrap();
    let flagged =
        find_label_issues(&result.labels, pred_probs, &LabelIssueOptions::default()).unwrap();
    let ours = f1(&flagged, &noise);
    for m in summary.models.iter().chain([&summary.ensemble]) {
        eprintln!(
            "text {}: weight {:.3} accuracy {:.4} log loss {:.4}",
            m.model,
            m.weight,
            m.accuracy.unwrap(),
            m.log_loss.unwrap()
        );
    }
    let accuracy = summary.ensemble.accuracy.unwrap();
    eprintln!("text: accuracy {accuracy:.4}, label-issue F1 {ours:.4}");
    // 10% of the given labels are wrong, so 0.9 is the ceiling.
    assert!(accuracy >= 0.8, "accuracy {accuracy}");
    assert!(ours >= 0.7, "F1 {ours}");
    assert_eq!(summary.ensemble.per_class.len(), 4);
}

/// A table mixing every featurized role, with a label driven by the numeric and categorical columns.
fn mixed_dataset(n: usize, seed: u64) -> Table {
    let mut rng = Rng(seed);
    let mut cols: [Vec<String>; 9] = Default::default();
    let colours = ["red", "green", "blue"];
    for i in 0..n {
        let x = rng.normal();
        let colour = rng.below(3);
        let score = x + if colour == 0 { 1.5 } else { -0.5 } + 0.3 * rng.normal();
        let missing = rng.below(10) == 0;
        cols[0].push(if missing {
            String::new()
        } else {
            format!("{x:.4}")
        });
        cols[1].push(colours[colour].to_owned());
        cols[2].push(if i % 2 == 0 { "yes" } else { "no" }.to_owned());
        cols[3].push(format!("2024-{:02}-{:02}", 1 + i % 12, 1 + i % 28));
        cols[4].push(format!("[{:.3}, {:.3}]", rng.normal(), x));
        cols[5].push(String::new());
        cols[6].push("same".to_owned());
        cols[7].push(format!("zip{}", rng.below(500)));
        cols[8].push(if score > 0.0 { "pos" } else { "neg" }.to_owned());
    }
    let names = [
        "x", "colour", "flag", "when", "emb", "empty", "constant", "zip", "label",
    ];
    Table::new(
        names
            .iter()
            .zip(cols)
            .map(|(name, cells)| Column::new(*name, cells))
            .collect(),
    )
    .unwrap()
}

#[test]
fn mixed_columns_are_featurized_by_role() {
    let table = mixed_dataset(400, 3);
    let plans = infer_schema(&table, "label", &[], &Default::default()).unwrap();
    let roles: Vec<ColumnRole> = plans.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [
            ColumnRole::Numeric,
            ColumnRole::Categorical,
            ColumnRole::Boolean,
            ColumnRole::Datetime,
            ColumnRole::Embedding,
            ColumnRole::Ignored,
            ColumnRole::Ignored,
            ColumnRole::Categorical,
        ]
    );
    let design = featurize(&table, &plans).unwrap();
    let names = design.dense_names();
    for expected in [
        "x",
        "x.missing",
        "colour=red",
        "flag",
        "when.month",
        "emb[1]",
        "zip#0",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    // Constant parts (the year) are dropped; nothing of the empty or constant columns remains.
    assert!(
        !names
            .iter()
            .any(|n| n == "when.year" || n.starts_with("empty") || n.starts_with("constant"))
    );
    let features = design.dense_features().unwrap();
    for (j, name) in names.iter().enumerate() {
        let mean: f64 = (0..features.n())
            .map(|i| f64::from(features.row(i)[j]))
            .sum::<f64>()
            / 400.0;
        assert!(mean.abs() < 1e-4, "{name} mean {mean}");
    }
    let result = train(&table, &AutoMlOptions::new("label")).unwrap();
    let accuracy = result.summary.ensemble.accuracy.unwrap();
    assert!(accuracy > 0.9, "accuracy {accuracy}");
    let json = serde_json::to_value(&result.summary).unwrap();
    assert_eq!(json["task"], "classification");
    assert_eq!(json["models"].as_array().unwrap().len(), 3);
    assert!(json["ensemble"]["per_class"][0]["f1"].is_number());
}

#[test]
fn results_are_deterministic_and_independent_of_the_thread_count() {
    let table = mixed_dataset(300, 5);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| train(&table, &AutoMlOptions::new("label")).unwrap())
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.pred_probs, b.pred_probs);
    assert_eq!(a.fold_of_row, b.fold_of_row);
    let mut other_seed = AutoMlOptions::new("label");
    other_seed.seed = 1;
    assert_ne!(
        train(&table, &other_seed).unwrap().fold_of_row,
        a.fold_of_row
    );
}

#[test]
fn a_numeric_label_gets_out_of_sample_regression_predictions() {
    let mut rng = Rng(9);
    let n = 300;
    let x: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|x| 3.0 * x + 0.2 * rng.normal() + 10.0)
        .collect();
    let table = Table::new(vec![
        Column::new("x", x.iter().map(|v| format!("{v:.5}")).collect()),
        Column::new("y", y.iter().map(|v| format!("{v:.5}")).collect()),
    ])
    .unwrap();
    let result = train(&table, &AutoMlOptions::new("y")).unwrap();
    assert_eq!(result.summary.task, Task::Regression);
    assert!(result.pred_probs.is_none());
    assert_eq!(result.predictions.len(), n);
    let r2 = result.summary.ensemble.r2.unwrap();
    eprintln!("regression: {:?}", result.summary.models);
    assert!(r2 > 0.95, "R² {r2}");
    let ridge = result
        .summary
        .models
        .iter()
        .find(|m| m.model == "ridge")
        .unwrap();
    assert!(ridge.r2.unwrap() > 0.99, "{ridge:?}");
}

fn two_column_table(label: Vec<String>) -> Table {
    let n = label.len();
    Table::new(vec![
        Column::new(
            "x",
            (0..n)
                .map(|i| (i as f64 * 0.37).sin().to_string())
                .collect(),
        ),
        Column::new("label", label),
    ])
    .unwrap()
}

#[test]
fn bad_input_gets_a_clear_message_or_a_documented_fallback() {
    // One class.
    let table = two_column_table(vec!["a".into(); 30]);
    let err = train(&table, &AutoMlOptions::new("label")).unwrap_err();
    assert!(
        err.to_string().contains("every row has the class \"a\""),
        "{err}"
    );
    // A missing label names its row.
    let mut labels: Vec<String> = (0..30).map(|i| ["a", "b"][i % 2].to_owned()).collect();
    labels[4] = String::new();
    let err = train(&two_column_table(labels), &AutoMlOptions::new("label")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column \"label\", row 4: the label is missing"
    );
    // A class with fewer rows than folds: warned about, every row still predicted.
    let mut labels: Vec<String> = (0..40).map(|i| ["a", "b"][i % 2].to_owned()).collect();
    labels[0] = "rare".into();
    labels[1] = "rare".into();
    let result = train(&two_column_table(labels), &AutoMlOptions::new("label")).unwrap();
    assert!(
        result
            .summary
            .warnings
            .iter()
            .any(|w| w.contains("has 2 rows, fewer than the 5 folds")),
        "{:?}",
        result.summary.warnings
    );
    assert_ne!(result.fold_of_row[0], result.fold_of_row[1]);
    assert_eq!(result.pred_probs.unwrap().n(), 40);
    // Fewer rows than folds: one fold per row.
    let result = train(
        &two_column_table(["a", "b", "a", "b"].map(String::from).to_vec()),
        &AutoMlOptions::new("label"),
    )
    .unwrap();
    assert_eq!(result.summary.folds, 4);
    // Garbage in a numeric column names the row and column.
    let mut x: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    x[12] = "twelve".into();
    let table = Table::new(vec![
        Column::new("x", x),
        Column::new(
            "label",
            (0..30).map(|i| ["a", "b"][i % 2].to_owned()).collect(),
        ),
    ])
    .unwrap();
    let err = train(&table, &AutoMlOptions::new("label")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("column \"x\", row 12: \"twelve\" is not a number"),
        "{err}"
    );
    // ... and so does a user-given numeric role over words.
    let mut opts = AutoMlOptions::new("label");
    opts.roles.insert("x".into(), ColumnRole::Numeric);
    let mut words = table.clone();
    words = Table::new(
        words
            .columns()
            .iter()
            .map(|c| {
                if c.name() == "x" {
                    Column::new("x", (0..30).map(|i| format!("w{i}")).collect())
                } else {
                    c.clone()
                }
            })
            .collect(),
    )
    .unwrap();
    let err = train(&words, &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column \"x\", row 0: \"w0\" is not a number"
    );
    // Only all-null and constant columns: nothing to learn from.
    let table = Table::new(vec![
        Column::new("empty", vec![String::new(); 10]),
        Column::new("constant", vec!["7".into(); 10]),
        Column::new(
            "label",
            (0..10).map(|i| ["a", "b"][i % 2].to_owned()).collect(),
        ),
    ])
    .unwrap();
    assert_eq!(
        train(&table, &AutoMlOptions::new("label")).unwrap_err(),
        QualityError::Empty
    );
    // No such label column.
    assert!(matches!(
        train(&table, &AutoMlOptions::new("nope")).unwrap_err(),
        QualityError::InvalidColumn { ref column, .. } if column == "nope"
    ));
}

#[test]
fn ten_thousand_columns_train_with_the_trees_skipped() {
    let mut rng = Rng(4);
    let (n, d) = (120, 10_000);
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let mut columns: Vec<Column> = (0..d)
        .map(|j| {
            let cells = labels
                .iter()
                .map(|&l| {
                    let signal = if j < 5 { 2.0 * l as f64 } else { 0.0 };
                    format!("{:.3}", rng.normal() + signal)
                })
                .collect();
            Column::new(format!("c{j}"), cells)
        })
        .collect();
    columns.push(Column::new(
        "label",
        labels.iter().map(|l| l.to_string()).collect(),
    ));
    let table = Table::new(columns).unwrap();
    let mut opts = AutoMlOptions::new("label");
    opts.models = vec![ModelKind::Linear, ModelKind::GradientBoostedTrees];
    let result = train(&table, &opts).unwrap();
    assert_eq!(result.summary.dense_features, d);
    assert!(
        result
            .summary
            .warnings
            .iter()
            .any(|w| w.contains("gradient-boosted trees skipped")),
        "{:?}",
        result.summary.warnings
    );
    assert_eq!(result.summary.models.len(), 1);
    assert_eq!(result.pred_probs.unwrap().n(), n);
}

/// PNG images of three shapes (disc, square, horizontal stripes) in random colours, positions and
/// sizes over a noisy background.
fn image_dataset(n: usize, seed: u64) -> (Table, Vec<bool>) {
    use image::{ImageFormat, Rgb, RgbImage};
    let mut rng = Rng(seed);
    let shapes = ["disc", "square", "stripes"];
    let mut truth: Vec<usize> = (0..n).map(|_| rng.below(3)).collect();
    let images: Vec<Vec<u8>> = truth
        .iter()
        .map(|&shape| {
            let side = 40u32;
            let colour = [
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ];
            let (cx, cy) = (12 + rng.below(16) as i64, 12 + rng.below(16) as i64);
            let r = 6 + rng.below(6) as i64;
            let mut img = RgbImage::new(side, side);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
                let inside = match shape {
                    0 => dx * dx + dy * dy <= r * r,
                    1 => dx.abs() <= r && dy.abs() <= r,
                    _ => (y / 4) % 2 == 0,
                };
                *p = if inside {
                    Rgb(colour)
                } else {
                    let v = 100 + rng.below(40) as u8;
                    Rgb([v, v, v])
                };
            }
            let mut png = std::io::Cursor::new(Vec::new());
            img.write_to(&mut png, ImageFormat::Png).unwrap();
            png.into_inner()
        })
        .collect();
    let noise = plant_noise(&mut truth, 3, 0.1, &mut rng);
    let table = Table::new(vec![
        Column::binary("picture", images),
        Column::new(
            "shape",
            truth.iter().map(|&t| shapes[t].to_owned()).collect(),
        ),
    ])
    .unwrap();
    (table, noise)
}

#[test]
fn image_column_finds_planted_label_noise() {
    let (table, noise) = image_dataset(450, 21);
    let result = train(&table, &AutoMlOptions::new("shape")).unwrap();
    let summary = &result.summary;
    assert_eq!(summary.columns[0].role, ColumnRole::Image);
    let pred_probs = result.pred_probs.as_ref().unwrap();
    let flagged =
        find_label_issues(&result.labels, pred_probs, &LabelIssueOptions::default()).unwrap();
    let ours = f1(&flagged, &noise);
    for m in summary.models.iter().chain([&summary.ensemble]) {
        eprintln!(
            "image {}: weight {:.3} accuracy {:.4} log loss {:.4}",
            m.model,
            m.weight,
            m.accuracy.unwrap(),
            m.log_loss.unwrap()
        );
    }
    let accuracy = summary.ensemble.accuracy.unwrap();
    eprintln!("image: accuracy {accuracy:.4}, label-issue F1 {ours:.4}");
    assert!(accuracy >= 0.8, "accuracy {accuracy}");
    assert!(ours >= 0.65, "F1 {ours}");
    // A cell that is not an image names its row.
    let mut cells: Vec<Vec<u8>> = vec![b"\x89PNG\r\n\x1a\nbroken".to_vec(); 20];
    cells[3] = Vec::new();
    let broken = Table::new(vec![
        Column::binary("picture", cells),
        Column::new(
            "shape",
            (0..20).map(|i| ["a", "b"][i % 2].to_owned()).collect(),
        ),
    ])
    .unwrap();
    let err = train(&broken, &AutoMlOptions::new("shape")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("column \"picture\", row 0: not a decodable image"),
        "{err}"
    );
}

#[test]
fn trees_and_neighbours_learn_what_a_linear_model_cannot() {
    // XOR of the signs of two features: no linear boundary separates the classes.
    let mut rng = Rng(17);
    let n = 600;
    let (mut a, mut b, mut label) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (x, y) = (rng.normal(), rng.normal());
        a.push(format!("{x:.4}"));
        b.push(format!("{y:.4}"));
        label.push(
            if (x > 0.0) == (y > 0.0) {
                "same"
            } else {
                "different"
            }
            .to_owned(),
        );
    }
    let table = Table::new(vec![
        Column::new("a", a),
        Column::new("b", b),
        Column::new("label", label),
    ])
    .unwrap();
    let result = train(&table, &AutoMlOptions::new("label")).unwrap();
    let accuracy = |model: &str| {
        result
            .summary
            .models
            .iter()
            .find(|m| m.model == model)
            .and_then(|m| m.accuracy)
            .unwrap()
    };
    assert!(
        accuracy("logistic_regression") < 0.7,
        "{:?}",
        result.summary.models
    );
    assert!(
        accuracy("gradient_boosted_trees") > 0.9,
        "{:?}",
        result.summary.models
    );
    assert!(accuracy("knn") > 0.9, "{:?}", result.summary.models);
    let linear_weight = result.summary.models[0].weight;
    assert!(linear_weight < 0.2, "{linear_weight}");
    assert!(result.summary.ensemble.accuracy.unwrap() > 0.9);
}
