//! Which training curves the Training view shows, as TensorBoard and LEET choose them: a regex over
//! tags and run names (`/`), runs switched off and on (Space), and pinned runs (`p`), which are listed
//! first and shown whatever the filter says.

use std::collections::BTreeSet;

use regex::Regex;

/// A compiled filter with the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// The Training view's choice of runs and tags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// The applied filter; `None` shows every tag of every run.
    pub pattern: Option<Pattern>,
    /// The filter being typed after `/`, until Enter or Esc.
    pub input: Option<String>,
    /// Why the last filter typed was not applied.
    pub error: Option<String>,
    /// Runs switched off with Space.
    pub hidden: BTreeSet<String>,
    /// Runs pinned with `p`.
    pub pinned: BTreeSet<String>,
    /// The run under the cursor, as an index into [`RunFilter::order`].
    pub cursor: usize,
}

impl RunFilter {
    /// Whether the curve of `tag` in `run` is shown.
    pub fn shows(&self, run: &str, tag: &str) -> bool {
        if self.pinned.contains(run) {
            return true;
        }
        !self.hidden.contains(run)
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| p.regex.is_match(tag) || p.regex.is_match(run))
    }

    /// The runs as listed: pinned ones first, each group in the order first seen.
    pub fn order<'a>(&self, runs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for r in runs {
            if !seen.iter().any(|s| s == r) {
                seen.push(r.to_string());
            }
        }
        let (mut pinned, rest): (Vec<String>, Vec<String>) =
            seen.into_iter().partition(|r| self.pinned.contains(r));
        pinned.extend(rest);
        pinned
    }

    /// Starts typing a filter, from the one applied.
    pub fn start_input(&mut self) {
        self.input = Some(
            self.pattern
                .as_ref()
                .map_or(String::new(), |p| p.text.clone()),
        );
    }

    /// Applies the typed filter: empty clears it; a bad regex keeps the old one and says why.
    pub fn apply_input(&mut self) {
        let Some(text) = self.input.take() else {
            return;
        };
        if text.is_empty() {
            self.pattern = None;
            self.error = None;
            return;
        }
        match Regex::new(&text) {
            Ok(regex) => {
                self.pattern = Some(Pattern { text, regex });
                self.error = None;
            }
            Err(e) => {
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                self.error = Some(format!("/{text}/ is not a regex: {first}"));
            }
        }
    }

    /// Switches the run under the cursor off or on.
    pub fn toggle(&mut self, runs: &[String]) {
        if let Some(run) = runs.get(self.cursor)
            && !self.hidden.remove(run)
        {
            self.hidden.insert(run.clone());
        }
    }

    /// Pins or unpins the run under the cursor; the cursor follows it to its new place.
    pub fn pin(&mut self, runs: &[String]) {
        let Some(run) = runs.get(self.cursor).cloned() else {
            return;
        };
        if !self.pinned.remove(&run) {
            self.pinned.insert(run.clone());
        }
        let reordered = self.order(runs.iter().map(String::as_str));
        self.cursor = reordered.iter().position(|r| *r == run).unwrap_or(0);
    }

    pub fn move_cursor(&mut self, by: isize, runs: usize) {
        let last = runs.saturating_sub(1) as isize;
        self.cursor = (self.cursor as isize + by).clamp(0, last) as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_regex_filters_tags_and_runs_and_a_bad_one_keeps_the_last() {
        let mut f = RunFilter {
            input: Some("^train/".into()),
            ..RunFilter::default()
        };
        f.apply_input();
        assert!(f.shows("a", "train/loss"));
        assert!(!f.shows("a", "eval/fid"));
        f.input = Some("wide".into());
        f.apply_input();
        assert!(f.shows("wide-lr3", "eval/fid"), "the run name matches");
        f.input = Some("(".into());
        f.apply_input();
        assert!(
            f.error
                .as_deref()
                .is_some_and(|e| e.starts_with("/(/ is not a regex")),
            "{:?}",
            f.error
        );
        assert_eq!(f.pattern.as_ref().map(|p| p.text.as_str()), Some("wide"));
        f.start_input();
        assert_eq!(f.input.as_deref(), Some("wide"));
        f.input = Some(String::new());
        f.apply_input();
        assert!(f.pattern.is_none() && f.error.is_none());
    }

    #[test]
    fn space_hides_a_run_and_a_pinned_run_comes_first_and_always_shows() {
        let mut f = RunFilter {
            cursor: 1,
            ..RunFilter::default()
        };
        let all = runs(&["a", "b", "c"]);
        f.toggle(&all);
        assert!(!f.shows("b", "loss"));
        f.toggle(&all);
        assert!(f.shows("b", "loss"));
        f.cursor = 2;
        f.pin(&all);
        assert_eq!(
            f.order(all.iter().map(String::as_str)),
            runs(&["c", "a", "b"])
        );
        assert_eq!(f.cursor, 0, "the cursor follows the pinned run");
        f.input = Some("nothing-matches".into());
        f.apply_input();
        assert!(f.shows("c", "loss") && !f.shows("a", "loss"));
        f.move_cursor(-5, 3);
        assert_eq!(f.cursor, 0);
        f.move_cursor(9, 3);
        assert_eq!(f.cursor, 2);
    }
}
