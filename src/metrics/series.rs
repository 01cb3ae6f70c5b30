//! Series tools: points, EMA smoothing as TensorBoard does it, x axes, and downsampling for
//! display that keeps the extremes.

/// One value of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Training step (from the log, or the line/row number when the log has none).
    pub step: i64,
    /// Seconds since the Unix epoch; NaN when the log has no wall time for this point.
    pub wall_time: f64,
    /// The value; may be NaN or infinite when the log says so.
    pub value: f64,
}

impl Point {
    pub fn new(step: i64, wall_time: f64, value: f64) -> Self {
        Point {
            step,
            wall_time,
            value,
        }
    }
}

/// The points of one tag, in the order they were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub points: Vec<Point>,
}

/// Summary figures of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub len: usize,
    /// The last point read.
    pub last: Point,
    /// The smallest finite value, and the point where it occurs (first occurrence).
    pub min: Option<Point>,
    /// The largest finite value, and the point where it occurs (first occurrence).
    pub max: Option<Point>,
    /// How many values are NaN or infinite.
    pub non_finite: usize,
}

impl Series {
    pub fn new() -> Self {
        Series::default()
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn push(&mut self, point: Point) {
        self.points.push(point);
    }

    /// Appends `point` as a log is read. A step below the last one means the run resumed from an
    /// earlier checkpoint: as TensorBoard purges orphaned data, the points at or after that step are
    /// dropped first, so the series stays in step order. Returns how many were dropped.
    pub fn append(&mut self, point: Point) -> usize {
        let resumed = self
            .points
            .last()
            .is_some_and(|last| point.step < last.step);
        let mut dropped = 0;
        if resumed {
            let keep = self.points.partition_point(|p| p.step < point.step);
            dropped = self.points.len() - keep;
            self.points.truncate(keep);
        }
        self.points.push(point);
        dropped
    }

    pub fn last(&self) -> Option<&Point> {
        self.points.last()
    }

    /// Count, last, min and max; `None` for an empty series.
    pub fn summary(&self) -> Option<Summary> {
        let last = *self.points.last()?;
        let mut min: Option<Point> = None;
        let mut max: Option<Point> = None;
        let mut non_finite = 0;
        for p in &self.points {
            if !p.value.is_finite() {
                non_finite += 1;
                continue;
            }
            if min.is_none_or(|m| p.value < m.value) {
                min = Some(*p);
            }
            if max.is_none_or(|m| p.value > m.value) {
                max = Some(*p);
            }
        }
        Some(Summary {
            len: self.points.len(),
            last,
            min,
            max,
            non_finite,
        })
    }

    /// True when steps never decrease.
    pub fn is_sorted_by_step(&self) -> bool {
        self.points.windows(2).all(|w| w[0].step <= w[1].step)
    }

    /// Sorts by step, keeping the read order among equal steps.
    pub fn sort_by_step(&mut self) {
        if !self.is_sorted_by_step() {
            self.points.sort_by_key(|p| p.step);
        }
    }

    /// The values, smoothed with [`ema_smooth`].
    pub fn smoothed(&self, weight: f64) -> Vec<f64> {
        let values: Vec<f64> = self.points.iter().map(|p| p.value).collect();
        ema_smooth(&values, weight)
    }
}

/// Where a log's steps went back (a run resumed from a checkpoint), in one file or run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resumed {
    /// How many times a series' step went back.
    pub times: u64,
    /// Points dropped because a later point had a smaller step.
    pub dropped: u64,
    /// The step it went back to, the last time.
    pub to_step: Option<i64>,
}

impl Resumed {
    /// Counts one appended point that dropped `dropped` earlier ones.
    pub fn count(&mut self, dropped: usize, step: i64) {
        if dropped > 0 {
            self.times += 1;
            self.dropped += dropped as u64;
            self.to_step = Some(step);
        }
    }

    pub fn add(&mut self, other: &Resumed) {
        self.times += other.times;
        self.dropped += other.dropped;
        self.to_step = other.to_step.or(self.to_step);
    }

    pub fn is_empty(&self) -> bool {
        self.times == 0
    }
}

