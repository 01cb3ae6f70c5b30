//! Errors in experiment files that say where: file, line, column and key, with a "did you mean".

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem in an experiment file, located.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentError {
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key (`sampler[2].steps`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ExperimentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "`{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExperimentError {}

/// Something the file asks for that difflab ignores or adjusts, located like an error; `sampler` is
/// the `[[sampler]]` it concerns (`None`: the whole experiment).
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentWarning {
    pub sampler: Option<usize>,
    pub place: ExperimentError,
}

impl fmt::Display for ExperimentWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.place.fmt(f)
    }
}

impl ExperimentError {
    /// An error about the whole file (cannot read it, ...).
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            column: None,
            key: None,
            message: message.into(),
        }
    }

    /// An error at a byte span of `text`.
    pub fn at(
        path: &Path,
        text: &str,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = line_column(text, s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Self {
            path: path.to_path_buf(),
            line,
            column,
            key,
            message: message.into(),
        }
    }

    /// Turns a TOML parse or schema error into a located one, naming the key and suggesting the
    /// nearest allowed name for an unknown one.
    pub fn from_toml(path: &Path, text: &str, err: &toml::de::Error) -> Self {
        let span = err.span();
        let mut message = err.message().trim().to_string();
        let mut key = span.clone().and_then(|s| key_at(text, s.start));
        if let Some((unknown, expected)) = unknown_field(&message) {
            if let Some(best) = closest(&unknown, &expected) {
                message = format!("{message}; did you mean `{best}`?");
            }
            key = Some(match key {
                Some(k) if k.ends_with(&unknown) => k,
                Some(k) => format!("{k}.{unknown}"),
                None => unknown,
            });
        }
        Self::at(path, text, span, key, message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

/// The dotted key at an offset: the table header above it and the key on its line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|h| h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let own = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty());
    match (header, own) {
        (Some(h), Some(k)) => Some(format!("{h}.{k}")),
        (None, Some(k)) => Some(k),
        (h, None) => h,
    }
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`").
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((name.to_string(), expected))
}

/// The allowed name nearest to `name` by edit distance, if it is close enough to be a typo.
pub fn closest(name: &str, allowed: &[String]) -> Option<String> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), a))
        .filter(|(d, a)| *d <= (a.len().max(name.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1; b.len() + 1];
        for j in 0..b.len() {
            let cost = usize::from(ca != b[j]);
            row[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(row[j] + 1);
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_keys_are_found() {
        let text = "name = \"x\"\n[model]\npath = 3\n";
        let offset = text.find('3').unwrap();
        assert_eq!(line_column(text, offset), (3, 8));
        assert_eq!(key_at(text, offset).as_deref(), Some("model.path"));
        assert_eq!(
            closest("stpes", &["steps".into(), "name".into()]).as_deref(),
            Some("steps")
        );
        assert_eq!(closest("zzzzzz", &["steps".into()]), None);
    }
}
