//! The parts of W&B's `Record` message that difflab reads.
//!
//! Field numbers follow `wandb/proto/wandb_internal.proto`. The record types of the `record_type`
//! oneof are declared as optional fields (on the wire a oneof member is an ordinary field); record
//! types difflab does not use (output, files, stats, telemetry...) and every other unused field
//! are not declared, so prost skips their bytes without decoding them.

/// `wandb_internal.Record`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// `oneof record_type`: `history` (2).
    #[prost(message, optional, tag = "2")]
    pub history: Option<HistoryRecord>,
    /// `oneof record_type`: `summary` (3).
    #[prost(message, optional, tag = "3")]
    pub summary: Option<SummaryRecord>,
    /// `oneof record_type`: `config` (5).
    #[prost(message, optional, tag = "5")]
    pub config: Option<ConfigRecord>,
    /// `oneof record_type`: `run` (17).
    #[prost(message, optional, tag = "17")]
    pub run: Option<RunRecord>,
    /// `oneof record_type`: `exit` (18).
    #[prost(message, optional, tag = "18")]
    pub exit: Option<RunExitRecord>,
}

/// `wandb_internal.HistoryRecord`: one row of `run.log`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryRecord {
    #[prost(message, repeated, tag = "1")]
    pub item: Vec<Item>,
    #[prost(message, optional, tag = "2")]
    pub step: Option<HistoryStep>,
}

/// `wandb_internal.HistoryStep`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryStep {
    #[prost(int64, tag = "1")]
    pub num: i64,
}

/// `HistoryItem`, `ConfigItem` and `SummaryItem`, which have the same fields: a key (or the path of
/// a nested key) and its value as JSON. The strings are views into the record read (every `run.log`
/// writes two records of several items: one allocation a string would dominate reading a long run).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: bytes::Bytes,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub nested_key: Vec<bytes::Bytes>,
    #[prost(bytes = "bytes", tag = "16")]
    pub value_json: bytes::Bytes,
}

impl Item {
    /// An item from text (for building records).
    pub fn new(key: &str, nested_key: &[&str], value_json: &str) -> Self {
        let text = |s: &str| bytes::Bytes::copy_from_slice(s.as_bytes());
        Item {
            key: text(key),
            nested_key: nested_key.iter().map(|s| text(s)).collect(),
            value_json: text(value_json),
        }
    }

    /// The value's JSON text; `None` when it is not UTF-8 (a damaged record).
    pub fn json(&self) -> Option<&str> {
        std::str::from_utf8(&self.value_json).ok()
    }
}

/// `wandb_internal.ConfigRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigRecord {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<Item>,
    #[prost(message, repeated, tag = "2")]
    pub remove: Vec<Item>,
}

/// `wandb_internal.SummaryRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryRecord {
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<Item>,
    #[prost(message, repeated, tag = "2")]
    pub remove: Vec<Item>,
}

/// `wandb_internal.RunRecord`: written when the run starts (and again by a resumed run).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunRecord {
    #[prost(string, tag = "1")]
    pub run_id: String,
    #[prost(string, tag = "3")]
    pub project: String,
    #[prost(message, optional, tag = "4")]
    pub config: Option<ConfigRecord>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<SummaryRecord>,
    #[prost(string, tag = "6")]
    pub run_group: String,
    #[prost(string, tag = "7")]
    pub job_type: String,
    #[prost(string, tag = "8")]
    pub display_name: String,
    #[prost(string, tag = "9")]
    pub notes: String,
    #[prost(string, repeated, tag = "10")]
    pub tags: Vec<String>,
    #[prost(message, optional, tag = "17")]
    pub start_time: Option<Timestamp>,
    #[prost(bool, tag = "18")]
    pub resumed: bool,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Seconds since the Unix epoch.
    pub fn unix_seconds(&self) -> f64 {
        self.seconds as f64 + f64::from(self.nanos) / 1e9
    }
}

/// `wandb_internal.RunExitRecord`: written when the run finishes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunExitRecord {
    #[prost(int32, tag = "1")]
    pub exit_code: i32,
}
