//! Every dashboard key in one table: the handler finds a key's [`Action`] here, and the `?` overlay and the
//! README's key table are written from it (a test holds the README to it). A new key is one row here and one
//! arm where its action is handled.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use strum::VariantArray;

use super::app::View;

/// What a key asks of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    NextView,
    PreviousView,
    ShowView(View),
    SelectPrevious,
    SelectNext,
    Focus,
    Unfocus,
    RunOrCancel,
    Rerun,
    SaveGrid,
    LogY,
    TimeAxis,
    Smoother,
    Rougher,
    NextTagPage,
    PreviousTagPage,
    NextRows,
    PreviousRows,
    NextSeeds,
    PreviousSeeds,
    ZoomIn,
    ZoomOut,
    NextMetric,
    Baseline,
    Compare,
    NextX,
    NextY,
    NextHeld,
    StepBack,
    StepForward,
    Noisy,
    Play,
    TrainingPane,
}

/// A key as the table names it: its code, and whether Ctrl is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
}

const fn plain(code: KeyCode) -> Key {
    Key { code, ctrl: false }
}

const fn char(c: char) -> Key {
    plain(KeyCode::Char(c))
}

/// One row of the help: the keys as written, what they do, and the bindings behind them (none for what the
/// Training view handles itself or what is not a key).
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub keys: String,
    pub what: String,
    pub bindings: Vec<(Key, Action)>,
}

fn row(keys: &str, what: &str, bindings: &[(Key, Action)]) -> KeyRow {
    KeyRow {
        keys: keys.to_string(),
        what: what.to_string(),
        bindings: bindings.to_vec(),
    }
}

