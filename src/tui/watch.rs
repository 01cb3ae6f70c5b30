//! Hot reload: the experiment file's folder is watched (editors save by writing a new file and
//! renaming it over the old one, which a watch on the file itself would lose), and each settled
//! change to the file is loaded on the watcher's thread and handed over as a result.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use crate::experiment::Experiment;

/// How long the file must be quiet before it is reloaded; also how often the debouncer thread wakes
/// (its default is four times as often).
pub const DEBOUNCE: Duration = Duration::from_millis(250);

pub type Watcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Watches `file`; `on_change` gets the newly loaded experiment or its error (as `file:line:col:
/// key: message`) and returns false once nobody listens. Keep the returned watcher alive.
pub fn watch(
    file: &Path,
    on_change: impl Fn(Result<Box<Experiment>, String>) -> bool + Send + 'static,
) -> notify::Result<Watcher> {
    let file: PathBuf = std::path::absolute(file)?;
    let dir = file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = file.file_name().map(|n| n.to_os_string());
    let watched = file.clone();
    // The text last loaded: an unchanged file (a touch, an editor's backup dance) is not a reload.
    let mut last: Option<String> = std::fs::read_to_string(&file).ok();
    let mut debouncer = new_debouncer(
        DEBOUNCE,
        Some(DEBOUNCE),
        move |result: DebounceEventResult| {
            let Ok(events) = result else { return };
            // Access events (including this watcher's own reads) never change the file.
            let touches = events.iter().any(|e| {
                !e.kind.is_access()
                    && e.paths
                        .iter()
                        .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
            });
            if !touches {
                return;
            }
            // A half-done rename or a delete: wait for the file to come back.
            let Ok(text) = std::fs::read_to_string(&watched) else {
                return;
            };
            if last.as_deref() == Some(text.as_str()) {
                return;
            }
            last = Some(text.clone());
            let loaded = Experiment::parse(&watched, &text)
                .map(Box::new)
                .map_err(|e| e.to_string());
            let _ = on_change(loaded);
        },
    )?;
    debouncer.watch(&dir, RecursiveMode::NonRecursive)?;
    Ok(debouncer)
}
