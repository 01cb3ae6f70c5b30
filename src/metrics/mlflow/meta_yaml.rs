//! The top-level scalars of a `meta.yaml` as MLflow's file store writes it (PyYAML's `safe_dump`, block
//! style): `key: value` lines, where a value may be plain, 'single-quoted' or "double-quoted" and long
//! values go on over indented lines. Nested collections (`tags:` followed by `- …` items) are passed
//! over; nothing MLflow's store readers need lives in them.

use std::collections::HashMap;

/// The scalars of one `meta.yaml`, by key.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Meta {
    values: HashMap<String, Option<String>>,
}

impl Meta {
    /// Parses `text`; what cannot be read is left out, never an error.
    pub fn parse(text: &str) -> Meta {
        let mut values = HashMap::new();
        for (key, lines) in entries(text) {
            values.insert(key.to_owned(), scalar(&lines));
        }
        Meta { values }
    }

    /// The value of `key`; `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key)?.as_deref()
    }

    /// Whether `key` is there, null or not.
    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The value of `key` as an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key)?.trim().parse().ok()
    }
}

/// Each top-level key with the lines of its value: the rest of its line, then the lines that go on
/// from it (indented, blank, or `-` items of a sequence).
fn entries(text: &str) -> Vec<(&str, Vec<&str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let continues = line.is_empty() || line.starts_with([' ', '\t', '-']);
        if continues {
            if let Some((_, lines)) = out.last_mut() {
                lines.push(line);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, rest)) = split_key(line) {
            out.push((key, vec![rest]));
        }
    }
    out
}

/// `key: rest` (or `key:` at the end of the line) into key and rest.
fn split_key(line: &str) -> Option<(&str, &str)> {
    if let Some(key) = line.strip_suffix(':') {
        return Some((key, ""));
    }
    let (key, rest) = line.split_once(": ")?;
    Some((key, rest))
}

/// The value of a scalar over `lines`; `None` for null, a collection, or text that is not a scalar.
fn scalar(lines: &[&str]) -> Option<String> {
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(1, |i| i + 1);
    let lines = lines.get(..end).unwrap_or(lines);
    let first = lines.first()?.trim_start();
    if let Some(rest) = first.strip_prefix('\'') {
        let body = fold(&with_first(lines, rest));
        return Some(body.strip_suffix('\'')?.replace("''", "'"));
    }
    if let Some(rest) = first.strip_prefix('"') {
        let body = fold_escaped(&with_first(lines, rest));
        return unescape(body.strip_suffix('"')?);
    }
    let plain = fold(&with_first(lines, first));
    let plain = plain.trim();
    match plain {
        "" | "~" | "null" | "Null" | "NULL" => None,
        _ if plain.starts_with(['[', '{', '-', '|', '>']) => None,
        _ => Some(plain.to_owned()),
    }
}

/// `lines` with the first replaced by `first`.
fn with_first<'a>(lines: &[&'a str], first: &'a str) -> Vec<&'a str> {
    let mut out = vec![first];
    out.extend(lines.iter().skip(1));
    out
}

/// YAML line folding: lines are joined by one space, and each run of blank lines between two lines
/// becomes that many newlines; the lines' indentation and trailing blanks go.
fn fold(lines: &[&str]) -> String {
    let mut out = String::new();
    let mut blank_run = 0;
    for (n, line) in lines.iter().enumerate() {
        let line = if n == 0 { line } else { line.trim_start() };
        let line = if n + 1 == lines.len() {
            line
        } else {
            line.trim_end()
        };
        if n > 0 && line.is_empty() && n + 1 < lines.len() {
            blank_run += 1;
            continue;
        }
        if n > 0 {
            match blank_run {
                0 => out.push(' '),
                k => out.extend(std::iter::repeat_n('\n', k)),
            }
        }
        blank_run = 0;
        out.push_str(line);
    }
    out
}

