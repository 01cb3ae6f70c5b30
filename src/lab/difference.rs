//! How one cell's sample differs from the baseline cell's on the same seed: the absolute difference,
//! averaged over channels, as a heat map (black, through purple and orange, to pale yellow at
//! [`FULL_SCALE`] and above).

/// The difference drawn in the brightest colour: half the data range [-1, 1].
pub const FULL_SCALE: f32 = 1.0;

/// The heat map's colours from no difference to [`FULL_SCALE`], as 8-bit RGB.
pub const STOPS: [[u8; 3]; 5] = [
    [0, 0, 4],
    [81, 18, 124],
    [183, 55, 121],
    [252, 137, 97],
    [252, 253, 191],
];

/// The colour of a difference `d` (0 to [`FULL_SCALE`], clipped).
pub fn colour(d: f32) -> [u8; 3] {
    let t = (d / FULL_SCALE).clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    std::array::from_fn(|k| {
        (f32::from(a[k]) + f * (f32::from(b[k]) - f32::from(a[k]))).round() as u8
    })
}

/// The heat map of |`sample` − `baseline`| (both C × H × W of `shape`) as an RGB sample (3 × H × W) in
/// model space [-1, 1], so it draws as any sample does. `None` when their sizes differ.
pub fn heat_map(sample: &[f32], baseline: &[f32], shape: [usize; 3]) -> Option<Vec<f32>> {
    let [c, h, w] = shape;
    let plane = h * w;
    if sample.len() != c * plane || baseline.len() != sample.len() || c == 0 {
        return None;
    }
    let mut out = vec![0.0; 3 * plane];
    for p in 0..plane {
        let d = (0..c)
            .map(|ch| (sample[ch * plane + p] - baseline[ch * plane + p]).abs())
            .sum::<f32>()
            / c as f32;
        for (k, v) in colour(d).iter().enumerate() {
            out[k * plane + p] = f32::from(*v) / 127.5 - 1.0;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_difference_is_black_and_full_scale_is_the_last_colour() {
        assert_eq!(colour(0.0), STOPS[0]);
        assert_eq!(colour(FULL_SCALE), STOPS[4]);
        assert_eq!(colour(5.0), STOPS[4]);
        assert_eq!(colour(FULL_SCALE / 4.0), STOPS[1]);
    }

    #[test]
    fn the_heat_map_is_rgb_in_model_space() {
        let a = [0.5f32, -0.5, 0.0, 1.0];
        let b = [0.5f32, 0.5, 0.0, -1.0];
        let heat = heat_map(&a, &b, [1, 2, 2]).expect("same size");
        assert_eq!(heat.len(), 12);
        // Pixel 0: no difference, black ([0, 0, 4] → about -1); pixel 3: 2.0, clipped to the top.
        assert!((heat[0] + 1.0).abs() < 1e-6 && (heat[8] - (4.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert!((heat[3] - (252.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert!(heat_map(&a, &b[..3], [1, 2, 2]).is_none());
    }
}