/// Every key, in the order the help lists them.
pub fn key_rows() -> Vec<KeyRow> {
    use Action::*;
    let views: Vec<(Key, Action)> = View::VARIANTS
        .iter()
        .zip('1'..='9')
        .map(|(&v, digit)| (char(digit), ShowView(v)))
        .collect();
    let digits: Vec<String> = ('1'..='9').take(views.len()).map(String::from).collect();
    let titles: Vec<&str> = View::VARIANTS.iter().map(|v| v.title()).collect();
    vec![
        row(
            "q, Ctrl-C",
            "quit",
            &[
                (char('q'), Quit),
                (
                    Key {
                        code: KeyCode::Char('c'),
                        ctrl: true,
                    },
                    Quit,
                ),
            ],
        ),
        row(
            "Tab, Shift-Tab",
            "next, previous view",
            &[
                (plain(KeyCode::Tab), NextView),
                (plain(KeyCode::BackTab), PreviousView),
            ],
        ),
        KeyRow {
            keys: digits.join(" "),
            what: titles.join(", "),
            bindings: views,
        },
        row(
            "←/→ or ↑/↓",
            "select a cell",
            &[
                (plain(KeyCode::Left), SelectPrevious),
                (plain(KeyCode::Up), SelectPrevious),
                (plain(KeyCode::Right), SelectNext),
                (plain(KeyCode::Down), SelectNext),
            ],
        ),
        row(
            "Enter",
            "focus the cell: all its seeds, larger",
            &[(plain(KeyCode::Enter), Focus)],
        ),
        row(
            ", / .",
            "focused cell, training images: a step back / forward",
            &[(char(','), StepBack), (char('.'), StepForward)],
        ),
        row(
            "n",
            "focused cell: x_t or the x0 prediction at each step",
            &[(char('n'), Noisy)],
        ),
        row(
            "f",
            "video clips: a strip of their frames, or playing",
            &[(char('f'), Play)],
        ),
        row(
            "Esc",
            "back from the focused cell",
            &[(plain(KeyCode::Esc), Unfocus)],
        ),
        row(
            "PgDn / PgUp",
            "samplers: next / previous rows; run overview: scroll",
            &[
                (plain(KeyCode::PageDown), NextRows),
                (plain(KeyCode::PageUp), PreviousRows),
            ],
        ),
        row(
            "> / <",
            "samplers: next / previous seeds",
            &[(char('>'), NextSeeds), (char('<'), PreviousSeeds)],
        ),
        row(
            "z / Z",
            "samplers: larger / smaller previews",
            &[(char('z'), ZoomIn), (char('Z'), ZoomOut)],
        ),
        row(
            "b",
            "samplers: mark the cell as the baseline (again: unmark)",
            &[(char('b'), Baseline)],
        ),
        row(
            "d",
            "samplers: images, difference from the baseline, baseline",
            &[(char('d'), Compare)],
        ),
        row(
            "Space",
            "run the experiment, or cancel the run",
            &[(char(' '), RunOrCancel)],
        ),
        row(
            "r",
            "rerun every cell, even unchanged ones",
            &[(char('r'), Rerun)],
        ),
        row(
            "s",
            "save the comparison grid (PNG; in X/Y, the X/Y grid)",
            &[(char('s'), SaveGrid)],
        ),
        row(
            "x / y / v",
            "x/y: next axis across / down, next held value",
            &[
                (char('x'), NextX),
                (char('y'), NextY),
                (char('v'), NextHeld),
            ],
        ),
        row("m", "quality: next metric", &[(char('m'), NextMetric)]),
        row("l", "training: log-y on/off", &[(char('l'), LogY)]),
        row(
            "+ / -",
            "training: more / less smoothing",
            &[
                (char('+'), Smoother),
                (char('='), Smoother),
                (char('-'), Rougher),
            ],
        ),
        row(
            "i",
            "training: curves, images, run overview and what differs",
            &[(char('i'), TrainingPane)],
        ),
        row(
            "t",
            "training: x as step or wall time",
            &[(char('t'), TimeAxis)],
        ),
        row(
            "[ / ]",
            "training: previous / next page of tags",
            &[(char('['), PreviousTagPage), (char(']'), NextTagPage)],
        ),
        row("/", "training: filter tags and runs by regex", &[]),
        row(
            "↑/↓ Space p",
            "training: pick a run, show or hide it, pin it",
            &[],
        ),
        row("?", "this help (any key closes it)", &[(char('?'), Help)]),
        row("saving", "the experiment file reruns changed cells", &[]),
    ]
}

/// The action bound to a key press, if any.
pub fn action_of(key: &KeyEvent) -> Option<Action> {
    let pressed = Key {
        code: key.code,
        ctrl: key.modifiers.contains(KeyModifiers::CONTROL),
    };
    key_rows()
        .into_iter()
        .flat_map(|r| r.bindings)
        .find(|(k, _)| *k == pressed)
        .map(|(_, action)| action)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests report failure by panicking")]

    use super::*;

    /// The table as the README has it, one markdown row per help row.
    fn markdown_table() -> String {
        let mut text = String::from("| key | |\n|---|---|\n");
        for r in key_rows() {
            text.push_str(&format!("| {} | {} |\n", r.keys, r.what));
        }
        text
    }

    #[test]
    fn the_readme_key_table_is_this_table() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's key table differs from src/tui/keys.rs; it should read:\n{table}"
        );
    }

    #[test]
    fn no_key_is_bound_twice_and_every_view_has_its_digit() {
        let bindings: Vec<(Key, Action)> =
            key_rows().into_iter().flat_map(|r| r.bindings).collect();
        for (i, (key, _)) in bindings.iter().enumerate() {
            assert!(
                !bindings[..i].iter().any(|(k, _)| k == key),
                "{key:?} is bound twice"
            );
        }
        for (i, &view) in View::VARIANTS.iter().enumerate() {
            let digit = char::from_digit(i as u32 + 1, 10).unwrap();
            assert!(bindings.contains(&(char_key(digit), Action::ShowView(view))));
        }
    }

    fn char_key(c: char) -> Key {
        char(c)
    }
}
