//! The Samplers view in real graphics terminals: Xvfb on a free display, `difflab ui` on
//! experiments/analytic.toml (four cells) in `xterm -ti vt340` with sixel images, and in kitty with
//! `--images auto` (Debian 12's kitty 0.26 has no Unicode
//! placeholders, so auto mode must fall back). Once the cells are done a screenshot of the display
//! must show image pixels in every column.
//! Skips, saying so, where Xvfb, xterm or xwd are missing, unless DIFFLAB_REQUIRE_E2E is set (as CI
//! sets it); kitty likewise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests and benchmarks report failure by panicking"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Cells in experiments/analytic.toml: ddim 10 and 50, dpm++2m-karras 10, dpm++2m-sde-karras 20.
const CELLS: usize = 4;
const SCREEN: (u32, u32) = (1600, 1000);

/// Variables through which an outer terminal or tmux would change what the dashboard picks.
const OUTER_TERMINAL: [&str; 9] = [
    "TMUX",
    "TERM_PROGRAM",
    "TERM_PROGRAM_VERSION",
    "KITTY_WINDOW_ID",
    "KITTY_PID",
    "WEZTERM_EXECUTABLE",
    "KONSOLE_VERSION",
    "ITERM_SESSION_ID",
    "LC_TERMINAL",
];

/// Kills what it holds, last started first, on every way out of a test.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self.0.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Whether Xvfb, xterm and xwd are here. Where end-to-end tests are required, a missing one fails
/// the test instead of skipping it.
fn have_x_tools(test: &str) -> bool {
    let missing: Vec<&str> = ["Xvfb", "xterm", "xwd"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("DIFFLAB_REQUIRE_E2E").is_none(),
        "{test} needs {missing:?} (apt-get install xvfb xterm x11-apps); DIFFLAB_REQUIRE_E2E is set, \
         so it may not skip"
    );
    println!("{missing:?} not installed: skipping {test}");
    false
}