impl std::fmt::Display for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = self
            .to_step
            .map_or(String::new(), |s| format!(" (last to step {s})"));
        write!(
            f,
            "the step went back {} time(s){at}, as when training resumes from a checkpoint: {} earlier point(s) at or after that step dropped, as TensorBoard does",
            self.times, self.dropped
        )
    }
}

/// Exponential moving average with TensorBoard's debiasing (its "classic" smoothing, as in
/// the line chart's `classicSmoothing`):
///
/// - `weight` is clamped to `[0, 1]`; a non-finite weight counts as 0;
/// - a series whose values are all equal is returned unchanged;
/// - the average starts at 0 and each finite value `v` updates it to
///   `last * weight + (1 - weight) * v`; the output is `last / (1 - weight^n)`, `n` being the
///   number of finite values so far (with `weight == 1`, no debiasing, as TensorBoard does);
/// - a NaN or infinite value is passed through as is and does not touch the average.
pub fn ema_smooth(values: &[f64], weight: f64) -> Vec<f64> {
    let Some(&first) = values.first() else {
        return Vec::new();
    };
    // `==` on purpose: a NaN first value makes the series non-constant, as in TensorBoard.
    if values.iter().all(|&v| v == first) {
        return values.to_vec();
    }
    let mut ema = Ema::new(weight);
    values.iter().map(|&v| ema.next(v)).collect()
}

/// Incremental form of [`ema_smooth`] for live series: feed values one at a time. It differs
/// from the batch form only in not knowing whether the whole series will be constant; for a
/// constant series the debiased average equals the constant up to rounding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ema {
    weight: f64,
    last: f64,
    /// `weight` to the power of the number of finite values seen.
    weight_pow: f64,
}

impl Ema {
    pub fn new(weight: f64) -> Self {
        let weight = if weight.is_finite() {
            weight.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Ema {
            weight,
            last: 0.0,
            weight_pow: 1.0,
        }
    }

    /// The smoothed value after `value`.
    pub fn next(&mut self, value: f64) -> f64 {
        if !value.is_finite() {
            return value;
        }
        self.last = self.last * self.weight + (1.0 - self.weight) * value;
        // Once below 1e-20, `1 - weight_pow` is exactly 1: stop there, or the product would
        // sink into subnormals (and stick at the smallest one), which are slow to multiply.
        self.weight_pow = if self.weight_pow < 1e-20 {
            0.0
        } else {
            self.weight_pow * self.weight
        };
        let debias = if self.weight == 1.0 {
            1.0
        } else {
            1.0 - self.weight_pow
        };
        self.last / debias
    }
}

/// What the x axis shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XAxis {
    /// Training step.
    #[default]
    Step,
    /// Wall time, seconds since the Unix epoch.
    WallTime,
    /// Seconds since the first point with a wall time (per series).
    Relative,
}

impl XAxis {
    /// The label for this axis.
    pub fn label(self) -> &'static str {
        match self {
            XAxis::Step => "step",
            XAxis::WallTime => "wall time (s since epoch)",
            XAxis::Relative => "time since start (s)",
        }
    }
}

/// The x coordinates of `points` on `axis`. Wall-time axes give NaN for points without a wall
/// time; [`Relative`](XAxis::Relative) counts from the first point that has one.
pub fn x_values(points: &[Point], axis: XAxis) -> Vec<f64> {
    match axis {
        XAxis::Step => points.iter().map(|p| p.step as f64).collect(),
        XAxis::WallTime => points.iter().map(|p| p.wall_time).collect(),
        XAxis::Relative => {
            let start = points
                .iter()
                .map(|p| p.wall_time)
                .find(|t| t.is_finite())
                .unwrap_or(f64::NAN);
            points.iter().map(|p| p.wall_time - start).collect()
        }
    }
}

/// How the y axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YScale {
    #[default]
    Linear,
    /// Base-10 logarithmic; values that are not positive are left out.
    Log,
}

