//! The X/Y grid, as the web UIs' X/Y plot: two of the axes the experiment sweeps (sampler, steps,
//! guidance, shift, prompt, seed) as columns and rows, every other axis at one value. Pure: which cell's which
//! preview sample goes where, and the labels.

use std::collections::HashMap;

use strum::VariantArray;

use crate::lab::Cell;

/// An axis an experiment can sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Axis {
    Sampler,
    Steps,
    Guidance,
    Shift,
    Prompt,
    Seed,
}

impl Axis {
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Which axes are x and y (indices into the swept axes), and the value each other axis is held at
/// (indices into its values, by [`Axis`] order).
#[derive(Debug, Clone, PartialEq)]
pub struct XyChoice {
    pub x: usize,
    pub y: usize,
    pub held: [usize; Axis::VARIANTS.len()],
    /// The first column and row shown when not all fit.
    pub first: (usize, usize),
}

impl Default for XyChoice {
    /// The first two swept axes across and down.
    fn default() -> Self {
        XyChoice {
            x: 0,
            y: 1,
            held: [0; Axis::VARIANTS.len()],
            first: (0, 0),
        }
    }
}

/// The grid to draw: the axes' labels and, for each row and column, the cell and preview sample there.
#[derive(Debug, Clone, PartialEq)]
pub struct XyGrid {
    pub x: Axis,
    pub y: Axis,
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    /// The other axes and the value each is held at ("seed 3", "prompt a cat").
    pub held: Vec<String>,
    /// `tiles[row][column]`: (cell index, preview sample index), if the experiment has that combination.
    pub tiles: Vec<Vec<Option<(usize, usize)>>>,
}

/// One axis value of a cell's preview sample.
fn value(axis: Axis, cell: &Cell, item: usize) -> String {
    let it = &cell.items[item];
    match axis {
        // A shift sweep appends " s<shift>" to the label; the sampler axis is the label without it.
        Axis::Sampler => match cell.shift {
            Some(shift) => (cell.label.strip_suffix(&format!(" s{shift}")))
                .unwrap_or(&cell.label)
                .to_string(),
            None => cell.label.clone(),
        },
        Axis::Steps => cell.steps.to_string(),
        Axis::Guidance => format!("g{}", cell.guidance),
        Axis::Shift => cell.shift.map_or(String::new(), |s| format!("s{s}")),
        Axis::Prompt => cell
            .conditions
            .get(it.condition)
            .cloned()
            .unwrap_or_default(),
        Axis::Seed => format!("seed {}", it.seed),
    }
}

/// Every (cell, preview sample) of the experiment.
fn samples(cells: &[&Cell]) -> impl Iterator<Item = (usize, usize)> {
    (cells.iter().enumerate())
        .flat_map(|(c, cell)| (0..cell.preview.min(cell.items.len())).map(move |i| (c, i)))
}

/// The distinct values of `axis`: in first-seen order, numbers (steps, guidance, shift) ascending.
pub fn values(cells: &[&Cell], axis: Axis) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (c, i) in samples(cells) {
        let v = value(axis, cells[c], i);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if matches!(axis, Axis::Steps | Axis::Guidance | Axis::Shift) {
        let number = |v: &String| {
            v.trim_start_matches(['g', 's'])
                .parse::<f64>()
                .unwrap_or(f64::MAX)
        };
        out.sort_by(|a, b| number(a).total_cmp(&number(b)));
    }
    out
}

/// The axes with more than one value.
pub fn swept(cells: &[&Cell]) -> Vec<Axis> {
    (Axis::VARIANTS.iter().copied())
        .filter(|&a| values(cells, a).len() > 1)
        .collect()
}

/// The grid for `choice`; `None` when the experiment sweeps fewer than two axes.
pub fn grid(cells: &[&Cell], choice: &XyChoice) -> Option<XyGrid> {
    let swept = swept(cells);
    if swept.len() < 2 {
        return None;
    }
    let x = swept[choice.x % swept.len()];
    // Down, the chosen axis or the next one that varies independently of x (samplers across and
    // their own step counts down would fill only a diagonal).
    let candidates = (0..swept.len()).map(|k| swept[(choice.y + k) % swept.len()]);
    let y = candidates
        .clone()
        .find(|&a| a != x && !determined(cells, x, a) && !determined(cells, a, x))
        .or_else(|| candidates.clone().find(|&a| a != x))?;
    let all: Vec<Vec<String>> = (Axis::VARIANTS.iter()).map(|&a| values(cells, a)).collect();
    let held_at = |a: Axis| {
        let k = a as usize;
        all[k].get(choice.held[k] % all[k].len().max(1)).cloned()
    };
    let others = held_axes(cells, x, y);
    let (columns, rows) = (all[x as usize].clone(), all[y as usize].clone());
    let mut tiles = vec![vec![None; columns.len()]; rows.len()];
    for (c, i) in samples(cells) {
        let cell = cells[c];
        if !others
            .iter()
            .all(|&a| Some(value(a, cell, i)) == held_at(a))
        {
            continue;
        }
        let col = columns.iter().position(|v| *v == value(x, cell, i));
        let row = rows.iter().position(|v| *v == value(y, cell, i));
        if let (Some(col), Some(row)) = (col, row) {
            tiles[row][col].get_or_insert((c, i));
        }
    }
    let held = others
        .iter()
        .filter_map(|&a| {
            let v = held_at(a)?;
            Some(match a {
                Axis::Seed | Axis::Guidance => v,
                _ => format!("{} {v}", a.name()),
            })
        })
        .collect();
    Some(XyGrid {
        x,
        y,
        columns,
        rows,
        held,
        tiles,
    })
}

/// Whether `b`'s value follows from `a`'s (one value of `b` for each of `a`).
fn determined(cells: &[&Cell], a: Axis, b: Axis) -> bool {
    let mut seen: HashMap<String, String> = HashMap::new();
    samples(cells).all(|(c, i)| {
        let v = value(b, cells[c], i);
        *seen
            .entry(value(a, cells[c], i))
            .or_insert_with(|| v.clone())
            == v
    })
}

/// The axes besides `x` and `y` that must be held at one value: those with several values at one
/// (x, y). An axis the two decide (a sampler's step count, with samplers across) is not held.
fn held_axes(cells: &[&Cell], x: Axis, y: Axis) -> Vec<Axis> {
    (Axis::VARIANTS.iter().copied())
        .filter(|&a| a != x && a != y)
        .filter(|&a| {
            let mut seen: HashMap<(String, String), String> = HashMap::new();
            samples(cells).any(|(c, i)| {
                let at = (value(x, cells[c], i), value(y, cells[c], i));
                let v = value(a, cells[c], i);
                seen.entry(at).or_insert_with(|| v.clone()) != &v
            })
        })
        .collect()
}

/// The next value of the held axes, as an odometer: the first held axis steps, carrying into the next.
pub fn next_held(cells: &[&Cell], choice: &mut XyChoice) {
    let Some(g) = grid(cells, choice) else {
        return;
    };
    for a in held_axes(cells, g.x, g.y) {
        let n = values(cells, a).len();
        let k = a as usize;
        choice.held[k] = (choice.held[k] + 1) % n;
        if choice.held[k] != 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Experiment;

    /// A shift sweep is its own axis: the sampler axis keeps the label without the shift.
    #[test]
    fn shift_is_an_axis_of_its_own() {
        let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\nprediction_type = \"flow_prediction\"\n\
                    [sampling]\nseeds = 2\n[[sampler]]\nname = \"euler\"\nsteps = 4\nshift = [1, 3]\n\
                    [[sampler]]\nname = \"heun\"\nsteps = 2\nshift = [3, 1]\n";
        let e = Experiment::parse(std::path::Path::new("xy.toml"), text).expect("parses");
        let planned = crate::lab::plan(&e, None).expect("plans");
        let cells: Vec<&Cell> = planned.iter().collect();
        assert_eq!(
            swept(&cells),
            [Axis::Sampler, Axis::Steps, Axis::Shift, Axis::Seed]
        );
        assert_eq!(values(&cells, Axis::Sampler), ["euler", "heun"]);
        assert_eq!(values(&cells, Axis::Shift), ["s1", "s3"]);
        // Numbers ascend whatever order the cells come in.
        assert_eq!(values(&cells, Axis::Steps), ["2", "4"]);
        let g = grid(&cells, &XyChoice::default()).expect("two swept axes");
        assert_eq!((g.x, g.y), (Axis::Sampler, Axis::Shift));
        assert_eq!(g.tiles.iter().flatten().flatten().count(), 4);
    }
}