/// Starts Xvfb on a display it picks itself (so parallel runs never collide) and returns it.
fn start_xvfb(processes: &mut Processes) -> String {
    let (w, h) = SCREEN;
    let mut xvfb = Command::new("Xvfb")
        .args(["-displayfd", "1", "-nolisten", "tcp", "-screen", "0"])
        .arg(format!("{w}x{h}x24"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Xvfb");
    let stdout = xvfb.stdout.take().expect("Xvfb's stdout");
    processes.0.push(xvfb);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let number = line.trim();
    assert!(!number.is_empty(), "Xvfb did not start");
    format!(":{number}")
}

/// experiments/analytic.toml in `dir`, writing its results there.
fn experiment(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/analytic.toml");
    let text = std::fs::read_to_string(source).unwrap();
    assert!(text.contains("output = \"out/analytic\""), "{text}");
    let file = dir.join("analytic.toml");
    let text = text.replace("output = \"out/analytic\"", "output = \"out\"");
    std::fs::write(&file, text).unwrap();
    file
}

/// A terminal program on `display`, started in `dir` without the outer terminal's variables.
fn terminal(program: &str, display: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .env("DISPLAY", display)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for var in OUTER_TERMINAL {
        cmd.env_remove(var);
    }
    cmd
}

/// Polls until `ok` holds; false after `limit`.
fn wait(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    ok()
}

/// The screen as rows of RGB pixels.
struct Shot {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

impl Shot {
    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.pixels[y * self.width + x]
    }

    fn save_png(&self, path: &Path) {
        let raw: Vec<u8> = self.pixels.iter().flatten().copied().collect();
        let img = image::RgbImage::from_raw(self.width as u32, self.height as u32, raw).unwrap();
        img.save(path).unwrap();
    }
}

fn screenshot(display: &str) -> Shot {
    let out = Command::new("xwd")
        .args(["-root", "-silent", "-display", display])
        .output()
        .expect("run xwd");
    assert!(out.status.success(), "xwd failed on {display}");
    parse_xwd(&out.stdout)
}

/// An XWD file of a 24-bit TrueColor screen: a big-endian header, a colour map, then the pixels in
/// the header's byte order.
fn parse_xwd(data: &[u8]) -> Shot {
    let field = |i: usize| u32::from_be_bytes(data[i * 4..i * 4 + 4].try_into().unwrap());
    let (header_size, width, height) = (field(0) as usize, field(4) as usize, field(5) as usize);
    let (lsb_first, bits_per_pixel, bytes_per_line) =
        (field(7) == 0, field(11), field(12) as usize);
    let masks = [field(14), field(15), field(16)];
    let colours = field(19) as usize;
    assert!(
        bits_per_pixel == 24 || bits_per_pixel == 32,
        "xwd: {bits_per_pixel} bits per pixel"
    );
    let size = bits_per_pixel as usize / 8;
    let start = header_size + colours * 12;
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        for x in 0..width {
            let at = start + y * bytes_per_line + x * size;
            let bytes = &data[at..at + size];
            let value = if lsb_first {
                bytes.iter().rev().fold(0u32, |v, &b| v << 8 | u32::from(b))
            } else {
                bytes.iter().fold(0u32, |v, &b| v << 8 | u32::from(b))
            };
            pixels.push(masks.map(|m| ((value & m) >> m.trailing_zeros()) as u8));
        }
    }
    Shot {
        width,
        height,
        pixels,
    }
}

/// Image pixels are those inside a 3×3 block of one colour that is not a background. Text, box lines and
/// kitty's placeholder glyphs have no such blocks; upscaled samples and half blocks are made of them.
/// For each screen column, the colours of its image pixels.
fn image_pixels(shot: &Shot) -> Vec<HashSet<[u8; 3]>> {
    let common = backgrounds(shot);
    let image = |x: usize, y: usize| {
        let c = shot.at(x, y);
        let uniform = (0..3).all(|dy| (0..3).all(|dx| shot.at(x + dx, y + dy) == c));
        (uniform && !common.contains(&c)).then_some(c)
    };
    (0..shot.width)
        .map(|x| match x + 2 < shot.width {
            true => (0..shot.height.saturating_sub(2))
                .filter_map(|y| image(x, y))
                .collect(),
            false => HashSet::new(),
        })
        .collect()
}

/// The colours of image pixels in each of the dashboard's `CELLS` columns, which split the terminal's
/// `width` pixels (from the screen's left edge) evenly. A column without images has none.
fn colours_per_column(shot: &Shot, width: usize) -> Vec<usize> {
    let colours_at = image_pixels(shot);
    (0..CELLS)
        .map(|k| {
            let span = (k * width / CELLS)..((k + 1) * width / CELLS).min(shot.width);
            let colours: HashSet<[u8; 3]> =
                span.flat_map(|x| colours_at[x].iter().copied()).collect();
            colours.len()
        })
        .collect()
}

/// The terminal window's width in pixels: where its white background ends on the top row (xterm).
fn white_width(shot: &Shot) -> usize {
    (0..shot.width)
        .rev()
        .find(|&x| shot.at(x, 1) == [255, 255, 255])
        .map_or(shot.width, |x| x + 1)
}

/// Colours that can be a background: black and white (xterm's and kitty's, the root window's), and
/// any colour that covers a fifth of the screen.
fn backgrounds(shot: &Shot) -> Vec<[u8; 3]> {
    let mut counts: std::collections::HashMap<[u8; 3], usize> = std::collections::HashMap::new();
    for &p in &shot.pixels {
        *counts.entry(p).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n * 5 > shot.pixels.len())
        .map(|(c, _)| c)
        .chain([[0, 0, 0], [255, 255, 255]])
        .collect()
}

/// Every cell's column shows images of varied colours.
fn every_column_shows_images(colours: &[usize]) -> bool {
    colours.len() == CELLS && colours.iter().all(|&n| n >= 6)
}

/// Waits for the lab to finish, then for a screenshot with an image in every column; on failure
/// saves the last screenshot and says where.
fn check_screen(display: &str, dir: &Path, what: &str, width: fn(&Shot) -> usize) {
    let results = dir.join("out/results.json");
    assert!(
        wait(Duration::from_secs(30), || results.is_file()),
        "{what}: the cells did not finish"
    );
    let mut last = None;
    let shown = wait(Duration::from_secs(10), || {
        let shot = screenshot(display);
        let colours = colours_per_column(&shot, width(&shot));
        let ok = every_column_shows_images(&colours);
        last = Some((shot, colours));
        ok
    });
    let (shot, colours) = last.expect("a screenshot");
    let name = what.replace(' ', "-");
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    shot.save_png(&png);
    assert!(
        shown,
        "{what}: expected images in each of {CELLS} columns, found colours {colours:?}; screenshot: {}",
        png.display()
    );
    println!(
        "{what}: colours per column {colours:?}; screenshot: {}",
        png.display()
    );
}

#[test]
fn every_column_shows_its_images_in_xterm_sixel() {
    if !have_x_tools("the sixel end-to-end test") {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path());
    let mut processes = Processes(Vec::new());
    let display = start_xvfb(&mut processes);
    let xterm = terminal("xterm", &display, dir.path())
        .args(["-ti", "vt340", "-geometry", "160x48+0+0", "-e"])
        .arg(env!("CARGO_BIN_EXE_difflab"))
        .arg("ui")
        .arg(&file)
        .args(["--images", "sixel"])
        .spawn()
        .expect("start xterm");
    processes.0.push(xterm);
    check_screen(&display, dir.path(), "xterm sixel", white_width);
    println!("xterm: {:.1} s", t0.elapsed().as_secs_f64());
}

/// Says why the kitty test cannot run here; where end-to-end tests are required (CI), that fails it.
fn skip_unless_required(why: &str) {
    assert!(
        std::env::var_os("DIFFLAB_REQUIRE_E2E").is_none(),
        "{why}; DIFFLAB_REQUIRE_E2E is set, so the kitty end-to-end test may not skip"
    );
    println!("{why}: skipping the kitty end-to-end test");
}

#[test]
fn every_column_shows_its_images_in_kitty_auto() {
    if !on_path("kitty") {
        skip_unless_required("kitty is not installed (apt-get install kitty)");
        return;
    }
    if !have_x_tools("the kitty end-to-end test") {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let file = experiment(dir.path());
    let started = dir.path().join("started");
    let mut processes = Processes(Vec::new());
    let display = start_xvfb(&mut processes);
    // The shell marks that kitty is up and running programs; kitty without OpenGL never gets there.
    let script = format!(
        "touch '{}' && exec '{}' ui '{}'",
        started.display(),
        env!("CARGO_BIN_EXE_difflab"),
        file.display()
    );
    let kitty = terminal("kitty", &display, dir.path())
        .args(["--config", "NONE", "-o", "update_check_interval=0"])
        .args([
            "-o",
            "initial_window_width=1200",
            "-o",
            "initial_window_height=700",
        ])
        .args(["-o", "remember_window_size=no", "sh", "-c", &script])
        .spawn()
        .expect("start kitty");
    processes.0.push(kitty);
    if !wait(Duration::from_secs(20), || started.is_file()) {
        skip_unless_required(&format!(
            "kitty did not start on {display} (no OpenGL? apt-get install libgl1-mesa-dri)"
        ));
        return;
    }
    // kitty's window is as wide as asked.
    check_screen(&display, dir.path(), "kitty auto", |_| 1200);
    println!("kitty: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn columns_find_their_images_and_ignore_text() {
    // Two 50×90 grey images of 10-pixel blocks on white in the first and third of four columns, with a
    // line of 1-pixel "text" in the second.
    let (width, height) = (400, 100);
    let mut pixels = vec![[255u8; 3]; width * height];
    for y in 10..100 {
        for x in (20..70).chain(220..270) {
            let v = ((x / 10 + y / 10) % 8 * 30 + 10) as u8;
            pixels[y * width + x] = [v, v, v];
        }
        pixels[y * width + 150] = [0, 0, 0];
    }
    pixels[0] = [1, 2, 3];
    let shot = Shot {
        width,
        height,
        pixels,
    };
    let colours = colours_per_column(&shot, width);
    assert!(colours[0] >= 6 && colours[2] >= 6, "{colours:?}");
    assert_eq!((colours[1], colours[3]), (0, 0), "{colours:?}");
    assert!(!every_column_shows_images(&colours));
    assert_eq!(white_width(&shot), width);
}
