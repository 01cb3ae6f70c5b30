//! Sample images in the terminal: choosing the graphics protocol, and encoding grids on a worker
//! thread so the UI task never resizes or encodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use image::DynamicImage;
use ratatui::layout::Rect;
use ratatui_image::Resize;
use ratatui_image::picker::{Capability, Picker, ProtocolType, cap_parser::QueryStdioOptions};

use super::app::{Encoded, ImageSlot};
use super::probe;
use crate::lab::difference::heat_map;
use crate::lab::images::{GAP, grid, upscale};

/// `--images`: how samples are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageMode {
    /// Halfblocks inside tmux or when the terminal does not answer; otherwise what it supports.
    Auto,
    /// Unicode half blocks with colours: works everywhere.
    Halfblocks,
    Sixel,
    Kitty,
    Iterm2,
}

/// How long the terminal gets to answer the capability query.
const QUERY_TIMEOUT: Duration = Duration::from_millis(400);

/// The picker for `mode`, and a line for the log when the terminal cannot show what was detected
/// or asked for. `Auto` asks the terminal (bounded by a timeout) unless inside tmux, where
/// graphics protocols pass through badly and halfblocks are used. Call with the terminal in raw mode
/// and before reading its events.
pub fn picker(mode: ImageMode) -> (Picker, Option<String>) {
    let forced = match mode {
        ImageMode::Auto => None,
        ImageMode::Halfblocks => Some(ProtocolType::Halfblocks),
        ImageMode::Sixel => Some(ProtocolType::Sixel),
        ImageMode::Kitty => Some(ProtocolType::Kitty),
        ImageMode::Iterm2 => Some(ProtocolType::Iterm2),
    };
    let in_tmux = std::env::var_os("TMUX").is_some_and(|v| !v.is_empty());
    // Terminals that have no graphics to offer are not asked (a query left unanswered keeps a
    // reader on stdin until something arrives).
    let plain = std::env::var("TERM").map_or(true, |t| t.is_empty() || t == "dumb" || t == "linux");
    if forced == Some(ProtocolType::Halfblocks) || (forced.is_none() && (in_tmux || plain)) {
        return (Picker::halfblocks(), None);
    }
    let mut options = QueryStdioOptions::default();
    options.timeout = QUERY_TIMEOUT;
    let mut picker =
        Picker::from_query_stdio_with_options(options).unwrap_or_else(|_| Picker::halfblocks());
    if let Some(p) = forced {
        picker.set_protocol_type(p);
    }
    let note = check_kitty(&mut picker, forced.is_some());
    (picker, note)
}

/// ratatui-image places kitty images only through Unicode placeholders (kitty 0.28 and later);
/// a terminal without them rejects every image. Auto mode then falls back to sixel where the
/// terminal has it, else halfblocks; `--images kitty` stays, with a warning.
fn check_kitty(picker: &mut Picker, forced: bool) -> Option<String> {
    if picker.protocol_type() != ProtocolType::Kitty {
        return None;
    }
    let answer = probe::ask(QUERY_TIMEOUT);
    if answer.placeholders() {
        return None;
    }
    let terminal = answer.terminal();
    if forced {
        return Some(format!(
            "warning: {terminal} shows no kitty Unicode placeholders (kitty 0.28 and later do): \
             --images kitty may draw placeholder glyphs instead of images"
        ));
    }
    let fallback = if picker.capabilities().contains(&Capability::Sixel) {
        ProtocolType::Sixel
    } else {
        ProtocolType::Halfblocks
    };
    picker.set_protocol_type(fallback);
    Some(format!(
        "{terminal} shows no kitty Unicode placeholders (kitty 0.28 and later do): images as {}",
        protocol_name(fallback)
    ))
}

pub fn protocol_name(p: ProtocolType) -> &'static str {
    match p {
        ProtocolType::Halfblocks => "halfblocks",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Kitty => "kitty",
        ProtocolType::Iterm2 => "iterm2",
    }
}

/// One image to encode: a cell's preview samples as a grid fitted into `size` cells.
pub struct Request {
    pub slot: ImageSlot,
    pub version: u64,
    pub size: (u16, u16),
    pub samples: Arc<Vec<f32>>,
    pub shape: [usize; 3],
    pub count: usize,
    /// Columns of the grid when its rows mean something (one row per prompt); `None`: the largest fit.
    pub columns: Option<usize>,
    /// The baseline's sample: the tile shows the difference from it as a heat map.
    pub baseline: Option<Arc<Vec<f32>>>,
    /// A logged training image to read, decode and show instead of samples.
    pub log_image: Option<LogImageAt>,
}

