//! Every view drawn on fixed state at 80×24 and 160×48, compared with the committed snapshots.

use std::path::Path;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui_image::picker::{Picker, ProtocolType};

use super::{draw, image_slots};
use crate::experiment::Experiment;
use crate::lab::{CellResult, LabEvent, plan};
use crate::tui::app::{Msg, State, View, item};
use crate::tui::images::encode;
use crate::tui::tile_request;
use crate::tui::training::{Series, TrainingUpdate};

/// Hands the view each series as the log reader would: as new points of its run.
fn feed(state: &mut State, series: Vec<Series>) {
    for s in series {
        state.update(Msg::Training(TrainingUpdate::Points {
            run: s.run,
            series: vec![(s.tag, s.points)],
        }));
    }
}

const EXPERIMENT: &str = r#"
name = "analytic"
output = "out/analytic"

[model]
path = "analytic"
sample_shape = [1, 8, 8]

[sampling]
seeds = 8

[[sampler]]
name = "ddim"
steps = [10, 50]

[[sampler]]
name = "dpm++2m-karras"
steps = 10

[[sampler]]
name = "dpm++2m-sde-karras"
steps = 20
"#;

/// A sample whose pixels depend on its seed and the cell, so columns differ.
fn pattern(cell: usize, seed: usize, shape: [usize; 3]) -> Vec<f32> {
    let [_, h, w] = shape;
    (0..h * w)
        .map(|i| {
            let (y, x) = (i / w, i % w);
            (((x + seed) % 4) as f32 / 3.0 - 0.5 + ((y + cell) % 3) as f32 / 4.0).clamp(-1.0, 1.0)
        })
        .collect()
}

fn result(name: &str, label: &str, steps: usize, fid: Option<f64>) -> CellResult {
    CellResult {
        warnings: Vec::new(),
        name: name.into(),
        label: label.into(),
        class: "DDIMScheduler".into(),
        steps,
        nfe: steps,
        samples: 8,
        wall_s: 0.01 * steps as f64,
        model_ms_per_step: 0.125,
        sampler_ms_per_step: 0.0125,
        ms_per_sample: 0.25 * steps as f64,
        scores: fid
            .map(|f| [("fid", f), ("kid", f / 1000.0), ("kid_std", 0.0005)])
            .into_iter()
            .flatten()
            .collect(),
        accuracies: Vec::new(),
        provider: "cpu".into(),
        tf32: None,
        grid: String::new(),
        key: String::new(),
        error: None,
        guidance: 1.0,
        guidance_rescale: 0.0,
        shift: None,
        strength: None,
        control_scale: None,
        control_window: None,
        guidance_method: None,
        axes: Default::default(),
        true_cfg_scale: None,
        prompts: Vec::new(),
        classes: Vec::new(),
        reference: None,
    }
}

/// Two cells done (one reused), one mid-run, one waiting; optional FID scores.
fn state(with_fid: bool) -> State {
    let path = Path::new("experiments/analytic.toml");
    let experiment = Experiment::parse(path, EXPERIMENT).expect("the test experiment parses");
    let cells = plan(&experiment, None).expect("plan");
    let shape = [1, 8, 8];
    let mut state = State::new(path.to_path_buf(), Ok(experiment), "halfblocks");
    let effects = state.start();
    assert_eq!(effects.len(), 1);
    let lab = |state: &mut State, event| {
        let generation = state.generation;
        state.update(Msg::Lab {
            generation,
            event: Box::new(event),
        });
    };
    lab(
        &mut state,
        LabEvent::Planned {
            cells: cells.clone(),
            sample_shape: shape,
            frames: 1,
            provider: "cpu".into(),
            providers_note: "analytic model runs on the CPU".into(),
            providers_summary: String::new(),
        },
    );
    let images =
        |cell: usize| -> Vec<f32> { (0..8).flat_map(|s| pattern(cell, s, shape)).collect() };
    for (i, cached) in [(0, true), (2, false)] {
        let c = &cells[i];
        let fid = with_fid.then_some(if i == 0 { 12.5 } else { 4.25 });
        lab(
            &mut state,
            LabEvent::CellDone {
                cell: i,
                result: Box::new(result(&c.name, &c.label, c.steps, fid)),
                images: images(i),
                cached,
            },
        );
    }
    lab(
        &mut state,
        LabEvent::Progress {
            cell: 1,
            step: 17,
            steps: 50,
            samples_done: 0,
            samples_total: 8,
            preview: Some(images(1)),
            noisy: Some(images(3)),
        },
    );
    lab(
        &mut state,
        LabEvent::Log("ddim 10: unchanged, reused".into()),
    );
    if with_fid {
        let c = &cells[1];
        lab(
            &mut state,
            LabEvent::CellDone {
                cell: 1,
                result: Box::new(result(&c.name, &c.label, c.steps, Some(3.0))),
                images: images(1),
                cached: false,
            },
        );
    }
    state
}

