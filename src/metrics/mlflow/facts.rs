//! What both stores hold about a run, turned into facts, and the parts runs are reported under.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::{FactKind, PartSink, state_of};

/// Facts by kind and key, as last reported for one run.
pub(super) type Facts = BTreeMap<(FactKind, String), Value>;

/// The tag MLflow keeps a run's display name in.
const RUN_NAME_TAG: &str = "mlflow.runName";

/// A run as either store describes it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct RunInfo {
    pub id: String,
    /// The name in the runs table or `meta.yaml`.
    pub stored_name: Option<String>,
    pub experiment: String,
    /// MLflow's status name, upper case ("RUNNING").
    pub status: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub user: Option<String>,
    pub source_name: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub params: BTreeMap<String, String>,
}

impl RunInfo {
    /// The name MLflow's UI shows: the `mlflow.runName` tag, else the stored name, else the id.
    pub fn display_name(&self) -> &str {
        let tag = self.tags.get(RUN_NAME_TAG).map(String::as_str);
        [tag, self.stored_name.as_deref()]
            .into_iter()
            .flatten()
            .find(|name| !name.is_empty())
            .unwrap_or(&self.id)
    }

    /// Everything reported about the run besides its metrics.
    pub fn facts(&self) -> Facts {
        let mut facts = Facts::new();
        let mut info = |key: &str, value: Value| {
            facts.insert((FactKind::Info, key.to_owned()), value);
        };
        info("id", self.id.clone().into());
        info("name", self.display_name().into());
        info("experiment", self.experiment.clone().into());
        if let Some(state) = self.status.as_deref().and_then(state_of) {
            info("state", state.into());
        }
        if let Some(ms) = self.start_ms {
            info("start_time", seconds(ms));
        }
        if let Some(ms) = self.end_ms {
            info("end_time", seconds(ms));
        }
        if let Some(user) = self.user() {
            info("user", user.into());
        }
        if let Some(source) = self.source() {
            info("source", source.into());
        }
        info("tags", self.user_tags());
        for (key, value) in &self.params {
            facts.insert((FactKind::Config, key.clone()), value.clone().into());
        }
        facts
    }

    /// The run's user: the stored user id, else the `mlflow.user` tag.
    fn user(&self) -> Option<&str> {
        non_empty(self.user.as_deref()).or_else(|| non_empty(self.tag("mlflow.user")))
    }

    /// The script or notebook that ran: the `mlflow.source.name` tag, else the stored source name.
    fn source(&self) -> Option<&str> {
        non_empty(self.tag("mlflow.source.name")).or_else(|| non_empty(self.source_name.as_deref()))
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// The user's tags (MLflow's own are `mlflow.*`) as "key=value", or "key" when the value is empty.
    fn user_tags(&self) -> Value {
        self.tags
            .iter()
            .filter(|(key, _)| !key.starts_with("mlflow."))
            .map(|(key, value)| match value.as_str() {
                "" => Value::from(key.as_str()),
                value => Value::from(format!("{key}={value}")),
            })
            .collect()
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// MLflow's milliseconds as Unix seconds.
fn seconds(ms: i64) -> Value {
    Value::from(ms as f64 / 1000.0)
}

/// A run that was shown: the part it is reported under and the facts reported so far.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shown {
    pub part: String,
    pub reported: Facts,
}

impl Shown {
    pub fn new(part: String) -> Self {
        Shown {
            part,
            reported: Facts::new(),
        }
    }

    /// Reports the facts of `now` that are new or changed, and `null` for those gone.
    pub fn report(&mut self, out: &mut PartSink, run: usize, now: Facts) {
        let gone: Vec<_> = self
            .reported
            .keys()
            .filter(|key| !now.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            self.reported.remove(&key);
            out.fact(run, &self.part, key.0, &key.1, Value::Null);
        }
        for (key, value) in now {
            if self.reported.get(&key) != Some(&value) {
                out.fact(run, &self.part, key.0, &key.1, value.clone());
                self.reported.insert(key, value);
            }
        }
    }

    /// Says once that the run was deleted (its other facts stay as they were).
    pub fn report_deleted(&mut self, out: &mut PartSink, run: usize) {
        let key = (FactKind::Info, "deleted".to_owned());
        if self.reported.get(&key) != Some(&Value::Bool(true)) {
            out.fact(
                run,
                &self.part,
                FactKind::Info,
                "deleted",
                Value::Bool(true),
            );
            self.reported.insert(key, Value::Bool(true));
        }
    }
}

/// The part names given out so far, so that two runs never share one.
#[derive(Debug, Default)]
pub(super) struct Parts {
    used: HashSet<String>,
}

impl Parts {
    /// The part of a run first seen now: "EXPERIMENT/NAME", with the run id's start added when another
    /// run has that name already.
    pub fn claim(&mut self, experiment: &str, name: &str, id: &str) -> String {
        let short: String = id.chars().take(8).collect();
        let candidates = [
            format!("{experiment}/{name}"),
            format!("{experiment}/{name} (run {short})"),
            format!("{experiment}/{name} (run {id})"),
        ];
        let part = candidates
            .into_iter()
            .find(|p| !self.used.contains(p))
            .unwrap_or_else(|| format!("{experiment}/{name} (run {id} {})", self.used.len()));
        self.used.insert(part.clone());
        part
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_falls_back_to_stored_name_then_id() {
        let mut run = RunInfo {
            id: "abc".into(),
            ..RunInfo::default()
        };
        assert_eq!(run.display_name(), "abc");
        run.stored_name = Some("stored".into());
        assert_eq!(run.display_name(), "stored");
        run.tags.insert(RUN_NAME_TAG.into(), "tagged".into());
        assert_eq!(run.display_name(), "tagged");
    }

    #[test]
    fn user_tags_skip_mlflow_tags() {
        let mut run = RunInfo::default();
        run.tags.insert("mlflow.user".into(), "me".into());
        run.tags.insert("model".into(), "unet".into());
        run.tags.insert("best".into(), String::new());
        assert_eq!(run.user_tags(), serde_json::json!(["best", "model=unet"]));
        assert_eq!(run.user(), Some("me"));
    }

    #[test]
    fn same_names_get_distinct_parts() {
        let mut parts = Parts::default();
        assert_eq!(parts.claim("e", "r", "0123456789"), "e/r");
        assert_eq!(parts.claim("e", "r", "abcdefghij"), "e/r (run abcdefgh)");
        assert_eq!(parts.claim("e", "r", "abcdefghij"), "e/r (run abcdefghij)");
    }
}
