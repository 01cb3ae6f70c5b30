//! What differs between runs: the config keys (W&B config, MLflow params, TensorBoard hparams) whose values
//! are not the same in every run shown, a key missing from a run counting as a difference.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::store::Facts;
use super::{FactKind, Store};

/// A config key and its value in each run (`None` where the run does not have it).
#[derive(Debug, Clone, PartialEq)]
pub struct Differing {
    pub key: String,
    pub values: Vec<Option<Value>>,
}

/// A run's config: its config facts by key, without the keys W&B keeps for itself (`_wandb`).
pub type Config = BTreeMap<String, Value>;

/// The config facts of `facts`.
pub fn config_of(facts: &Facts) -> Config {
    facts
        .iter()
        .filter(|((kind, key), _)| *kind == FactKind::Config && !key.starts_with('_'))
        .map(|((_, key), value)| (key.clone(), value.clone()))
        .collect()
}

/// The keys whose values are not the same in every config (a missing key counts), sorted.
pub fn differing(configs: &[Config]) -> Vec<Differing> {
    let keys: BTreeSet<&String> = configs.iter().flat_map(|c| c.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let values: Vec<Option<Value>> = configs.iter().map(|c| c.get(key).cloned()).collect();
            let first = values.first()?;
            values.iter().any(|v| v != first).then(|| Differing {
                key: key.clone(),
                values,
            })
        })
        .collect()
}

/// The run names, and the config keys whose values differ between them.
pub fn differing_config(store: &Store) -> (Vec<String>, Vec<Differing>) {
    let runs: Vec<_> = store.runs().collect();
    let configs: Vec<Config> = runs.iter().map(|r| config_of(&r.facts())).collect();
    (
        runs.iter().map(|r| r.name.clone()).collect(),
        differing(&configs),
    )
}

/// A config value in a few characters: strings bare, long lists and objects by their size.
pub fn short_value(value: Option<&Value>, max: usize) -> String {
    let text = match value {
        None => return "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if !n.is_i64() && !n.is_u64() => n
            .as_f64()
            .map_or_else(|| n.to_string(), super::report::format_value),
        Some(Value::Array(a)) if a.len() > 8 => format!("[{} items]", a.len()),
        Some(Value::Object(o)) if o.len() > 4 => format!("{{{} keys}}", o.len()),
        Some(v) => v.to_string(),
    };
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Source;
    use serde_json::json;

    fn run(store: &mut Store, name: &str, config: &[(&str, Value)]) {
        let mut source = Source::new(format!("{name}/log"), crate::metrics::Format::JsonLines);
        for (k, v) in config {
            source
                .facts
                .insert((FactKind::Config, (*k).into()), v.clone());
        }
        store.insert_source(name, source);
    }

    #[test]
    fn lists_only_keys_that_differ_or_are_missing() {
        let mut store = Store::new();
        run(
            &mut store,
            "a",
            &[
                ("lr", json!(1e-4)),
                ("batch", json!(16)),
                ("_wandb", json!({})),
            ],
        );
        run(
            &mut store,
            "b",
            &[
                ("lr", json!(5e-5)),
                ("batch", json!(16)),
                ("sched", json!("ddim")),
            ],
        );
        let (runs, diff) = differing_config(&store);
        assert_eq!(runs, ["a", "b"]);
        let keys: Vec<&str> = diff.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["lr", "sched"]);
        assert_eq!(diff[1].values, [None, Some(json!("ddim"))]);
    }

    #[test]
    fn short_values() {
        assert_eq!(short_value(None, 10), "-");
        assert_eq!(short_value(Some(&json!("ddim")), 10), "ddim");
        assert_eq!(short_value(Some(&json!(vec![1; 20])), 20), "[20 items]");
        assert_eq!(short_value(Some(&json!("abcdefghijkl")), 5), "abcd…");
    }
}