fn key(state: &mut State, code: KeyCode) {
    state.update(Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

/// Encodes the images a frame of this size shows, as the encoder thread would.
fn encode_images(state: &mut State, width: u16, height: u16) {
    encode_images_as(&Picker::halfblocks(), state, width, height);
}

fn encode_images_as(picker: &Picker, state: &mut State, width: u16, height: u16) {
    state.screen = Rect::new(0, 0, width, height);
    for (slot, rect) in image_slots(state, state.screen) {
        let Some(request) = tile_request(state, slot, rect) else {
            continue;
        };
        let encoded = encode(picker, &request).expect("encodes");
        state.update(Msg::Encoded { slot, encoded });
    }
}

fn render(state: &mut State, width: u16, height: u16) -> String {
    encode_images(state, width, height);
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, state)).unwrap();
    terminal.backend().to_string()
}

fn snapshots(name: &str, state: &mut State) {
    for (w, h) in [(80, 24), (160, 48)] {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), render(state, w, h));
    }
}

#[test]
fn samplers_view() {
    snapshots("samplers", &mut state(false));
}

#[test]
fn samplers_view_focused_cell() {
    let mut s = state(false);
    key(&mut s, KeyCode::Right);
    key(&mut s, KeyCode::Enter);
    assert!(s.focused);
    snapshots("samplers_focused", &mut s);
}

/// The experiment `text` planned and every cell finished, its previews `shape` patterns and its result
/// what `result_of` gives.
fn finished_state(
    path: &str,
    text: &str,
    (shape, frames): ([usize; 3], usize),
    result_of: impl Fn(usize, &crate::lab::Cell) -> CellResult,
) -> State {
    let path = Path::new(path);
    let experiment = Experiment::parse(path, text).expect("the experiment parses");
    let cells = plan(&experiment, None).expect("plan");
    let mut state = State::new(path.to_path_buf(), Ok(experiment), "halfblocks");
    state.start();
    let generation = state.generation;
    let mut lab = |event| {
        state.update(Msg::Lab {
            generation,
            event: Box::new(event),
        })
    };
    lab(LabEvent::Planned {
        cells: cells.clone(),
        sample_shape: shape,
        frames,
        provider: "cpu".into(),
        providers_note: String::new(),
        providers_summary: String::new(),
    });
    for (i, c) in cells.iter().enumerate() {
        lab(LabEvent::CellDone {
            cell: i,
            result: Box::new(result_of(i, c)),
            images: (0..c.preview).flat_map(|s| pattern(i, s, shape)).collect(),
            cached: false,
        });
    }
    state
}

/// Two prompts × four seeds on the SD-1 test export, two guidance scales, both cells done.
fn prompt_state() -> State {
    let text = r#"
[model]
path = "tests/data/pipelines/sd1"
[conditioning]
prompts = ["a red car", "a photo of a cat on a sofa"]
[sampling]
seeds = 4
[[sampler]]
name = "ddim"
steps = [10]
guidance = [1, 7.5]
"#;
    finished_state("prompts.toml", text, ([1, 8, 8], 1), |i, c| {
        let mut scored = CellResult {
            accuracies: vec![1.0, 0.5 * i as f64],
            reference: Some("reference dpm++3m 500".into()),
            guidance: c.guidance,
            ..result(&c.name, &c.label, c.steps, Some(40.0 - 10.0 * i as f64))
        };
        scored.scores.set("accuracy", 0.5 + 0.25 * i as f64);
        scored.scores.set("ref_rmse", 0.02 / (i + 1) as f64);
        scored.scores.set("ref_psnr", 40.0 + 6.0 * i as f64);
        scored
    })
}

/// As experiments/default.toml: eight cells (two samplers × four guidance scales), ten prompts × four
/// seeds of 32×32 digits each, every cell done.
fn default_like_state() -> State {
    let prompts: Vec<String> = (0..10).map(|d| format!("\"a handwritten {d}\"")).collect();
    let text = format!(
        "[model]\npath = \"tests/data/pipelines/sd1\"\n[conditioning]\nprompts = [{}]\n[sampling]\n\
         seeds = 4\n[[sampler]]\nname = \"ddim\"\nsteps = 50\nguidance = [1, 2, 4, 7.5]\n\
         [[sampler]]\nname = \"dpm++2m\"\nsteps = 20\nguidance = [1, 2, 4, 7.5]\n",
        prompts.join(", ")
    );
    let state = finished_state("default.toml", &text, ([1, 32, 32], 1), |_, c| {
        result(&c.name, &c.label, c.steps, Some(10.0))
    });
    assert!(state.lab.cells.iter().all(|c| c.cell.preview == 40));
    state
}

