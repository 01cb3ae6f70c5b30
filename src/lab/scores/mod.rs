//! A finished cell's quality as a list of named metrics. Each metric is one file here and one entry in
//! [`METRICS`]: it computes its values from the cell's tallies and says how they are written (results
//! keys and CSV columns), shown (dashboard table, cards, `difflab run`'s line) and plotted. Everything
//! that shows scores iterates the list.

mod accuracy;
pub mod baseline;
mod fid;
pub mod frame_change;
mod kid;
pub mod reference_error;
pub mod start_distance;
mod values;

pub use values::Scores;

use super::tally::{Against, FeatureTally};
use crate::experiment::QualitySpec;
use crate::quality::{FrameChange, Hits, ReferenceStats};

/// The metrics, in the order their columns, lines and panels appear.
pub static METRICS: &[&dyn Metric] = &[
    &fid::Fid,
    &kid::Kid,
    &accuracy::PromptAccuracy,
    &reference_error::ReferenceError,
    &baseline::Baseline,
    &start_distance::StartDistance,
    &frame_change::FrameChangeMetric,
];

/// What a cell's scores are computed from: its feature tally against the reference statistics (when the
/// experiment has a feature network), its class hits, and its squared error against the reference solve.
#[derive(Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub features: Option<Features<'a>>,
    pub hits: Option<&'a Hits>,
    pub against: Option<&'a Against>,
    /// A video model's clips' change from frame to frame.
    pub frame_change: Option<&'a FrameChange>,
}

/// A cell's features and what they are compared with.
#[derive(Clone, Copy)]
pub struct Features<'a> {
    pub tally: &'a FeatureTally,
    pub reference: &'a ReferenceStats,
    pub spec: &'a QualitySpec,
}

/// One value a metric writes: its results.json key, and how results.csv prints it.
pub struct Column {
    pub key: &'static str,
    pub csv: Csv,
}

/// How results.csv prints a value (`Omit`: results.json only).
#[derive(Clone, Copy, PartialEq)]
pub enum Csv {
    Fixed,
    Scientific,
    Omit,
}

/// A column of the dashboard's results table.
pub struct TableColumn {
    pub header: &'static str,
    pub key: &'static str,
    pub width: u16,
    /// Shown even before any cell has it (otherwise only when a cell has it or the experiment asks for it).
    pub always: bool,
    /// A share, shown as a percentage.
    pub percent: bool,
}

/// A metric as a panel of the quality figures, against NFE and/or the guidance scale.
pub struct Chart {
    pub key: &'static str,
    /// The panel's title is "<name> against guidance".
    pub name: &'static str,
    pub y_desc: &'static str,
    /// The y range: from zero to a bit above the largest value, or the unit interval.
    pub unit_interval: bool,
    /// Plotted on a log scale (errors spanning decades).
    pub log_y: bool,
    pub against_nfe: bool,
    pub against_guidance: bool,
}

/// One quality metric.
pub trait Metric: Sync {
    /// The values it writes, in order.
    fn columns(&self) -> &'static [Column];
    /// Adds its values to `out` when its inputs are there.
    fn score(&self, inputs: &Inputs, out: &mut Scores);
    /// Whether the experiment's `[quality]` asks for it (its table column shows before the first score).
    fn asked(&self, spec: &QualitySpec) -> bool;
    /// Lines for the focused cell ("FID      12.345").
    fn detail(&self, scores: &Scores) -> Vec<String>;
    /// A few characters for a cell's card ("FID 12.35").
    fn brief(&self, scores: &Scores) -> Option<String>;
    /// Its part of `difflab run`'s line for a finished cell ("FID 12.35").
    fn summary(&self, scores: &Scores) -> Option<String>;
    /// Whether the result's `accuracies` break it down per prompt (or class).
    fn per_condition(&self) -> bool {
        false
    }
    fn table(&self) -> Option<TableColumn> {
        None
    }
    fn chart(&self) -> Option<Chart> {
        None
    }
}

/// Every metric's scores of one cell.
pub fn score_all(inputs: &Inputs) -> Scores {
    let mut out = Scores::default();
    for metric in METRICS {
        metric.score(inputs, &mut out);
    }
    out
}

/// Every value's column, in order.
pub fn columns() -> impl Iterator<Item = &'static Column> {
    METRICS.iter().flat_map(|m| m.columns())
}

/// The charted metrics.
pub fn charts() -> impl Iterator<Item = Chart> {
    METRICS.iter().filter_map(|m| m.chart())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique() {
        let keys: Vec<&str> = columns().map(|c| c.key).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn tables_and_charts_name_their_own_keys() {
        for m in METRICS {
            let own: Vec<&str> = m.columns().iter().map(|c| c.key).collect();
            let named = m.table().map(|t| t.key).into_iter();
            for key in named.chain(m.chart().map(|c| c.key)) {
                assert!(own.contains(&key), "{key} is not among {own:?}");
            }
        }
    }
}
