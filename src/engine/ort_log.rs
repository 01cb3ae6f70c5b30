//! ONNX Runtime's own warnings and errors ("Some nodes were not assigned to the preferred execution
//! providers", TensorRT's fp16 notes), kept for difflab to show: the environment's logger puts them here and
//! whoever loads or runs a network takes them ([`take`]) for its log, the dashboard and `results.json`.
//! The session layer adds its own notes of the same kind ([`note`]: a wait for another's engine build).

use std::sync::{Arc, Mutex};

use ort::logging::{LogLevel, LoggerFunction};

/// More than this many distinct messages between two [`take`]s are counted, not kept.
const KEPT: usize = 100;

#[derive(Default)]
struct Pending {
    /// Distinct messages in arrival order, each with how often it came.
    messages: Vec<(String, usize)>,
    dropped: usize,
}

static PENDING: Mutex<Pending> = Mutex::new(Pending {
    messages: Vec::new(),
    dropped: 0,
});

/// The logger handed to ONNX Runtime's environment: warnings and worse are kept, the rest dropped.
pub(super) fn logger() -> LoggerFunction {
    Arc::new(|level, _category, _id, _location, message| {
        if let Ok(mut pending) = PENDING.lock() {
            pending.keep(level, message);
        }
    })
}

/// A line from the session layer, shown with ONNX Runtime's messages.
pub(super) fn note(line: String) {
    if let Ok(mut pending) = PENDING.lock() {
        pending.push(line);
    }
}

/// The messages ONNX Runtime logged since the last call, one line each ("(×3)" when one came more than once).
pub fn take() -> Vec<String> {
    PENDING.lock().map(|mut p| p.take()).unwrap_or_default()
}

impl Pending {
    fn keep(&mut self, level: LogLevel, message: &str) {
        if level < LogLevel::Warning {
            return;
        }
        self.push(format!(
            "ONNX Runtime {}: {}",
            level_name(level),
            message.trim()
        ));
    }

    fn push(&mut self, line: String) {
        if let Some(seen) = self.messages.iter_mut().find(|(m, _)| *m == line) {
            seen.1 += 1;
        } else if self.messages.len() < KEPT {
            self.messages.push((line, 1));
        } else {
            self.dropped += 1;
        }
    }

    fn take(&mut self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .messages
            .drain(..)
            .map(|(line, n)| {
                if n > 1 {
                    format!("{line} (×{n})")
                } else {
                    line
                }
            })
            .collect();
        if self.dropped > 0 {
            lines.push(format!(
                "ONNX Runtime logged {} more distinct messages, not shown",
                std::mem::take(&mut self.dropped)
            ));
        }
        lines
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Warning => "warning",
        LogLevel::Error => "error",
        LogLevel::Fatal => "fatal error",
        LogLevel::Info | LogLevel::Verbose => "note",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_kept_once_with_a_count_and_notes_are_dropped() {
        let mut pending = Pending::default();
        pending.keep(LogLevel::Info, "an informational line");
        let unassigned = "Some nodes were not assigned to the preferred execution providers";
        pending.keep(LogLevel::Warning, &format!("{unassigned} "));
        pending.keep(LogLevel::Warning, unassigned);
        pending.keep(LogLevel::Error, "a failure");
        assert_eq!(
            pending.take(),
            [
                format!("ONNX Runtime warning: {unassigned} (×2)"),
                "ONNX Runtime error: a failure".to_string()
            ]
        );
        assert!(pending.take().is_empty());
        for i in 0..KEPT + 2 {
            pending.keep(LogLevel::Warning, &format!("message {i}"));
        }
        let lines = pending.take();
        assert_eq!(lines.len(), KEPT + 1);
        assert_eq!(
            lines[KEPT],
            "ONNX Runtime logged 2 more distinct messages, not shown"
        );
    }
}