#[test]
fn samplers_view_one_row_per_prompt_labelled() {
    let mut s = prompt_state();
    assert_eq!(s.lab.cells[0].cell.preview_rows(), Some(4));
    snapshots("samplers_prompts", &mut s);
    key(&mut s, KeyCode::Enter);
    assert!(s.focused);
    snapshots("samplers_prompts_focused", &mut s);
}

/// A video model's cells: each clip a strip of its 4 frames (the frames differ by their pattern's shift), then
/// playing (`f`), at frame 3 after two ticks.
#[test]
fn samplers_view_video_clips_as_strips_and_playing() {
    let text = "[model]\npath = \"tests/data/pipelines/animatediff\"\n[conditioning]\nprompts = [\"a red circle\"]\n\
                [sampling]\nseeds = 2\n[[sampler]]\nname = \"ddim\"\nsteps = 8\n[[sampler]]\nname = \"euler\"\nsteps = 8\n";
    let mut s = finished_state("video.toml", text, ([1, 16, 64], 4), |_, c| {
        result(&c.name, &c.label, c.steps, None)
    });
    snapshots("samplers_video_strips", &mut s);
    key(&mut s, KeyCode::Char('f'));
    s.update(Msg::NextFrame);
    s.update(Msg::NextFrame);
    assert_eq!(s.playing, Some(2));
    snapshots("samplers_video_playing", &mut s);
    key(&mut s, KeyCode::Char('f'));
    assert_eq!(s.playing, None);
}

#[test]
fn samplers_view_with_a_broken_file() {
    let mut s = state(false);
    s.update(Msg::Reloaded(Err(
        "experiments/analytic.toml:12:9: `steps`: expected a positive integer".into(),
    )));
    assert!(s.experiment.is_some(), "the last good experiment stays");
    snapshots("samplers_file_error", &mut s);
}

#[test]
fn long_messages_wrap_in_the_log() {
    let mut s = state(false);
    let long = format!(
        "experiments/analytic.toml:3:1: {} the end",
        "word ".repeat(40)
    );
    s.update(Msg::Reloaded(Err(long)));
    let screen = render(&mut s, 80, 24);
    assert!(screen.contains("the end"), "{screen}");
}

#[test]
fn training_view_without_runs() {
    let mut s = state(false);
    key(&mut s, KeyCode::Char('2'));
    assert_eq!(s.view, View::Training);
    snapshots("training_empty", &mut s);
}

#[test]
fn training_view_with_curves() {
    let mut s = state(false);
    key(&mut s, KeyCode::Tab);
    key(&mut s, KeyCode::Char('l'));
    let curve = |scale: f64| -> Vec<(f64, f64)> {
        (0..200)
            .map(|i| {
                let x = i as f64 * 10.0;
                (
                    x,
                    scale
                        * (1.0 + 4.0 * (-x / 400.0).exp())
                        * (1.0 + 0.1 * ((i * 7 % 13) as f64 / 13.0)),
                )
            })
            .collect()
    };
    feed(
        &mut s,
        vec![
            Series::by_step("baseline", "loss", curve(0.05)),
            Series::by_step("wide", "loss", curve(0.03)),
        ],
    );
    snapshots("training_curves", &mut s);
}

/// The training-record fixtures (TensorBoard with images, W&B offline runs) as the follower hands them over.
fn feed_training_records(s: &mut State) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs");
    let store =
        crate::metrics::load(&[root.join("tb_images"), root.join("wandb_offline")]).unwrap();
    for run in store.runs() {
        s.update(Msg::Training(crate::tui::training::replacement(run)));
    }
}

#[test]
fn training_view_images_step_through_logged_steps() {
    let mut s = state(false);
    feed_training_records(&mut s);
    key(&mut s, KeyCode::Char('2'));
    key(&mut s, KeyCode::Char('i'));
    assert_eq!(s.training.pane, crate::tui::training::Pane::Images);
    let steps = |s: &State| -> Vec<i64> {
        s.training
            .media
            .panels(|_, _| true)
            .iter()
            .map(|p| p.step)
            .collect()
    };
    assert_eq!(steps(&s), [40, 40, 40, 20, 20]);
    snapshots("training_images", &mut s);
    key(&mut s, KeyCode::Char(','));
    assert_eq!(steps(&s), [0, 20, 20, 10, 10]);
    key(&mut s, KeyCode::Char(','));
    key(&mut s, KeyCode::Char(','));
    assert_eq!(
        steps(&s),
        [0, 0, 0, 10, 10],
        "each tag stops at its first step"
    );
    key(&mut s, KeyCode::Char('.'));
    assert_eq!(steps(&s), [0, 20, 20, 10, 10]);
}

