//! What a set of runs holds, as JSON for scripts (`difflab metrics --json`): per run, each scalar tag's point
//! count, first and last point and non-finite counts, and each image tag's images.

use serde_json::{Map, Value, json};

use super::{Run, Store, tag_matches};

/// A number as JSON; non-finite values as the strings "NaN", "Infinity" and "-Infinity" (JSON has none).
pub fn json_number(v: f64) -> Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => json!("NaN"),
        None if v > 0.0 => json!("Infinity"),
        None => json!("-Infinity"),
    }
}

/// A value for the table: compact but exact enough to compare runs.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let a = v.abs();
    if v == 0.0 || (1e-4..1e7).contains(&a) {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.4e}")
    }
}

/// `{"runs": {RUN: {"scalars": {...}, "images": {...}}}}` for the tags matching `patterns` (all when empty).
pub fn runs_json(store: &Store, patterns: &[String]) -> Value {
    let wanted = |tag: &str| patterns.is_empty() || patterns.iter().any(|p| tag_matches(p, tag));
    let runs: Map<String, Value> = store
        .runs()
        .map(|run| (run.name.clone(), run_json(run, &wanted)))
        .collect();
    json!({ "runs": runs })
}

fn run_json(run: &Run, wanted: &dyn Fn(&str) -> bool) -> Value {
    let mut scalars = Map::new();
    for tag in run.tags().into_iter().filter(|t| wanted(t)) {
        let Some(series) = run.series(tag) else {
            continue;
        };
        let point = |p: Option<&super::Point>| match p {
            Some(p) => json!([p.step, json_number(p.value)]),
            None => Value::Null,
        };
        let mut entry = Map::new();
        entry.insert("points".into(), json!(series.len()));
        entry.insert("first".into(), point(series.points.first()));
        entry.insert("last".into(), point(series.points.last()));
        let nan = series.points.iter().filter(|p| p.value.is_nan()).count();
        let inf = series
            .points
            .iter()
            .filter(|p| p.value.is_infinite())
            .count();
        for (key, n) in [("nan", nan), ("inf", inf)] {
            if n > 0 {
                entry.insert(key.into(), json!(n));
            }
        }
        scalars.insert(tag.to_owned(), Value::Object(entry));
    }
    let mut images = Map::new();
    for tag in run.image_tags().into_iter().filter(|t| wanted(t)) {
        let mut list: Vec<(i64, u32, u32)> = run
            .images(tag)
            .iter()
            .map(|(_, _, i)| (i.step, i.width, i.height))
            .collect();
        // In step order; a stable sort keeps the order logged within a step.
        list.sort_by_key(|i| i.0);
        let shown: Vec<Value> = list.iter().map(|(s, w, h)| json!([s, w, h])).collect();
        images.insert(
            tag.to_owned(),
            json!({ "count": list.len(), "images": shown }),
        );
    }
    json!({ "scalars": scalars, "images": images })
}
