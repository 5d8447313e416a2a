//! Datalab's issue types (reference §8–§9), Studio's `ambiguous` / `well_labeled` / suggested labels,
//! and the per-row trust score, behind one orchestrator: [`find_issues`].
//!
//! Every check yields a column pair `is_<type>_issue` (bool) and `<type>_score` in [0, 1] where
//! 1 = clean, plus a dataset-level [`IssueSummary`] (`issue_type, score, num_issues`, as Datalab's
//! `issue_summary`). Checks whose inputs are missing are skipped and listed in
//! [`IssueReport::skipped`], as Datalab drops them.
//!
//! Layout: one file per check (`null.rs`, `label.rs`, `outlier.rs`, `duplicate.rs`, `noniid.rs`,
//! `imbalance.rs`, `underperforming.rs`, `valuation.rs`, `studio.rs`), `trust.rs` for the trust score,
//! `stats.rs` for the shared statistics and `run.rs` for the orchestration.

mod duplicate;
mod imbalance;
mod label;
mod noniid;
mod null;
mod outlier;
mod run;
mod stats;
mod studio;
mod trust;
mod underperforming;
mod valuation;

pub use run::find_issues;
pub(crate) use stats::SplitMix64;
pub use trust::trust_scores;

use crate::knn::KnnOptions;
use crate::label::HealthSummary;
use crate::{Features, PredProbs};

/// A check the engine can run. The declaration order is the report's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IssueType {
    /// Rows with missing feature values (flagged when every value is missing).
    Null,
    /// Rows whose given label is likely wrong (confident learning).
    Label,
    /// Rows far from the rest (kNN distances, or pred_probs entropy without features).
    Outlier,
    /// Rows within a small relative radius of another row.
    NearDuplicate,
    /// Rows identical to another row (not a Datalab type: Datalab folds them into near duplicates).
    ExactDuplicate,
    /// Whether the dataset's order is independent of its content (a dataset-level permutation test).
    NonIid,
    /// Rows of a class far rarer than a uniform share.
    ClassImbalance,
    /// Rows of a feature-space cluster on which the model does much worse than average.
    UnderperformingGroup,
    /// Rows whose kNN-Shapley value is negative (they hurt a kNN classifier).
    DataValuation,
    /// Rows the model cannot separate between two classes (Studio's `ambiguous`).
    Ambiguous,
    /// Rows safe to accept as labelled (Studio's `well_labeled`; its flag means "well labelled").
    WellLabeled,
}

impl IssueType {
    /// Every type, in report order.
    pub const ALL: [Self; 11] = [
        Self::Null,
        Self::Label,
        Self::Outlier,
        Self::NearDuplicate,
        Self::ExactDuplicate,
        Self::NonIid,
        Self::ClassImbalance,
        Self::UnderperformingGroup,
        Self::DataValuation,
        Self::Ambiguous,
        Self::WellLabeled,
    ];

    /// The types `Datalab.find_issues` runs by default for classification (reference §8.2).
    pub const DATALAB_DEFAULT: [Self; 7] = [
        Self::Null,
        Self::Label,
        Self::Outlier,
        Self::NearDuplicate,
        Self::NonIid,
        Self::ClassImbalance,
        Self::UnderperformingGroup,
    ];

    /// The name used in column names and summaries (`near_duplicate`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Label => "label",
            Self::Outlier => "outlier",
            Self::NearDuplicate => "near_duplicate",
            Self::ExactDuplicate => "exact_duplicate",
            Self::NonIid => "non_iid",
            Self::ClassImbalance => "class_imbalance",
            Self::UnderperformingGroup => "underperforming_group",
            Self::DataValuation => "data_valuation",
            Self::Ambiguous => "ambiguous",
            Self::WellLabeled => "well_labeled",
        }
    }

    /// Parses [`Self::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The flag column's name: `is_<type>_issue` (`is_well_labeled` for [`Self::WellLabeled`]).
    pub fn flag_column(self) -> String {
        match self {
            Self::WellLabeled => "is_well_labeled".to_owned(),
            Self::Null
            | Self::Label
            | Self::Outlier
            | Self::NearDuplicate
            | Self::ExactDuplicate
            | Self::NonIid
            | Self::ClassImbalance
            | Self::UnderperformingGroup
            | Self::DataValuation
            | Self::Ambiguous => format!("is_{}_issue", self.name()),
        }
    }

    /// The score column's name: `<type>_score`.
    pub fn score_column(self) -> String {
        format!("{}_score", self.name())
    }
}

