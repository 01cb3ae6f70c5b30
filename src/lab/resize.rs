//! Images to the shape a feature network takes: channels matched (RGB to grey as the mean, grey to RGB
//! repeated) and sides resampled bilinearly with half-pixel centres (torch's `interpolate(...,
//! mode="bilinear", align_corners=False)`), averaging whole blocks first when shrinking by an integer factor
//! so a 64² image does not alias down to 16².

/// `images` (items of `from`, C × H × W) as items of `to`.
pub fn fit(images: &[f32], from: [usize; 3], to: [usize; 3]) -> Vec<f32> {
    if from == to {
        return images.to_vec();
    }
    let item = from.iter().product::<usize>().max(1);
    let mut out = Vec::with_capacity(images.len() / item * to.iter().product::<usize>());
    for image in images.chunks(item) {
        let channels = match_channels(image, from, to[0]);
        let mut shape = [to[0], from[1], from[2]];
        let mut plane_set = channels;
        let factor = (from[1] / to[1].max(1)).min(from[2] / to[2].max(1));
        if factor > 1 && from[1].is_multiple_of(factor) && from[2].is_multiple_of(factor) {
            plane_set = block_mean(&plane_set, shape, factor);
            shape = [shape[0], shape[1] / factor, shape[2] / factor];
        }
        out.extend(bilinear(&plane_set, shape, [to[1], to[2]]));
    }
    out
}

fn match_channels(image: &[f32], from: [usize; 3], channels: usize) -> Vec<f32> {
    let plane = from[1] * from[2];
    let channel = |c: usize| &image[c * plane..(c + 1) * plane];
    match (from[0], channels) {
        (a, b) if a == b => image.to_vec(),
        (_, 1) => (0..plane)
            .map(|p| (0..from[0]).map(|c| channel(c)[p]).sum::<f32>() / from[0] as f32)
            .collect(),
        (1, n) => channel(0).repeat(n),
        (_, n) => (0..n)
            .flat_map(|c| channel(c.min(from[0] - 1)).to_vec())
            .collect(),
    }
}

fn block_mean(planes: &[f32], [c, h, w]: [usize; 3], k: usize) -> Vec<f32> {
    let (oh, ow) = (h / k, w / k);
    let mut out = vec![0.0; c * oh * ow];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out[ch * oh * ow + (y / k) * ow + x / k] += planes[ch * h * w + y * w + x];
            }
        }
    }
    let n = (k * k) as f32;
    out.iter_mut().for_each(|v| *v /= n);
    out
}

fn bilinear(planes: &[f32], [c, h, w]: [usize; 3], [oh, ow]: [usize; 2]) -> Vec<f32> {
    if (h, w) == (oh, ow) {
        return planes.to_vec();
    }
    let source = |o: usize, out_len: usize, len: usize| {
        let x = ((o as f32 + 0.5) * len as f32 / out_len as f32 - 0.5).max(0.0);
        let i = (x.floor() as usize).min(len - 1);
        (i, (i + 1).min(len - 1), x - i as f32)
    };
    let mut out = Vec::with_capacity(c * oh * ow);
    for ch in 0..c {
        let plane = &planes[ch * h * w..(ch + 1) * h * w];
        for y in 0..oh {
            let (y0, y1, fy) = source(y, oh, h);
            for x in 0..ow {
                let (x0, x1, fx) = source(x, ow, w);
                let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
                let bottom = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn rgb_to_grey_and_shrinking_average_blocks() {
        // A 3×4×4 image whose channels are 0, 0.3 and 0.6 everywhere, and a bright 2×2 corner in channel 0.
        let mut image = vec![0.0; 16];
        image.extend(vec![0.3; 16]);
        image.extend(vec![0.6; 16]);
        for (y, x) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            image[y * 4 + x] = 0.9;
        }
        let out = fit(&image, [3, 4, 4], [1, 2, 2]);
        assert_eq!(out.len(), 4);
        assert!((out[0] - 0.6).abs() < 1e-6, "{out:?}");
        assert!((out[3] - 0.3).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn grey_to_rgb_and_growing_interpolate() {
        let out = fit(&[0.0, 1.0], [1, 1, 2], [3, 1, 4]);
        assert_eq!(out.len(), 12);
        assert_eq!(&out[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&out[..4], &out[8..]);
        assert_eq!(fit(&[0.5; 4], [1, 2, 2], [1, 2, 2]), vec![0.5; 4]);
    }
}