/// Downsamples `(x, y)` (x ascending) for display into at most `4 * buckets` points: the x
/// range is cut into `buckets` equal slices and each keeps its first, lowest, highest and last
/// point, in x order. Every spike survives, and a line through the result covers exactly the
/// pixels the full series would at that width. Non-finite points are dropped. Two passes, no
/// allocation beyond the output.
pub fn downsample_minmax(x: &[f64], y: &[f64], buckets: usize) -> Vec<(f64, f64)> {
    let n = x.len().min(y.len());
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (&xi, &yi) in x[..n].iter().zip(&y[..n]) {
        if xi.is_finite() && yi.is_finite() {
            lo = lo.min(xi);
            hi = hi.max(xi);
        }
    }
    let mut agg = MinMaxBuckets::new(lo, hi, buckets);
    for (&xi, &yi) in x[..n].iter().zip(&y[..n]) {
        agg.push(xi, yi);
    }
    agg.finish()
}

/// First, min, max and last points as (arrival order, x, y).
type Extremes = [(u64, f64, f64); 4];

/// The streaming form of [`downsample_minmax`]: push points in ascending x within `[lo, hi]`,
/// one at a time (so a series can be smoothed, scaled and downsampled in a single pass).
#[derive(Debug, Clone)]
pub struct MinMaxBuckets {
    lo: f64,
    scale: f64,
    buckets: usize,
    out: Vec<(f64, f64)>,
    /// Bucket index and its first, min, max and last points with their arrival order.
    current: Option<(usize, Extremes)>,
    seen: u64,
}

impl MinMaxBuckets {
    pub fn new(lo: f64, hi: f64, buckets: usize) -> Self {
        let buckets = buckets.max(1);
        let width = (hi - lo) / buckets as f64;
        MinMaxBuckets {
            lo,
            scale: if width > 0.0 && width.is_finite() {
                1.0 / width
            } else {
                0.0
            },
            buckets,
            out: Vec::with_capacity(4 * buckets),
            current: None,
            seen: 0,
        }
    }

    /// Adds a point; non-finite points are dropped.
    #[inline]
    pub fn push(&mut self, x: f64, y: f64) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        let b = (((x - self.lo) * self.scale) as usize).min(self.buckets - 1);
        let i = self.seen;
        self.seen += 1;
        match &mut self.current {
            Some((cb, k)) if *cb == b => {
                if y < k[1].2 {
                    k[1] = (i, x, y);
                }
                if y > k[2].2 {
                    k[2] = (i, x, y);
                }
                k[3] = (i, x, y);
            }
            _ => {
                self.flush();
                self.current = Some((b, [(i, x, y); 4]));
            }
        }
    }

    fn flush(&mut self) {
        if let Some((_, mut k)) = self.current.take() {
            k.sort_unstable_by_key(|p| p.0);
            let mut prev = u64::MAX;
            for (i, x, y) in k {
                if i != prev {
                    self.out.push((x, y));
                    prev = i;
                }
            }
        }
    }

    /// The downsampled points, in x order.
    pub fn finish(mut self) -> Vec<(f64, f64)> {
        self.flush();
        self.out
    }
}

/// A series kept ready for repeated drawing (a dashboard redrawing every frame): its points
/// are summarised per block of [`DisplaySeries::BLOCK`] as the first, lowest, highest and last
/// raw and smoothed values, updated as points are appended. Downsampling then reads blocks, not
/// points: a 10-million-point series downsamples as fast as a 40,000-point one.
///
/// Blocks assume x ascends (steps, or wall time without restarts); when it does not,
/// [`downsample`](DisplaySeries::downsample) returns `None` and the caller falls back to the
/// points.
#[derive(Debug, Clone)]
pub struct DisplaySeries {
    x_axis: XAxis,
    weight: f64,
    ema: Ema,
    /// First wall time, for [`XAxis::Relative`].
    start: f64,
    raw: Vec<Block>,
    smooth: Vec<Block>,
    len: usize,
    last_x: f64,
    ascending: bool,
    lo: f64,
    hi: f64,
}

/// First, min, max and last of a block, as (order, x, y).
#[derive(Debug, Clone, Copy)]
struct Block {
    k: Extremes,
    count: usize,
}