/// Folding for double-quoted scalars, where a `\` ending a line joins it to the next without a space.
fn fold_escaped(lines: &[&str]) -> String {
    let mut out = String::new();
    let mut joined = true;
    for (n, line) in lines.iter().enumerate() {
        let mut line = if n == 0 { *line } else { line.trim_start() };
        let escaped_break = ends_with_escape(line) && n + 1 < lines.len();
        if escaped_break {
            line = line.strip_suffix('\\').unwrap_or(line);
        } else if n + 1 < lines.len() {
            line = line.trim_end();
        }
        if n > 0 && !joined {
            if line.is_empty() && n + 1 < lines.len() {
                out.push('\n');
                continue;
            }
            if !out.ends_with('\n') {
                out.push(' ');
            }
        }
        out.push_str(line);
        joined = escaped_break;
    }
    out
}

/// Whether `line` ends in a backslash that is not itself escaped.
fn ends_with_escape(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Resolves the escapes of a double-quoted scalar; `None` for an unknown escape.
fn unescape(body: &str) -> Option<String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next()? {
            'n' => '\n',
            't' | '\t' => '\t',
            'r' => '\r',
            '0' => '\0',
            'a' => '\x07',
            'b' => '\x08',
            'e' => '\x1b',
            'f' => '\x0c',
            'v' => '\x0b',
            'N' => '\u{85}',
            '_' => '\u{a0}',
            'L' => '\u{2028}',
            'P' => '\u{2029}',
            'x' => hex(&mut chars, 2)?,
            'u' => hex(&mut chars, 4)?,
            'U' => hex(&mut chars, 8)?,
            c @ (' ' | '"' | '\\' | '/') => c,
            _ => return None,
        };
        out.push(decoded);
    }
    Some(out)
}

/// The character of the next `digits` hex digits.
fn hex(chars: &mut std::str::Chars, digits: usize) -> Option<char> {
    let code: String = chars.take(digits).collect();
    if code.len() != digits {
        return None;
    }
    char::from_u32(u32::from_str_radix(&code, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mlflow_run_meta() {
        let text = "artifact_uri: file:///x/artifacts\nend_time: null\nentry_point_name: ''\n\
                    experiment_id: '465353276440170581'\nlifecycle_stage: active\nrun_name: ddim-short\n\
                    status: 1\ntags: []\nuser_id: fixture\n";
        let meta = Meta::parse(text);
        assert_eq!(meta.get("artifact_uri"), Some("file:///x/artifacts"));
        assert_eq!(meta.get("end_time"), None);
        assert!(meta.has("end_time"));
        assert_eq!(meta.get("entry_point_name"), Some(""));
        assert_eq!(meta.get("experiment_id"), Some("465353276440170581"));
        assert_eq!(meta.int("status"), Some(1));
        assert_eq!(meta.get("tags"), None);
        assert_eq!(meta.get("user_id"), Some("fixture"));
    }

    #[test]
    fn reads_folded_and_quoted_values() {
        // As PyYAML's safe_dump writes them.
        let text = "a: \"tab\\there  two  spaces tab\\there\\\n  \\  two \\x01end\"\n\
                    b: 'x y\n\n\n  z '\n\
                    c: 'it''s: here'\n\
                    name: a very long experiment name a very long\n  name end\n\
                    tags:\n- key: k\n  value: v\n\
                    u: ünï\n";
        let meta = Meta::parse(text);
        assert_eq!(
            meta.get("a"),
            Some("tab\there  two  spaces tab\there  two \x01end")
        );
        assert_eq!(meta.get("b"), Some("x y\n\nz "));
        assert_eq!(meta.get("c"), Some("it's: here"));
        assert_eq!(
            meta.get("name"),
            Some("a very long experiment name a very long name end")
        );
        assert_eq!(meta.get("tags"), None);
        assert_eq!(meta.get("u"), Some("ünï"));
    }

    #[test]
    fn garbage_is_left_out() {
        let meta = Meta::parse("\u{0}\u{1}: \"\\q\"\n: x\nnot yaml at all\n'open: 'never closed\n");
        assert_eq!(meta.get("not yaml at all"), None);
        assert_eq!(meta.get("\u{0}\u{1}"), None);
    }
}
