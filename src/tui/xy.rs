//! The X/Y grid, as the web UIs' X/Y plot: two of the axes the experiment sweeps (sampler, steps,
//! guidance, shift, prompt, seed, and each sampler setting given as a list: schedule, guidance method, eta,
//! …) as columns and rows, every other axis at one value. Pure: which cell's which preview sample goes
//! where, and the labels.

use std::collections::{BTreeMap, HashMap};

use crate::lab::Cell;

/// An axis an experiment can sweep.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Axis {
    Sampler,
    Steps,
    Guidance,
    Shift,
    Prompt,
    Seed,
    /// A sampler setting given as a list, by its results column (`schedule`, `eta`, `guidance_method`).
    Setting(String),
}

/// A setting axis's value for a sampler that does not have it.
const ABSENT: &str = "—";

/// The axes every experiment has.
const FIXED: [Axis; 6] = [
    Axis::Sampler,
    Axis::Steps,
    Axis::Guidance,
    Axis::Shift,
    Axis::Prompt,
    Axis::Seed,
];

impl Axis {
    pub fn name(&self) -> &str {
        match self {
            Axis::Sampler => "sampler",
            Axis::Steps => "steps",
            Axis::Guidance => "guidance",
            Axis::Shift => "shift",
            Axis::Prompt => "prompt",
            Axis::Seed => "seed",
            Axis::Setting(column) => column,
        }
    }

    /// Whether its values are numbers, ordered as numbers.
    fn numeric(&self, values: &[String]) -> bool {
        match self {
            Axis::Steps | Axis::Guidance | Axis::Shift => true,
            Axis::Setting(_) => values.iter().all(|v| v == ABSENT || number(v).is_some()),
            _ => false,
        }
    }
}

/// A value's number: `g4` → 4, `s3` → 3, `eta=0.5` → 0.5.
fn number(v: &str) -> Option<f64> {
    let v = v.rsplit('=').next().unwrap_or(v);
    v.trim_start_matches(['g', 's']).parse::<f64>().ok()
}

/// Which axes are x and y (indices into the swept axes), and the value each other axis is held at
/// (an index into its values, by axis name).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct XyChoice {
    pub x: usize,
    pub y: usize,
    pub held: BTreeMap<String, usize>,
    /// The first column and row shown when not all fit.
    pub first: (usize, usize),
}

impl XyChoice {
    /// The first two swept axes across and down.
    pub fn new() -> Self {
        XyChoice {
            y: 1,
            ..XyChoice::default()
        }
    }