#[test]
fn training_view_run_overview_shows_facts_and_what_differs() {
    let mut s = state(false);
    feed_training_records(&mut s);
    key(&mut s, KeyCode::Char('2'));
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Char('i'));
    key(&mut s, KeyCode::Down);
    assert_eq!(s.training.pane, crate::tui::training::Pane::Overview);
    let differing: Vec<String> = s
        .training
        .media
        .differing(&s.training.runs())
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert!(
        differing.contains(&"learning_rate".to_string()),
        "{differing:?}"
    );
    snapshots("training_overview", &mut s);
    let screen = render(&mut s, 160, 48);
    for text in [
        "ddpm-base",
        "finished",
        "fixture, ddpm",
        "learning_rate",
        "validation_prompts",
        "best_fid",
    ] {
        assert!(screen.contains(text), "{text} missing from the overview");
    }
    // At 80×24 the config is below the fold: PgDn scrolls to it.
    assert!(!render(&mut s, 80, 24).contains("validation_prompts"));
    key(&mut s, KeyCode::PageDown);
    assert!(render(&mut s, 80, 24).contains("validation_prompts"));
    key(&mut s, KeyCode::PageUp);
    // A resumed run lists both its segments.
    key(&mut s, KeyCode::Down);
    let screen = render(&mut s, 160, 48);
    assert!(screen.contains("2 segments (resumed)"), "{screen}");
}

#[test]
fn training_view_one_panel_per_tag_and_pages() {
    let mut s = state(false);
    key(&mut s, KeyCode::Char('2'));
    let decay = |start: f64, rate: f64| -> Vec<(f64, f64)> {
        (0..100)
            .map(|i| (i as f64 * 30.0, start * (-(i as f64) * rate).exp() + 0.03))
            .collect()
    };
    feed(
        &mut s,
        vec![
            Series::by_step("mnist16", "train/loss", decay(0.5, 0.05)),
            Series::by_step("mnist16", "train/lr", decay(1e-3, 0.02)),
            Series::by_step("mnist16", "eval/fid_ddim50", decay(300.0, 0.04)),
            Series::by_step("wide", "train/loss", decay(0.4, 0.06)),
            Series::by_step("mnist16", "train/ema_loss", decay(0.45, 0.05)),
            Series::by_step("mnist16", "grad_norm", decay(2.0, 0.01)),
        ],
    );
    // Five tags: all fit at 160×48; at 80×24 two to a page.
    let first = render(&mut s, 80, 24);
    assert!(first.contains("tags 1–2 of 5 · page 1/3"), "{first}");
    assert!(
        first.contains("train/loss") && first.contains("train/lr"),
        "{first}"
    );
    assert!(!first.contains("grad_norm"), "{first}");
    let wide = render(&mut s, 160, 48);
    assert!(!wide.contains("page 1/"), "every tag fits: {wide}");
    snapshots("training_tags", &mut s);
    key(&mut s, KeyCode::Char('['));
    let last = render(&mut s, 80, 24);
    assert!(
        last.contains("grad_norm") && last.contains("page 3/3"),
        "[ on the first page wraps to the last: {last}"
    );
    key(&mut s, KeyCode::Char(']'));
    assert_eq!(render(&mut s, 80, 24), first);
}

#[test]
fn training_view_filters_by_regex_and_shows_hides_and_pins_runs() {
    let mut s = state(false);
    key(&mut s, KeyCode::Char('2'));
    let flat = |v: f64| -> Vec<(f64, f64)> {
        (0..50)
            .map(|i| (i as f64 * 10.0, v + i as f64 * 1e-3))
            .collect()
    };
    feed(
        &mut s,
        vec![
            Series::by_step("baseline", "train/loss", flat(0.5)),
            Series::by_step("baseline", "train/lr", flat(0.001)),
            Series::by_step("wide", "train/loss", flat(0.4)),
            Series::by_step("wide", "eval/fid", flat(80.0)),
        ],
    );
    let tags =
        |s: &State| -> Vec<String> { s.training.panels().iter().map(|p| p.tag.clone()).collect() };
    // `/` then a regex and Enter: tags (or runs) that match.
    key(&mut s, KeyCode::Char('/'));
    for c in "loss|fid".chars() {
        key(&mut s, KeyCode::Char(c));
    }
    assert!(
        render(&mut s, 80, 24).contains("/loss|fid▏"),
        "the filter as typed"
    );
    key(&mut s, KeyCode::Enter);
    assert_eq!(tags(&s), ["train/loss", "eval/fid"]);
    // Space hides the run under the cursor (↓ moves it to "wide"); its curves go.
    key(&mut s, KeyCode::Down);
    key(&mut s, KeyCode::Char(' '));
    assert_eq!(tags(&s), ["train/loss"]);
    assert_eq!(s.training.panels()[0].curves.len(), 1);
    assert!(
        s.is_running(),
        "Space in the Training view does not cancel the run"
    );
    // `p` pins it: listed first and shown whatever the filter says.
    key(&mut s, KeyCode::Char('p'));
    assert_eq!(s.training.runs(), ["wide", "baseline"]);
    key(&mut s, KeyCode::Char('/'));
    for _ in 0.."loss|fid".len() {
        key(&mut s, KeyCode::Backspace);
    }
    key(&mut s, KeyCode::Char('('));
    key(&mut s, KeyCode::Enter);
    assert!(
        s.log
            .iter()
            .any(|l| l.starts_with("training filter: /(/ is not a regex")),
        "{:?}",
        s.log
    );
    assert_eq!(
        tags(&s),
        ["train/loss", "eval/fid"],
        "a bad regex keeps the last filter"
    );
    snapshots("training_filtered", &mut s);
}