/// Where a logged training image is.
#[derive(Debug, Clone)]
pub struct LogImageAt {
    pub log: Arc<std::path::Path>,
    pub format: crate::metrics::Format,
    pub source: crate::metrics::ImageSource,
}

/// Encodes a grid for the terminal: the column count that makes the samples largest in `size`,
/// scaled up by whole pixels, then fitted by the picker.
pub fn encode(picker: &Picker, r: &Request) -> Option<Encoded> {
    if let Some(at) = &r.log_image {
        return encode_log_image(picker, r, at);
    }
    let (cols, rows) = r.size;
    if cols == 0 || rows == 0 || r.count == 0 || r.samples.is_empty() {
        return None;
    }
    let (fw, fh) = picker.font_size();
    let (pw, ph) = (cols as f64 * fw as f64, rows as f64 * fh as f64);
    let heat = match &r.baseline {
        Some(b) => Some(heat_map(&r.samples, b, r.shape)?),
        None => None,
    };
    let (samples, shape) = match &heat {
        Some(h) => (h.as_slice(), [3, r.shape[1], r.shape[2]]),
        None => (r.samples.as_slice(), r.shape),
    };
    let [_, h, w] = shape;
    let (gw, gh) = ((w + 2) as f64, (h + 2) as f64);
    let best = r
        .columns
        .unwrap_or_else(|| best_columns(r.count, pw, ph, gw, gh));
    let mut img = grid(samples, shape, r.count, best);
    if r.count == 1 {
        // A lone tile needs no gutter: the layout spaces the tiles.
        img =
            image::imageops::crop_imm(&img, GAP as u32, GAP as u32, w as u32, h as u32).to_image();
    }
    let factor = (pw / img.width() as f64)
        .min(ph / img.height() as f64)
        .floor()
        .max(1.0) as u32;
    let img = DynamicImage::ImageRgb8(upscale(&img, factor));
    let area = Rect::new(0, 0, cols, rows);
    let protocol = picker.new_protocol(img, area, Resize::Fit(None)).ok()?;
    let got = protocol.area();
    Some(Encoded {
        version: r.version,
        size: (got.width.min(cols), got.height.min(rows)),
        protocol,
    })
}

/// Reads a logged image from its log (here, on the encoder thread, never on the UI task), scales it up
/// by whole pixels to fill `size` as far as it goes, and fits it.
fn encode_log_image(picker: &Picker, r: &Request, at: &LogImageAt) -> Option<Encoded> {
    let (cols, rows) = r.size;
    if cols == 0 || rows == 0 {
        return None;
    }
    let png = at.format.load_image(&at.log, &at.source).ok()?;
    let img = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .ok()?
        .to_rgb8();
    let (fw, fh) = picker.font_size();
    let (pw, ph) = (cols as f64 * fw as f64, rows as f64 * fh as f64);
    let factor = (pw / img.width().max(1) as f64)
        .min(ph / img.height().max(1) as f64)
        .floor()
        .max(1.0) as u32;
    let img = DynamicImage::ImageRgb8(upscale(&img, factor));
    let protocol = picker
        .new_protocol(img, Rect::new(0, 0, cols, rows), Resize::Fit(None))
        .ok()?;
    let got = protocol.area();
    Some(Encoded {
        version: r.version,
        size: (got.width.min(cols), got.height.min(rows)),
        protocol,
    })
}

/// The column count that makes `count` tiles of `gw`×`gh` pixels largest in `pw`×`ph`.
fn best_columns(count: usize, pw: f64, ph: f64, gw: f64, gh: f64) -> usize {
    (1..=count)
        .map(|c| {
            let rows = count.div_ceil(c) as f64;
            (c, (pw / (c as f64 * gw + 2.0)).min(ph / (rows * gh + 2.0)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(1, |b| b.0)
}

/// Starts the encoder thread: it takes requests, keeps only the newest per slot, and hands each
/// result to `done`.
pub fn spawn_encoder(
    picker: Picker,
    done: impl Fn(ImageSlot, Encoded) -> bool + Send + 'static,
) -> std::io::Result<Sender<Request>> {
    let (tx, rx): (Sender<Request>, Receiver<Request>) = channel();
    std::thread::Builder::new()
        .name("difflab-images".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut latest: HashMap<ImageSlot, Request> = HashMap::new();
                latest.insert(first.slot, first);
                while let Ok(more) = rx.try_recv() {
                    latest.insert(more.slot, more);
                }
                for (slot, request) in latest {
                    if let Some(encoded) = encode(&picker, &request)
                        && !done(slot, encoded)
                    {
                        return;
                    }
                }
            }
        })
        .map_err(|e| {
            std::io::Error::other(format!("cannot start the image encoder thread: {e}"))
        })?;
    Ok(tx)
}
