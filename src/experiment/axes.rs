//! A sampler's setting axes: `schedule`, `guidance_method`, `shift` and any sampler setting given as a list.
//! Every combination of their values is a variant of the sampler (its own cells), named by what varies.

use serde_json::{Map, Value};

use crate::guidance::GuidanceMethod;

/// What one value of an axis sets.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Apply {
    /// Sampler settings (a schedule may set another key than its name).
    Settings(Vec<(String, Value)>),
    Method(GuidanceMethod),
    /// A flow shift, under the setting key the class reads it from.
    Shift {
        key: &'static str,
        value: f64,
    },
    /// img2img's strength.
    Strength(f64),
    /// The ControlNets' conditioning scale: one for all, or one per ControlNet.
    ControlScale(Vec<f64>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct AxisValue {
    /// How a cell's name shows it (`karras`, `eta=0.5`, `apg`, `s3`).
    pub suffix: String,
    /// The results column's value.
    pub column: Value,
    pub apply: Apply,
}

/// One axis: its results column and its values in the order given.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Axis {
    pub column: String,
    pub values: Vec<AxisValue>,
}

/// One combination of the axes' values.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Combination {
    pub settings: Map<String, Value>,
    pub method: GuidanceMethod,
    pub shift: Option<f64>,
    pub strength: Option<f64>,
    pub control_scale: Option<Vec<f64>>,
    /// Appended to the sampler's label, one per axis with more than one value.
    pub suffixes: Vec<String>,
    /// The values of the axes with more than one value, by column.
    pub columns: Vec<(String, Value)>,
}

/// Every combination of `axes` (the first axis varies slowest) over `settings`.
pub(super) fn combinations(axes: &[Axis], settings: &Map<String, Value>) -> Vec<Combination> {
    let mut out = vec![Combination {
        settings: settings.clone(),
        ..Combination::default()
    }];
    for axis in axes {
        let varies = axis.values.len() > 1;
        out = out
            .into_iter()
            .flat_map(|c| {
                axis.values
                    .iter()
                    .map(move |v| with(c.clone(), &axis.column, v, varies))
            })
            .collect();
    }
    out
}

fn with(mut c: Combination, column: &str, value: &AxisValue, varies: bool) -> Combination {
    match &value.apply {
        Apply::Settings(pairs) => {
            for (k, v) in pairs {
                c.settings.insert(k.clone(), v.clone());
            }
        }
        Apply::Method(method) => c.method = method.clone(),
        Apply::Shift { key, value } => {
            c.settings.insert((*key).into(), (*value).into());
            c.shift = Some(*value);
        }
        Apply::Strength(value) => c.strength = Some(*value),
        Apply::ControlScale(value) => c.control_scale = Some(value.clone()),
    }
    if varies {
        c.suffixes.push(value.suffix.clone());
        c.columns.push((column.to_string(), value.column.clone()));
    }
    c
}

/// A setting value as a cell's name shows it: numbers and strings bare.
pub(super) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn axis(column: &str, values: &[f64]) -> Axis {
        Axis {
            column: column.into(),
            values: values
                .iter()
                .map(|&v| AxisValue {
                    suffix: format!("{column}={v}"),
                    column: json!(v),
                    apply: Apply::Settings(vec![(column.into(), json!(v))]),
                })
                .collect(),
        }
    }

    #[test]
    fn every_combination_once_named_by_what_varies() {
        let axes = [
            axis("eta", &[0.0, 1.0]),
            axis("s_noise", &[1.0]),
            axis("r", &[0.3, 0.5, 0.7]),
        ];
        let all = combinations(&axes, &Map::new());
        assert_eq!(all.len(), 6);
        assert_eq!(all[1].suffixes, ["eta=0", "r=0.5"]);
        assert_eq!(all[5].settings["eta"], json!(1.0));
        assert_eq!(all[5].settings["s_noise"], json!(1.0));
        assert_eq!(all[5].columns.len(), 2);
    }
}