#[test]
fn a_narrow_column_drops_a_figure_rather_than_cutting_its_digits() {
    let mut s = state(true);
    let narrow = render(&mut s, 80, 24);
    assert!(narrow.contains("FID 12.50 "), "{narrow}");
    assert!(
        !narrow.contains("FID 12.50 · 0."),
        "no cut figure: {narrow}"
    );
    let wide = render(&mut s, 160, 48);
    assert!(wide.contains("FID 12.50 · 0.138 ms/step"), "{wide}");
}

#[test]
fn quality_view() {
    let mut s = state(true);
    key(&mut s, KeyCode::Char('3'));
    snapshots("quality", &mut s);
}

#[test]
fn quality_view_without_scores() {
    let mut s = state(false);
    key(&mut s, KeyCode::Char('3'));
    snapshots("quality_unscored", &mut s);
}

/// Without FID the chart and the table show the error against the reference solve.
#[test]
fn quality_view_against_a_reference_solve() {
    let mut s = state(false);
    let cells: Vec<_> = s.lab.cells.iter().map(|c| c.cell.clone()).collect();
    for (i, c) in cells.iter().enumerate() {
        let mut result = result(&c.name, &c.label, c.steps, None);
        result.scores.set("ref_rmse", 0.5 / c.steps as f64);
        let generation = s.generation;
        s.update(Msg::Lab {
            generation,
            event: Box::new(LabEvent::CellDone {
                cell: i,
                result: Box::new(result),
                images: (0..8).flat_map(|k| pattern(i, k, [1, 8, 8])).collect(),
                cached: false,
            }),
        });
    }
    key(&mut s, KeyCode::Char('3'));
    let text = render(&mut s, 160, 48);
    assert!(text.contains("RMSE to the reference solve"), "{text}");
    assert!(
        text.contains("ref RMSE") && text.contains("0.0500"),
        "{text}"
    );
    snapshots("quality_reference", &mut s);
}

#[test]
fn help_overlay() {
    let mut s = state(false);
    key(&mut s, KeyCode::Char('?'));
    snapshots("help", &mut s);
    key(&mut s, KeyCode::Char('x'));
    assert!(!s.help, "any key closes the help");
}

#[test]
fn too_small_terminal() {
    let mut s = state(false);
    insta::assert_snapshot!("too_small_60x20", render(&mut s, 60, 20));
}

#[test]
fn frame_time_at_160x48() {
    let mut s = default_like_state();
    encode_images(&mut s, 160, 48);
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let frames = 200;
    let start = Instant::now();
    for _ in 0..frames {
        terminal.draw(|f| draw(f, &s)).unwrap();
    }
    let per_frame = start.elapsed().as_secs_f64() * 1e3 / frames as f64;
    println!("320 previews at 160x48: {per_frame:.3} ms per frame (draw and diff)");
    // Debug builds are several times slower than release; 5 ms is the release budget.
    assert!(per_frame < 25.0, "a frame takes {per_frame} ms");
    let mut s = state(true);
    encode_images(&mut s, 160, 48);
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let frames = 200;
    let start = Instant::now();
    for _ in 0..frames {
        terminal.draw(|f| draw(f, &s)).unwrap();
    }
    let per_frame = start.elapsed().as_secs_f64() * 1e3 / frames as f64;
    println!("samplers view at 160x48: {per_frame:.3} ms per frame (draw and diff)");
    assert!(per_frame < 50.0, "a frame takes {per_frame} ms");
    assert_eq!(item(s.lab.sample_shape), 64);
}

/// The cells a frame sends after `previous`, with their positions.
fn sent(previous: &Buffer, next: &Buffer) -> Vec<(u16, u16, String)> {
    previous
        .diff(next)
        .into_iter()
        .map(|(x, y, cell)| (x, y, cell.symbol().to_string()))
        .collect()
}