    fn held(&self, axis: &Axis) -> usize {
        self.held.get(axis.name()).copied().unwrap_or(0)
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
fn value(axis: &Axis, cell: &Cell, item: usize) -> String {
    let it = &cell.items[item];
    match axis {
        // The sampler axis is the sampler's label without its swept settings (each an axis of its own).
        Axis::Sampler => cell.sampler_label.clone(),
        Axis::Steps => cell.steps.to_string(),
        Axis::Guidance => format!("g{}", cell.guidance),
        Axis::Shift => cell.shift.map_or(String::new(), |s| format!("s{s}")),
        Axis::Prompt => cell
            .conditions
            .get(it.condition)
            .cloned()
            .unwrap_or_default(),
        Axis::Seed => format!("seed {}", it.seed),
        Axis::Setting(column) => match cell.axes.iter().find(|(c, _)| c == column) {
            Some((_, serde_json::Value::String(s))) => s.clone(),
            Some((_, v)) => format!("{column}={v}"),
            None => ABSENT.into(),
        },
    }
}

/// Every (cell, preview sample) of the experiment.
fn samples(cells: &[&Cell]) -> impl Iterator<Item = (usize, usize)> {
    (cells.iter().enumerate())
        .flat_map(|(c, cell)| (0..cell.preview.min(cell.items.len())).map(move |i| (c, i)))
}

/// The distinct values of `axis`: in first-seen order, numbers (steps, guidance, shift, numeric settings)
/// ascending.
pub fn values(cells: &[&Cell], axis: &Axis) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (c, i) in samples(cells) {
        let v = value(axis, cells[c], i);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if axis.numeric(&out) {
        out.sort_by(|a, b| {
            let n = |v: &String| number(v).unwrap_or(f64::MAX);
            n(a).total_cmp(&n(b))
        });
    }
    out
}

/// Every axis of the experiment: the fixed ones, then its setting axes in the order first seen (the shift
/// is an axis of its own).
fn all_axes(cells: &[&Cell]) -> Vec<Axis> {
    let mut axes = FIXED.to_vec();
    for cell in cells {
        for (column, _) in &cell.axes {
            let axis = Axis::Setting(column.clone());
            if column != "shift" && !axes.contains(&axis) {
                axes.push(axis);
            }
        }
    }
    axes
}

/// The axes with more than one value.
pub fn swept(cells: &[&Cell]) -> Vec<Axis> {
    all_axes(cells)
        .into_iter()
        .filter(|a| values(cells, a).len() > 1)
        .collect()
}

/// The grid for `choice`; `None` when the experiment sweeps fewer than two axes.
pub fn grid(cells: &[&Cell], choice: &XyChoice) -> Option<XyGrid> {
    let swept = swept(cells);
    if swept.len() < 2 {
        return None;
    }
    let x = swept[choice.x % swept.len()].clone();
    // Down, the chosen axis or the next one that varies independently of x (samplers across and
    // their own step counts down would fill only a diagonal).
    let candidates = (0..swept.len()).map(|k| &swept[(choice.y + k) % swept.len()]);
    let y = candidates
        .clone()
        .find(|&a| *a != x && !determined(cells, &x, a) && !determined(cells, a, &x))
        .or_else(|| candidates.clone().find(|&a| *a != x))?
        .clone();
    let held_at = |a: &Axis| {
        let all = values(cells, a);
        all.get(choice.held(a) % all.len().max(1)).cloned()
    };
    let others = held_axes(cells, &x, &y);
    let held_values: Vec<(Axis, Option<String>)> =
        others.iter().map(|a| (a.clone(), held_at(a))).collect();
    let (columns, rows) = (values(cells, &x), values(cells, &y));
    let mut tiles = vec![vec![None; columns.len()]; rows.len()];
    for (c, i) in samples(cells) {
        let cell = cells[c];
        if !held_values
            .iter()
            .all(|(a, v)| Some(value(a, cell, i)) == *v)
        {
            continue;
        }
        let col = columns.iter().position(|v| *v == value(&x, cell, i));
        let row = rows.iter().position(|v| *v == value(&y, cell, i));
        if let (Some(col), Some(row)) = (col, row) {
            tiles[row][col].get_or_insert((c, i));
        }
    }
    let held = held_values
        .into_iter()
        .filter_map(|(a, v)| {
            let v = v?;
            Some(match a {
                // "seed 3", "g4", "eta=0.5" say what they are.
                Axis::Seed | Axis::Guidance => v,
                Axis::Setting(_) if v.contains('=') => v,
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
fn determined(cells: &[&Cell], a: &Axis, b: &Axis) -> bool {
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
fn held_axes(cells: &[&Cell], x: &Axis, y: &Axis) -> Vec<Axis> {
    all_axes(cells)
        .into_iter()
        .filter(|a| a != x && a != y)
        .filter(|a| {
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
    for a in held_axes(cells, &g.x, &g.y) {
        let n = values(cells, &a).len().max(1);
        let k = (choice.held(&a) + 1) % n;
        choice.held.insert(a.name().to_string(), k);
        if k != 0 {
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
        assert_eq!(values(&cells, &Axis::Sampler), ["euler", "heun"]);
        assert_eq!(values(&cells, &Axis::Shift), ["s1", "s3"]);
        // Numbers ascend whatever order the cells come in.
        assert_eq!(values(&cells, &Axis::Steps), ["2", "4"]);
        let g = grid(&cells, &XyChoice::new()).expect("two swept axes");
        assert_eq!((g.x, g.y), (Axis::Sampler, Axis::Shift));
        assert_eq!(g.tiles.iter().flatten().flatten().count(), 4);
    }

    /// Any setting given as a list is an axis: eta across and the schedule down, the sampler held.
    #[test]
    fn sampler_settings_are_axes() {
        let text = "[model]\npath = \"analytic\"\nsample_shape = [1, 4, 4]\n[sampling]\nseeds = 1\n\
                    [[sampler]]\nname = \"DPM++ 2S a\"\nsteps = 4\nsettings = { eta = [1, 0, 0.5] }\n\
                    schedule = [\"karras\", \"kl_optimal\"]\n[[sampler]]\nname = \"ddim\"\nsteps = 4\n";
        let e = Experiment::parse(std::path::Path::new("xy.toml"), text).expect("parses");
        let planned = crate::lab::plan(&e, None).expect("plans");
        let cells: Vec<&Cell> = planned.iter().collect();
        let eta = Axis::Setting("eta".into());
        let schedule = Axis::Setting("schedule".into());
        assert_eq!(
            swept(&cells),
            [Axis::Sampler, schedule.clone(), eta.clone()]
        );
        assert_eq!(values(&cells, &Axis::Sampler), ["DPM++ 2S a", "ddim"]);
        assert_eq!(values(&cells, &eta), ["eta=0", "eta=0.5", "eta=1", "—"]);
        let choice = XyChoice {
            x: 2,
            y: 1,
            ..XyChoice::new()
        };
        let g = grid(&cells, &choice).expect("a grid");
        assert_eq!((&g.x, &g.y), (&eta, &schedule));
        assert_eq!(g.rows, ["karras", "kl_optimal", "—"]);
        // DPM++ 2S a's six cells fill eta × schedule; ddim, without either, is the corner.
        assert_eq!(g.tiles.iter().flatten().flatten().count(), 7);
    }
}