/// Whose rules to follow where trustmesh deliberately differs from cleanlab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compat {
    /// trustmesh's rules: the paper's confident-joint collision rule, no per-class minimum before
    /// pruning label issues, the smallest ratio as the worst underperforming group.
    #[default]
    Trustmesh,
    /// cleanlab 2.9 Datalab's rules, quirks included.
    Cleanlab,
}

/// The inputs: any of labels, out-of-sample pred_probs and features, one entry per row.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectorInput<'a> {
    /// Given labels as class indices (`0..K`).
    pub labels: Option<&'a [usize]>,
    /// Out-of-sample predicted probabilities.
    pub pred_probs: Option<&'a PredProbs>,
    /// Numeric features (possibly with missing values, see [`Features::with_missing`]).
    pub features: Option<&'a Features>,
}

/// Parameters of the checks; [`Default`] holds the reference defaults (§9).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorParams {
    /// Neighbours per row in the shared kNN graph.
    pub k: usize,
    /// kNN search options (exact or approximate).
    pub knn: KnnOptions,
    /// Outlier (features): flags `d > Q3 + (1/threshold − 1)·IQR` of mean kNN distances.
    pub outlier_threshold: f64,
    /// Outlier (features): score `exp(−t·d/median d)`.
    pub outlier_t: f64,
    /// Outlier (pred_probs): flags `score < threshold · median(score)`.
    pub outlier_pred_probs_threshold: f64,
    /// Near duplicate: radius relative to the median nearest-neighbour distance.
    pub near_duplicate_threshold: f64,
    /// Non-IID: permutations of the test.
    pub non_iid_permutations: usize,
    /// Non-IID: the p-value below which the most non-IID row is flagged.
    pub non_iid_significance: f64,
    /// Non-IID: permutation seed.
    pub seed: u64,
    /// Class imbalance: flags the rarest class below `threshold / K` of the rows.
    pub class_imbalance_threshold: f64,
    /// Underperforming group: flags the worst cluster if its confidence ratio is below this.
    pub underperforming_threshold: f64,
    /// Underperforming group: DBSCAN radius on the kNN graph.
    pub dbscan_eps: f64,
    /// Underperforming group: DBSCAN neighbours (self included) for a core row.
    pub dbscan_min_samples: usize,
    /// Underperforming group: clusters smaller than this are ignored.
    pub min_cluster_samples: usize,
    /// Data valuation: flags scores below this.
    pub data_valuation_threshold: f64,
    /// Ambiguous: flags rows whose top-two probability margin is below this.
    pub ambiguous_threshold: f64,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            k: 10,
            knn: KnnOptions::default(),
            outlier_threshold: 0.37037,
            outlier_t: 1.0,
            outlier_pred_probs_threshold: 0.13,
            near_duplicate_threshold: 0.13,
            non_iid_permutations: 25,
            non_iid_significance: 0.05,
            seed: 0,
            class_imbalance_threshold: 0.1,
            underperforming_threshold: 0.1,
            dbscan_eps: 0.5,
            dbscan_min_samples: 5,
            min_cluster_samples: 5,
            data_valuation_threshold: 0.5,
            ambiguous_threshold: 0.1,
        }
    }
}

/// What to run and how.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// The checks to run (order does not matter: the report uses [`IssueType::ALL`]'s order).
    pub issue_types: Vec<IssueType>,
    /// Whose rules to follow.
    pub compat: Compat,
    /// The checks' parameters.
    pub params: DetectorParams,
}