impl Block {
    fn push(blocks: &mut Vec<Block>, index: u64, x: f64, y: f64, fill: usize) {
        match blocks.last_mut() {
            Some(b) if b.count < fill => {
                b.count += 1;
                if !(x.is_finite() && y.is_finite()) {
                    return;
                }
                if b.k[0].0 == u64::MAX {
                    b.k = [(index, x, y); 4];
                    return;
                }
                if y < b.k[1].2 {
                    b.k[1] = (index, x, y);
                }
                if y > b.k[2].2 {
                    b.k[2] = (index, x, y);
                }
                b.k[3] = (index, x, y);
            }
            _ => {
                let k = if x.is_finite() && y.is_finite() {
                    [(index, x, y); 4]
                } else {
                    [(u64::MAX, f64::NAN, f64::NAN); 4]
                };
                blocks.push(Block { k, count: 1 });
            }
        }
    }
}

impl DisplaySeries {
    /// Points per block.
    pub const BLOCK: usize = 256;

    /// An empty display series for this x axis and smoothing weight (0: no smoothed line).
    pub fn new(x_axis: XAxis, smoothing: f64) -> Self {
        DisplaySeries {
            x_axis,
            weight: smoothing,
            ema: Ema::new(smoothing),
            start: f64::NAN,
            raw: Vec::new(),
            smooth: Vec::new(),
            len: 0,
            last_x: f64::NEG_INFINITY,
            ascending: true,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
        }
    }

    /// A display series holding `points`.
    pub fn from_points(points: &[Point], x_axis: XAxis, smoothing: f64) -> Self {
        let mut d = DisplaySeries::new(x_axis, smoothing);
        d.extend(points);
        d
    }

    pub fn x_axis(&self) -> XAxis {
        self.x_axis
    }

