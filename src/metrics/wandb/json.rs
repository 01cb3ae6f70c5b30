//! W&B's `value_json`: JSON as Python's `json.dumps` writes it, which spells non-finite floats as
//! the bare literals `NaN`, `Infinity` and `-Infinity`. serde_json refuses those, so a text that
//! holds them is parsed again with each literal outside a string replaced by a marker string.

use serde_json::Value;

/// Marker strings standing for the non-finite literals; a NUL byte keeps them apart from strings
/// a user could have logged.
const NAN: &str = "\u{0}NaN";
const INFINITY: &str = "\u{0}Infinity";
const NEG_INFINITY: &str = "\u{0}-Infinity";

/// The literals, longest first (`-Infinity` before `Infinity`), with their markers as JSON text.
const LITERALS: [(&str, &str); 3] = [
    ("-Infinity", "\"\\u0000-Infinity\""),
    ("Infinity", "\"\\u0000Infinity\""),
    ("NaN", "\"\\u0000NaN\""),
];

/// Parses `text`; non-finite literals come back as marker strings (see [`number`] and
/// [`for_fact`]). `None` if it is not JSON even so.
pub fn parse(text: &str) -> Option<Value> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(_) => serde_json::from_str(&mark_literals(text)?).ok(),
    }
}

/// The number `v` holds: a JSON number or a non-finite marker. Booleans are not numbers.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            NAN => Some(f64::NAN),
            INFINITY => Some(f64::INFINITY),
            NEG_INFINITY => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// `v` as a fact value: markers become the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
pub fn for_fact(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(match s.as_str() {
            NAN | INFINITY | NEG_INFINITY => s.trim_start_matches('\u{0}').to_string(),
            _ => s,
        }),
        Value::Array(a) => Value::Array(a.into_iter().map(for_fact).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, for_fact(v))).collect()),
        other => other,
    }
}

/// `text` with each non-finite literal outside a string replaced by its marker; `None` if it has
/// none (then there is nothing to retry).
fn mark_literals(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut found = false;
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string
            && let Some((lit, marker)) = LITERALS.iter().find(|(lit, _)| rest.starts_with(lit))
        {
            out.push_str(marker);
            rest = rest.get(lit.len()..).unwrap_or_default();
            found = true;
            continue;
        }
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            _ => {}
        }
        out.push(c);
        rest = rest.get(c.len_utf8()..).unwrap_or_default();
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json() {
        assert_eq!(parse("1.5"), Some(Value::from(1.5)));
        assert_eq!(parse("\"NaN\"").as_ref().and_then(number), None);
        assert_eq!(parse("{"), None);
        assert_eq!(parse("true").as_ref().and_then(number), None);
    }

    #[test]
    fn non_finite_literals() {
        assert!(
            parse("NaN")
                .as_ref()
                .and_then(number)
                .is_some_and(f64::is_nan)
        );
        assert_eq!(
            parse("Infinity").as_ref().and_then(number),
            Some(f64::INFINITY)
        );
        assert_eq!(
            parse(" -Infinity ").as_ref().and_then(number),
            Some(f64::NEG_INFINITY)
        );
        let v = parse(r#"{"a": [NaN, 1, "NaN \" Infinity"], "b": -Infinity}"#);
        let fact = v.map(for_fact);
        assert_eq!(
            fact,
            Some(serde_json::json!({"a": ["NaN", 1, "NaN \" Infinity"], "b": "-Infinity"}))
        );
        assert_eq!(parse("NaNa"), None);
    }
}
