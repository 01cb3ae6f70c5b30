//! A run's config written beside its logs as JSON (`config.json`, `args.json`, `hparams.json`: a training
//! script's `vars(args)` or hyperparameters), read as config facts so runs can be compared by what differs.
//! Such a file is read only in a folder that holds a log of another format: a model's `config.json` in a
//! checkpoint folder is not a run.

use serde_json::Value;

use super::{Decoder, FactKind, LogDecoder, LogFormat, LogSink, Skipped};

/// The file names read as a run's config.
const NAMES: [&str; 3] = ["config.json", "args.json", "hparams.json"];

/// A run's JSON config, in the format table.
pub struct RunConfig;

impl LogFormat for RunConfig {
    fn name(&self) -> &'static str {
        "config"
    }

    fn is_companion_file(&self, name: &str) -> bool {
        NAMES.contains(&name)
    }

    fn decoder(&self) -> Option<Decoder> {
        Some(Box::new(ConfigDecoder::default()))
    }
}

/// Reads the file once it is whole: a JSON object parses only when its last brace is there.
#[derive(Debug, Default)]
pub struct ConfigDecoder {
    skipped: Skipped,
}

impl LogDecoder for ConfigDecoder {
    fn decode(&mut self, buf: &[u8], eof: bool, sink: &mut dyn LogSink) -> usize {
        match serde_json::from_slice::<Value>(buf) {
            Ok(Value::Object(map)) => {
                for (key, value) in map {
                    sink.fact(FactKind::Config, &key, value);
                }
                buf.len()
            }
            // Not whole yet: wait for the rest while the file is followed.
            Err(e) if e.is_eof() && !eof => 0,
            _ if buf.iter().all(u8::is_ascii_whitespace) => buf.len(),
            _ => {
                self.skipped.bad_records += 1;
                buf.len()
            }
        }
    }

    fn skipped(&self) -> Skipped {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;
    use crate::metrics::tail::SourceBuilder;

    fn read(pieces: &[&[u8]]) -> (crate::metrics::store::Facts, Skipped) {
        let mut decoder = ConfigDecoder::default();
        let mut sink = SourceBuilder::default();
        let mut buf = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            let used = decoder.decode(&buf, i + 1 == pieces.len(), &mut sink);
            buf.drain(..used);
        }
        let sources = sink.finish(
            std::path::Path::new("args.json"),
            Format::RunConfig,
            decoder.skipped(),
        );
        (sources[0].1.facts.clone(), decoder.skipped())
    }

    #[test]
    fn a_config_is_read_once_whole() {
        let (facts, skipped) =
            read(&[b"{\"learning_rate\": 1e-4, \"sched", b"uler\": \"ddim\"}\n"]);
        assert!(skipped.is_empty());
        assert_eq!(
            facts[&(FactKind::Config, "scheduler".into())],
            serde_json::json!("ddim")
        );
        assert_eq!(facts.len(), 2);
        let (_, skipped) = read(&[b"[1, 2]"]);
        assert_eq!(skipped.bad_records, 1);
    }
}
