//! A cell's metric values by key, written into results.json as flat keys (`"fid": 12.3`), every
//! metric's key present (`null` when unscored).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::columns;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores(BTreeMap<&'static str, f64>);

impl Scores {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }

    /// Sets a value by a metric's key (one of [`columns`]).
    pub fn set(&mut self, key: &'static str, value: f64) {
        self.0.insert(key, value);
    }

    pub fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
}

impl FromIterator<(&'static str, f64)> for Scores {
    fn from_iter<I: IntoIterator<Item = (&'static str, f64)>>(pairs: I) -> Self {
        Self(pairs.into_iter().collect())
    }
}

impl Serialize for Scores {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for column in columns() {
            map.serialize_entry(column.key, &self.get(column.key))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Scores {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ScoresVisitor)
    }
}

struct ScoresVisitor;

impl<'de> Visitor<'de> for ScoresVisitor {
    type Value = Scores;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a cell's scores")
    }

    // Keys that are not a metric's belong to the rest of the cell's result: skipped here.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scores, A::Error> {
        let mut scores = Scores::default();
        while let Some(key) = map.next_key::<String>()? {
            match columns().find(|c| c.key == key) {
                Some(c) => {
                    if let Some(v) = map.next_value::<Option<f64>>()? {
                        scores.set(c.key, v);
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(scores)
    }
}
