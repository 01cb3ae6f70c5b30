//! Video clips as difflab holds them: one clip's [C, F, H, W] values as they lie in memory, which every view that
//! knows nothing of frames reads as one C × F·H × W image (the frames stacked top to bottom). Networks that work
//! frame by frame (a VAE, a feature network) take the frames as a batch of [C, H, W] images.

/// Clips [N, C, F, H, W] → frames [N·F, C, H, W]; `shape` is one clip's C, F·H, W.
pub fn clips_to_frames(clips: &[f32], [c, fh, w]: [usize; 3], frames: usize) -> Vec<f32> {
    swap_middle_axes(clips, c, frames, fh / frames * w)
}

/// Frames [N·F, C, H, W] → clips [N, C, F, H, W]; `shape` is one frame's C, H, W.
pub fn frames_to_clips(frames_data: &[f32], [c, h, w]: [usize; 3], frames: usize) -> Vec<f32> {
    swap_middle_axes(frames_data, frames, c, h * w)
}

/// One clip's C, F·H, W from one frame's C, H, W.
pub fn clip_shape([c, h, w]: [usize; 3], frames: usize) -> [usize; 3] {
    [c, frames * h, w]
}

/// One frame's C, H, W from one clip's C, F·H, W.
pub fn frame_shape([c, fh, w]: [usize; 3], frames: usize) -> [usize; 3] {
    [c, fh / frames.max(1), w]
}

/// Clips [N, C, F, H, W] → strips [N, C, H, F, W]: each clip's frames side by side, read as C × H × F·W
/// images; `frame` is one frame's C, H, W.
pub fn frames_side_by_side(clips: &[f32], [_, h, w]: [usize; 3], frames: usize) -> Vec<f32> {
    // Each channel plane [F, H, W] → [H, F, W].
    swap_middle_axes(clips, frames, h, w)
}

/// Frame `k` of one clip shown as a strip of its frames (C × H × F·W, see [`frames_side_by_side`]), with
/// its shape C × H × W.
pub fn strip_frame(
    strip: &[f32],
    [c, h, fw]: [usize; 3],
    frames: usize,
    k: usize,
) -> (Vec<f32>, [usize; 3]) {
    let w = fw / frames.max(1);
    let frame = (strip.chunks(fw))
        .flat_map(|row| row.get(k * w..(k + 1) * w).unwrap_or_default())
        .copied()
        .collect();
    (frame, [c, h, w])
}

/// One item's dims as files give them: [C, H, W], or a clip's [C, F, H, W].
pub fn item_dims(shape: [usize; 3], frames: usize) -> Vec<usize> {
    match frames {
        0 | 1 => shape.to_vec(),
        f => clip_dims(shape, f),
    }
}

/// One clip's [C, F, H, W] from its C, F·H, W.
pub fn clip_dims([c, fh, w]: [usize; 3], frames: usize) -> Vec<usize> {
    let f = frames.max(1);
    vec![c, f, fh / f, w]
}

/// [N, A, B, inner] → [N, B, A, inner].
fn swap_middle_axes(data: &[f32], a: usize, b: usize, inner: usize) -> Vec<f32> {
    let per = a * b * inner;
    let mut out = Vec::with_capacity(data.len());
    for item in data.chunks(per.max(1)) {
        for j in 0..b {
            for i in 0..a {
                let at = (i * b + j) * inner;
                out.extend_from_slice(&item[at..at + inner]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_splits_into_frames_and_back() {
        // Two clips of 2 channels × 3 frames × 1×2 pixels; value = clip·100 + c·10 + f.
        let shape = [2, 3, 2];
        let clips: Vec<f32> = (0..2)
            .flat_map(|n| {
                (0..2)
                    .flat_map(move |c| (0..3).flat_map(move |f| [(n * 100 + c * 10 + f) as f32; 2]))
            })
            .collect();
        let frames = clips_to_frames(&clips, shape, 3);
        // Frame 1 of clip 0: channel 0 then channel 1.
        assert_eq!(&frames[4..8], &[1.0, 1.0, 11.0, 11.0]);
        assert_eq!(&frames[12..16], &[100.0, 100.0, 110.0, 110.0]);
        assert_eq!(frames_to_clips(&frames, [2, 1, 2], 3), clips);
    }
}