fn draw_buffer(terminal: &mut Terminal<TestBackend>, state: &State) -> Buffer {
    terminal.draw(|f| draw(f, state)).unwrap().buffer.clone()
}

/// A graphics protocol writes an image's escape sequence into one cell; the cells after it (the
/// other columns' images, the log, the status line) must still reach the terminal, in the first
/// frame and in later ones.
#[test]
fn every_column_image_is_sent_in_every_graphics_protocol() {
    for protocol in [
        ProtocolType::Sixel,
        ProtocolType::Kitty,
        ProtocolType::Iterm2,
    ] {
        let mut s = state(true);
        let mut picker = Picker::halfblocks();
        picker.set_protocol_type(protocol);
        encode_images_as(&picker, &mut s, 160, 48);
        let with_images = image_slots(&s, Rect::new(0, 0, 160, 48))
            .into_iter()
            .filter(|(slot, _)| !s.lab.cells[slot.cell].images.is_empty())
            .collect::<Vec<_>>();
        let mut cells_shown: Vec<usize> = with_images.iter().map(|(slot, _)| slot.cell).collect();
        cells_shown.dedup();
        assert_eq!(cells_shown.len(), 3, "{protocol:?}");
        let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
        let first = draw_buffer(&mut terminal, &s);
        let cells = sent(&Buffer::empty(first.area), &first);
        for (slot, rect) in &with_images {
            let image = cells
                .iter()
                .any(|(x, y, symbol)| rect.contains((*x, *y).into()) && symbol.contains('\x1b'));
            assert!(
                image,
                "{protocol:?}: cell {}'s image is not sent",
                slot.cell
            );
        }
        let status_row = first.area.bottom() - 1;
        assert!(
            cells
                .iter()
                .any(|(_, y, symbol)| *y == status_row && symbol == "?"),
            "{protocol:?}: the status line is not sent"
        );
        s.push_log("a line after the images");
        let second = draw_buffer(&mut terminal, &s);
        let text: String = sent(&first, &second).into_iter().map(|c| c.2).collect();
        assert!(
            text.contains("after"),
            "{protocol:?}: the new log line is not sent: {text:?}"
        );
    }
}

/// The line above the Samplers view's columns, at 80×24.
fn page_header(state: &mut State) -> String {
    let screen = render(state, 80, 24);
    screen.lines().nth(1).unwrap_or_default().to_string()
}

#[test]
fn previews_page_and_zoom_but_never_shrink_below_legible() {
    let mut s = state(false);
    // At 80×24 one 16-column tile of the eight seeds fits under each cell.
    assert!(page_header(&mut s).contains("seed 0 of 8 · cells 1–4 of 4 · 1×"));
    key(&mut s, KeyCode::PageDown);
    assert!(page_header(&mut s).contains("seed 1 of 8"));
    for _ in 0..20 {
        key(&mut s, KeyCode::PageDown);
    }
    assert!(
        page_header(&mut s).contains("seed 7 of 8"),
        "stops at the last"
    );
    key(&mut s, KeyCode::PageUp);
    assert!(page_header(&mut s).contains("seed 6 of 8"));
    // Back on a page seen before, every tile is already encoded at its size.
    key(&mut s, KeyCode::PageDown);
    let cached: Vec<_> = image_slots(&s, Rect::new(0, 0, 80, 24))
        .into_iter()
        .filter(|(slot, _)| !s.lab.cells[slot.cell].images.is_empty())
        .collect();
    assert_eq!(cached.len(), 3, "three cells have images");
    assert!(cached.iter().all(|(slot, _)| s.images.contains_key(slot)));
    key(&mut s, KeyCode::Char('z'));
    let zoomed = page_header(&mut s);
    assert!(
        zoomed.contains("1.5×") && zoomed.contains("cells 1–3 of 4"),
        "{zoomed}"
    );
    for _ in 0..3 {
        key(&mut s, KeyCode::Char('Z'));
    }
    assert!(
        page_header(&mut s).contains(" 1× "),
        "no smaller than legible"
    );
    for (w, h) in [(80, 24), (160, 48)] {
        for (slot, rect) in image_slots(&s, Rect::new(0, 0, w, h)) {
            assert!(slot.size.0 >= 16 && slot.size.1 >= 8, "{slot:?} at {w}×{h}");
            assert_eq!((rect.width, rect.height), slot.size);
        }
    }
}

#[test]
fn everything_that_fits_is_shown_as_large_as_it_fits() {
    let mut s = state(false);
    s.focused = true;
    let screen = render(&mut s, 160, 48);
    let header = screen.lines().nth(1).unwrap_or_default();
    // The focused cell's eight previews all fit at 160×48, larger than the smallest tiles.
    assert!(header.contains("seeds 0–7 of 8"), "{header}");
    let slots = image_slots(&s, Rect::new(0, 0, 160, 48));
    assert_eq!(slots.len(), 8);
    assert!(slots.iter().all(|(slot, _)| slot.size.0 > 16), "{slots:?}");
}