impl Default for DetectorConfig {
    /// Datalab's default checks plus exact duplicates, ambiguous and well-labelled rows, trustmesh rules.
    fn default() -> Self {
        let mut issue_types = IssueType::DATALAB_DEFAULT.to_vec();
        issue_types.extend([
            IssueType::ExactDuplicate,
            IssueType::Ambiguous,
            IssueType::WellLabeled,
        ]);
        Self {
            issue_types,
            compat: Compat::Trustmesh,
            params: DetectorParams::default(),
        }
    }
}

impl DetectorConfig {
    /// Datalab's default checks with cleanlab's rules: what `Datalab.find_issues` reports.
    pub fn cleanlab() -> Self {
        Self {
            issue_types: IssueType::DATALAB_DEFAULT.to_vec(),
            compat: Compat::Cleanlab,
            params: DetectorParams::default(),
        }
    }
}

/// One check's per-row output.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueColumn {
    /// The check.
    pub issue_type: IssueType,
    /// `is_<type>_issue` per row.
    pub is_issue: Vec<bool>,
    /// `<type>_score` per row, in [0, 1], 1 = clean.
    pub score: Vec<f64>,
}

/// One check's dataset-level result (a row of Datalab's `issue_summary`).
#[derive(Debug, Clone, PartialEq)]
pub struct IssueSummary {
    /// The check.
    pub issue_type: IssueType,
    /// Dataset-level score in [0, 1] (lower = more severe; for `non_iid`, the p-value).
    pub score: f64,
    /// Rows flagged.
    pub num_issues: usize,
}

/// A check that did not run, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The check.
    pub issue_type: IssueType,
    /// Why (missing input, too few rows, no clusters, ...).
    pub reason: String,
}

/// Wall time of one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTiming {
    /// The stage (`knn_graph`, a check's name, `trust_score`).
    pub stage: &'static str,
    /// Milliseconds.
    pub ms: f64,
}

/// Everything [`find_issues`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct IssueReport {
    /// Number of rows.
    pub n: usize,
    /// One column pair per check that ran, in [`IssueType::ALL`] order.
    pub columns: Vec<IssueColumn>,
    /// One summary per check that ran, same order.
    pub summary: Vec<IssueSummary>,
    /// Checks that were asked for but could not run.
    pub skipped: Vec<Skipped>,
    /// The model's predicted class per row (argmax of pred_probs), when pred_probs were given.
    pub predicted_label: Option<Vec<usize>>,
    /// The label we would suggest per row, when pred_probs were given (see `studio.rs`).
    pub suggested_label: Option<Vec<usize>>,
    /// Confidence in [`Self::suggested_label`], in [0, 1].
    pub suggested_label_confidence: Option<Vec<f64>>,
    /// Near-duplicate set id per row (`None` if not a near duplicate); rows sharing an id are
    /// connected by near-duplicate links.
    pub near_duplicate_set: Option<Vec<Option<u32>>>,
    /// The non-IID permutation test's p-value.
    pub non_iid_p_value: Option<f64>,
    /// Per-row trust score in [0, 1] (see [`trust_scores`]).
    pub trust_score: Vec<f64>,
    /// The label health summary (when the label check ran).
    pub label_health: Option<HealthSummary>,
    /// Mean of the summary scores (Datalab's `health_score`).
    pub health_score: f64,
    /// Per-stage wall times.
    pub timings: Vec<StageTiming>,
}

impl IssueReport {
    /// The column of one check, if it ran.
    pub fn column(&self, issue_type: IssueType) -> Option<&IssueColumn> {
        self.columns.iter().find(|c| c.issue_type == issue_type)
    }

    /// The summary of one check, if it ran.
    pub fn summary_of(&self, issue_type: IssueType) -> Option<&IssueSummary> {
        self.summary.iter().find(|s| s.issue_type == issue_type)
    }
}

/// A check's result before assembly.
pub(crate) struct CheckOutput {
    pub(crate) column: IssueColumn,
    pub(crate) summary_score: f64,
}

impl CheckOutput {
    pub(crate) fn new(
        issue_type: IssueType,
        is_issue: Vec<bool>,
        score: Vec<f64>,
        summary_score: f64,
    ) -> Self {
        Self {
            column: IssueColumn {
                issue_type,
                is_issue,
                score,
            },
            summary_score,
        }
    }
}