    pub fn smoothing(&self) -> f64 {
        self.weight
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends points (read order).
    pub fn extend(&mut self, points: &[Point]) {
        for p in points {
            self.push(*p);
        }
    }

    /// Appends one point.
    pub fn push(&mut self, p: Point) {
        if self.x_axis == XAxis::Relative && !self.start.is_finite() && p.wall_time.is_finite() {
            self.start = p.wall_time;
        }
        let x = match self.x_axis {
            XAxis::Step => p.step as f64,
            XAxis::WallTime => p.wall_time,
            XAxis::Relative => p.wall_time - self.start,
        };
        if x.is_finite() {
            self.ascending &= x >= self.last_x;
            self.last_x = x;
            self.lo = self.lo.min(x);
            self.hi = self.hi.max(x);
        }
        let i = self.len as u64;
        Block::push(&mut self.raw, i, x, p.value, Self::BLOCK);
        if self.weight > 0.0 {
            let s = self.ema.next(p.value);
            Block::push(&mut self.smooth, i, x, s, Self::BLOCK);
        }
        self.len += 1;
    }

    /// The raw and (with smoothing) smoothed lines, each downsampled to at most about
    /// `4 * buckets` points as [`downsample_minmax`] would, with `y_of` applied to values (the
    /// y scale). `None` when x did not ascend, or when the series is shorter than
    /// `BLOCK * buckets` points (a block would span several columns): downsample the points
    /// then, which is as fast at that size.
    #[allow(clippy::type_complexity)]
    pub fn downsample(
        &self,
        buckets: usize,
        y_of: impl Fn(f64) -> f64,
    ) -> Option<(Vec<(f64, f64)>, Option<Vec<(f64, f64)>>)> {
        // A block must not span more than one column, or detail would be lost; shorter
        // series are cheap to downsample from their points.
        if !self.ascending || self.len < Self::BLOCK * buckets.max(1) {
            return None;
        }
        let lines = |blocks: &[Block]| {
            let mut agg = MinMaxBuckets::new(self.lo, self.hi, buckets);
            for b in blocks {
                let mut k = b.k;
                k.sort_unstable_by_key(|p| p.0);
                let mut prev = u64::MAX;
                for (i, x, y) in k {
                    if i != prev && i != u64::MAX {
                        agg.push(x, y_of(y));
                        prev = i;
                    }
                }
            }
            agg.finish()
        };
        let smooth = (self.weight > 0.0).then(|| lines(&self.smooth));
        Some((lines(&self.raw), smooth))
    }
}

/// Largest-Triangle-Three-Buckets downsampling of `(x, y)` (x ascending) to at most
/// `threshold` points, keeping the first and last. Smoother-looking than
/// [`downsample_minmax`] at low counts, but it may miss a lone spike. Non-finite points are
/// dropped first.
pub fn lttb(x: &[f64], y: &[f64], threshold: usize) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64)> = x
        .iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (a, b))
        .collect();
    let n = pts.len();
    if threshold >= n || threshold < 3 {
        return if threshold < 3 && n > threshold {
            pts.into_iter().take(threshold).collect()
        } else {
            pts
        };
    }
    let mut out = Vec::with_capacity(threshold);
    out.push(pts[0]);
    let every = (n - 2) as f64 / (threshold - 2) as f64;
    let mut a = 0usize;
    for i in 0..threshold - 2 {
        let start = (i as f64 * every) as usize + 1;
        let end = (((i + 1) as f64 * every) as usize + 1).min(n - 1);
        let next_start = end;
        let next_end = ((((i + 2) as f64) * every) as usize + 1).min(n);
        let (mut ax, mut ay, mut cnt) = (0.0, 0.0, 0.0);
        for p in &pts[next_start..next_end.max(next_start + 1).min(n)] {
            ax += p.0;
            ay += p.1;
            cnt += 1.0;
        }
        let (avg_x, avg_y) = (ax / cnt, ay / cnt);
        let (px, py) = pts[a];
        let mut best = start;
        let mut best_area = -1.0;
        for (j, p) in pts.iter().enumerate().take(end).skip(start) {
            let area = ((px - avg_x) * (p.1 - py) - (px - p.0) * (avg_y - py)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        out.push(pts[best]);
        a = best;
    }
    out.push(pts[n - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_matches_tensorboard() {
        // Reference values from TensorBoard's formula, computed by hand.
        let v = [1.0, 2.0, 3.0];
        let s = ema_smooth(&v, 0.5);
        assert!((s[0] - 1.0).abs() < 1e-12);
        // last = 0.5*0.5 + 0.5*2 = 1.25; debias 1 - 0.25 = 0.75 -> 5/3
        assert!((s[1] - 5.0 / 3.0).abs() < 1e-12);
        // last = 1.25*0.5 + 1.5 = 2.125; debias 0.875 -> 2.428571...
        assert!((s[2] - 2.125 / 0.875).abs() < 1e-12);
    }

    #[test]
    fn ema_long_series_matches_pow() {
        let mut ema = Ema::new(0.99);
        let mut last = 0.0;
        for n in 1..=100_000 {
            let v = (n as f64).sin();
            last = last * 0.99 + 0.01 * v;
            let want = last / (1.0 - 0.99f64.powi(n));
            let got = ema.next(v);
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{n}: {got} {want}"
            );
        }
    }

    #[test]
    fn ema_passes_non_finite_through() {
        let s = ema_smooth(&[1.0, f64::NAN, 3.0, f64::INFINITY], 0.5);
        assert!(s[1].is_nan());
        assert_eq!(s[3], f64::INFINITY);
        // NaN did not count: the second finite value is debiased with n = 2.
        assert!((s[2] - (0.25 + 1.5) / 0.75).abs() < 1e-12);
    }

    #[test]
    fn ema_constant_and_edges() {
        assert_eq!(ema_smooth(&[2.5; 4], 0.9), vec![2.5; 4]);
        assert_eq!(ema_smooth(&[1.0, 2.0], 0.0), vec![1.0, 2.0]);
        assert_eq!(ema_smooth(&[1.0, 2.0], f64::NAN), vec![1.0, 2.0]);
        assert_eq!(ema_smooth(&[1.0, 2.0], 7.0), vec![0.0, 0.0]);
        assert!(ema_smooth(&[], 0.5).is_empty());
    }

    #[test]
    fn minmax_keeps_spikes() {
        let n = 100_000;
        let x: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let mut y: Vec<f64> = (0..n).map(|i| (i as f64 * 0.01).sin()).collect();
        y[54_321] = 100.0;
        y[7] = -100.0;
        let d = downsample_minmax(&x, &y, 200);
        assert!(d.len() <= 800);
        assert!(d.contains(&(54_321.0, 100.0)));
        assert!(d.contains(&(7.0, -100.0)));
        assert_eq!(d.first().unwrap().0, 0.0);
        assert_eq!(d.last().unwrap().0, (n - 1) as f64);
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn minmax_streaming_equals_batch_and_keeps_first_and_last() {
        let x: Vec<f64> = (0..10_000).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| (v * 0.37).sin()).collect();
        let d = downsample_minmax(&x, &y, 37);
        assert_eq!(d[0], (0.0, y[0]));
        assert_eq!(*d.last().unwrap(), (9999.0, y[9999]));
        let mut agg = MinMaxBuckets::new(0.0, 9999.0, 37);
        x.iter().zip(&y).for_each(|(&a, &b)| agg.push(a, b));
        assert_eq!(agg.finish(), d);
    }

    #[test]
    fn display_series_matches_direct_downsampling() {
        let n = 1_000_000;
        let pts: Vec<Point> = (0..n)
            .map(|i| {
                Point::new(
                    i,
                    f64::NAN,
                    ((i * 7919) % 1000) as f64 + (i as f64 * 1e-4).sin(),
                )
            })
            .collect();
        let mut spiky = pts.clone();
        spiky[123_457].value = 5000.0;
        let d = DisplaySeries::from_points(&spiky, XAxis::Step, 0.9);
        let (raw, smooth) = d.downsample(500, |v| v).unwrap();
        let x: Vec<f64> = spiky.iter().map(|p| p.step as f64).collect();
        let y: Vec<f64> = spiky.iter().map(|p| p.value).collect();
        let direct = downsample_minmax(&x, &y, 500);
        assert!(raw.contains(&(123_457.0, 5000.0)));
        assert_eq!(raw.first(), direct.first());
        assert_eq!(raw.last(), direct.last());
        // Same extremes per bucket: the overall range agrees exactly.
        let range = |v: &[(f64, f64)]| {
            v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
                (a.0.min(p.1), a.1.max(p.1))
            })
        };
        assert_eq!(range(&raw), range(&direct));
        assert!(raw.len() <= 4 * 500 && smooth.unwrap().len() <= 4 * 500);
        assert!(
            d.downsample(n as usize / 100, |v| v).is_none(),
            "too short for blocks"
        );
        let mut back = DisplaySeries::new(XAxis::Step, 0.0);
        back.extend(&[Point::new(5, f64::NAN, 1.0), Point::new(2, f64::NAN, 1.0)]);
        assert!(back.downsample(10, |v| v).is_none());
    }

    #[test]
    fn minmax_small_input_unchanged() {
        let d = downsample_minmax(&[0.0, 1.0, f64::NAN], &[1.0, 2.0, 3.0], 10);
        assert_eq!(d, vec![(0.0, 1.0), (1.0, 2.0)]);
    }

    #[test]
    fn lttb_bounds() {
        let x: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let y: Vec<f64> = x.iter().map(|v| (v * 0.1).cos()).collect();
        let d = lttb(&x, &y, 50);
        assert_eq!(d.len(), 50);
        assert_eq!(d[0], (0.0, 1.0));
        assert_eq!(d[49].0, 999.0);
    }

    #[test]
    fn relative_axis() {
        let pts = [
            Point::new(0, f64::NAN, 1.0),
            Point::new(1, 100.0, 1.0),
            Point::new(2, 105.0, 1.0),
        ];
        let x = x_values(&pts, XAxis::Relative);
        assert!(x[0].is_nan());
        assert_eq!(&x[1..], &[0.0, 5.0]);
    }

    #[test]
    fn summary_skips_non_finite() {
        let s = Series {
            points: vec![
                Point::new(0, f64::NAN, 3.0),
                Point::new(1, f64::NAN, f64::NAN),
                Point::new(2, f64::NAN, 1.0),
                Point::new(3, f64::NAN, 2.0),
            ],
        };
        let sum = s.summary().unwrap();
        assert_eq!(sum.len, 4);
        assert_eq!(sum.min.unwrap().step, 2);
        assert_eq!(sum.max.unwrap().step, 0);
        assert_eq!(sum.last.step, 3);
        assert_eq!(sum.non_finite, 1);
    }
}