#[test]
fn quality_along_the_swept_guidance_and_every_metric() {
    let mut s = prompt_state();
    key(&mut s, KeyCode::Char('3'));
    let screen = render(&mut s, 80, 24);
    assert!(
        screen.contains("FID against guidance · m: next of 4 metrics"),
        "{screen}"
    );
    // The table has results.csv's score columns: accuracy as a share, the reference error.
    assert!(screen.contains("acc") && screen.contains("75%") && screen.contains("ref RMSE"));
    let mut titles = Vec::new();
    for _ in 0..4 {
        let screen = render(&mut s, 80, 24);
        titles.push(screen.lines().nth(1).unwrap_or_default().to_string());
        key(&mut s, KeyCode::Char('m'));
    }
    for (title, name) in titles.iter().zip([
        "FID against guidance",
        "KID against guidance",
        "Prompt accuracy against guidance",
        "RMSE to the reference solve against guidance",
    ]) {
        assert!(title.contains(name), "{title} should name {name}");
    }
    snapshots("quality_guidance", &mut s);
}

#[test]
fn schedules_view_plots_each_distinct_schedule() {
    let mut s = state(false);
    key(&mut s, KeyCode::Char('5'));
    assert_eq!(s.view, View::Schedules);
    let cells: Vec<&crate::lab::Cell> = s.lab.cells.iter().map(|c| &c.cell).collect();
    let lines = super::schedules::schedules(&cells);
    let names: Vec<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "ddim 10",
            "ddim 50",
            "dpm++2m-karras 10",
            "dpm++2m-sde-karras 20"
        ]
    );
    for (name, points) in &lines {
        // σ falls step by step (log10 σ decreasing), one point per model call with σ > 0.
        assert!(
            points.windows(2).all(|w| w[1].1 < w[0].1),
            "{name}: {points:?}"
        );
        assert!(points.len() >= 9, "{name}");
    }
    snapshots("schedules", &mut s);
}

#[test]
fn a_baseline_cell_shows_differences_and_flips() {
    let mut s = state(false);
    // ddim 10 (done) as the baseline; dpm++2m-karras 10 (done) is compared with it.
    key(&mut s, KeyCode::Char('b'));
    assert_eq!(s.baseline_cell(), Some(0));
    let screen = render(&mut s, 160, 48);
    assert!(
        screen.contains("|difference| from ddim 10 0        1"),
        "{screen}"
    );
    assert!(screen.contains("ddim 10 · baseline"), "{screen}");
    let error = s
        .baseline_errors
        .get(&2)
        .expect("the other finished cell has an error");
    assert!(error.rmse > 0.0);
    assert!(
        screen.contains(&format!("rmse {}", super::charts::short(error.rmse))),
        "{screen}"
    );
    let slots = image_slots(&s, Rect::new(0, 0, 160, 48));
    assert!(
        slots
            .iter()
            .any(|(slot, _)| slot.cell == 2 && slot.diff == Some(0))
    );
    assert!(
        slots
            .iter()
            .all(|(slot, _)| slot.cell != 0 || slot.diff.is_none())
    );
    snapshots("samplers_difference", &mut s);
    key(&mut s, KeyCode::Char('d'));
    let slots = image_slots(&s, Rect::new(0, 0, 160, 48));
    assert!(
        slots
            .iter()
            .all(|(slot, _)| slot.cell == 0 && slot.diff.is_none()),
        "flipped"
    );
    key(&mut s, KeyCode::Char('d'));
    key(&mut s, KeyCode::Char('b'));
    assert_eq!(s.baseline_cell(), None);
    assert!(s.baseline_errors.is_empty());
}

#[test]
fn xy_grid_of_two_swept_axes() {
    let mut s = default_like_state();
    key(&mut s, KeyCode::Char('4'));
    assert_eq!(s.view, View::Xy);
    use crate::tui::xy::{Axis, grid, swept};
    let planned: Vec<crate::lab::Cell> = s.lab.cells.iter().map(|c| c.cell.clone()).collect();
    let cells: Vec<&crate::lab::Cell> = planned.iter().collect();
    assert_eq!(
        swept(&cells),
        [
            Axis::Sampler,
            Axis::Steps,
            Axis::Guidance,
            Axis::Prompt,
            Axis::Seed
        ]
    );
    // Samplers across and guidance down (not steps: each sampler has its own), held at the first
    // prompt and seed 0.
    let g = grid(&cells, &s.xy).expect("two swept axes");
    assert_eq!((g.x, g.y), (Axis::Sampler, Axis::Guidance));
    assert_eq!(g.held, ["prompt a handwritten 0", "seed 0"]);
    assert_eq!(g.tiles.iter().flatten().flatten().count(), 8);
    key(&mut s, KeyCode::Char('y'));
    let g = grid(&cells, &s.xy).expect("two swept axes");
    assert_eq!((g.x, g.y), (Axis::Sampler, Axis::Prompt));
    assert_eq!(g.rows.len(), 10);
    // Steps follow from the sampler: not held.
    assert_eq!(g.held, ["g1", "seed 0"]);
    assert_eq!(g.tiles.iter().flatten().flatten().count(), 20);
    key(&mut s, KeyCode::Char('v'));
    let g = grid(&cells, &s.xy).expect("two swept axes");
    assert_eq!(g.held, ["g2", "seed 0"]);
    let screen = render(&mut s, 160, 48);
    assert!(
        screen.contains("x: sampler · y: prompt · g2 · seed 0 (v: next)"),
        "{screen}"
    );
    snapshots("xy", &mut s);
}

#[test]
fn the_focused_cell_steps_back_through_its_run() {
    let mut s = state(false);
    // ddim 50 is mid-run: frames of its x0 at the steps it reported.
    let running = 1;
    s.selected = running;
    let frames = s.lab.cells[running].trajectory.frames.len();
    assert!(frames >= 1, "the running cell recorded its steps");
    key(&mut s, KeyCode::Char(','));
    assert!(s.focused);
    assert_eq!(s.scrub, Some(frames.saturating_sub(2)));
    let header = render(&mut s, 160, 48)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        header.contains("x0 after step") && header.contains(" · sigma "),
        "{header}"
    );
    let slots = image_slots(&s, Rect::new(0, 0, 160, 48));
    assert!(!slots.is_empty() && slots.iter().all(|(slot, _)| slot.frame == s.scrub));
    assert!(
        slots.iter().all(|(slot, _)| s.images.contains_key(slot)),
        "encoded from the frame"
    );
    key(&mut s, KeyCode::Char('n'));
    let header = render(&mut s, 160, 48)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(header.contains("x_t after step"), "{header}");
    let slots = image_slots(&s, Rect::new(0, 0, 160, 48));
    assert!(
        slots
            .iter()
            .all(|(slot, _)| slot.noisy && s.images.contains_key(slot))
    );
    for _ in 0..frames + 1 {
        key(&mut s, KeyCode::Char('.'));
    }
    assert_eq!(s.scrub, None, "past the last frame: the latest images");
    key(&mut s, KeyCode::Esc);
    assert!(!s.focused);
}

/// Images too large for the panel's height at their smallest zoom (64 px at 80×24) shrink to the smallest
/// legible tile, 16 columns, instead of drawing nothing; the header says so.
#[test]
fn large_images_shrink_to_the_smallest_legible_tile() {
    let mut s = state(false);
    s.lab.sample_shape = [3, 64, 64];
    let area = Rect::new(0, 0, 80, 24);
    let page = super::samplers_page(&s, area).expect("a page");
    assert!(page.shrunk);
    assert_eq!(page.tile, (16, 8));
    assert!(
        page_header(&mut s).contains("· fit ·"),
        "{}",
        page_header(&mut s)
    );
    // At 160×48 the 32-column tile fits: no shrinking.
    let page = super::samplers_page(&s, Rect::new(0, 0, 160, 48)).expect("a page");
    assert!(!page.shrunk);
    assert_eq!(page.tile, (32, 16));
}

/// A run that starts from images shows each preview sample's start image in a column left of the cells,
/// the rows' labels beside it; with a mask, the repainted region tinted.
#[test]
fn start_images_stand_left_of_the_cells() {
    let mut s = prompt_state();
    let shape = s.lab.sample_shape;
    let preview = s.lab.cells[0].cell.preview;
    let images: Vec<f32> = (0..preview).flat_map(|k| pattern(9, k, shape)).collect();
    let generation = s.generation;
    s.update(Msg::Lab {
        generation,
        event: Box::new(LabEvent::StartImages {
            images,
            kind: crate::lab::ImageKind::StartMasked,
        }),
    });
    let page = crate::tui::view::page::page(&s, Rect::new(0, 0, 160, 40)).unwrap();
    let start = page.start.expect("a start column");
    assert!(page.columns.iter().all(|(_, r)| r.x >= start.right()));
    let slots = image_slots(&s, Rect::new(0, 0, 160, 40));
    assert!(slots.iter().any(|(slot, _)| slot.start));
    snapshots("samplers_start_images", &mut s);
    // The focused cell keeps its panel to itself.
    key(&mut s, KeyCode::Enter);
    let page = crate::tui::view::page::page(&s, Rect::new(0, 0, 160, 40)).unwrap();
    assert!(page.start.is_none());
}
