//! TensorRT optimisation profiles: the min/opt/max shape of every dynamic input, derived from what the
//! experiment will feed, so that a sweep builds each engine once instead of once per new batch size.

use sha2::{Digest, Sha256};

use super::roles::{Dim, TensorSpec};

/// What the caller will feed: batch sizes and, for dynamic dimensions, one sample's C, H, W (rank-4 inputs;
/// one frame's, with the frames, for a video U-Net's rank-5 sample [B, C, F, H, W]) and the text sequence length
/// (dimension 1 of rank-2 and rank-3 inputs: token ids, hidden states, masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeHints {
    /// Smallest, most common and largest batch of one call.
    pub batch: [usize; 3],
    pub sample: Option<[usize; 3]>,
    /// Frames per clip, for a video U-Net.
    pub frames: Option<usize>,
    /// Shortest, most common and longest text (Sana's negative prompt is shorter than its prompts).
    pub sequence: Option<[usize; 3]>,
}

/// The three shape lists in TensorRT's option syntax (`name:1x4x64x64,other:1x77x768`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeProfile {
    pub min: String,
    pub opt: String,
    pub max: String,
}

impl ShapeProfile {
    /// The profile for `inputs`, or why one cannot be made. `None`: every input is static (nothing to say).
    pub fn derive(inputs: &[TensorSpec], hints: &ShapeHints) -> Result<Option<Self>, String> {
        let mut lists: [Vec<String>; 3] = Default::default();
        // A video U-Net takes its text states once per frame: their batch is the clips' times the frames.
        let video = inputs.iter().any(|s| s.is_tensor && s.rank() == 5);
        for input in inputs.iter().filter(|s| s.is_tensor) {
            if input.dims.iter().all(|d| matches!(d, Dim::Fixed(_))) {
                continue;
            }
            if input.name.contains([':', ',']) {
                return Err(format!(
                    "input '{}' has ':' or ',' in its name, which TensorRT's profile syntax cannot carry",
                    input.name
                ));
            }
            for (k, list) in lists.iter_mut().enumerate() {
                let mut dims = (0..input.rank())
                    .map(|axis| dim_size(input, axis, hints, k))
                    .collect::<Result<Vec<_>, _>>()?;
                if video && input.rank() == 3 && matches!(input.dims[0], Dim::Symbolic(_)) {
                    dims[0] *= hints.frames.unwrap_or(1);
                }
                let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
                list.push(format!("{}:{}", input.name, dims.join("x")));
            }
        }
        if lists[0].is_empty() {
            return Ok(None);
        }
        let [min, opt, max] = lists.map(|l| l.join(","));
        Ok(Some(Self { min, opt, max }))
    }

    /// A short name for the engine cache folder: engines built for one profile never replace another's.
    pub fn key(&self) -> String {
        let digest = Sha256::digest(format!("{}|{}|{}", self.min, self.opt, self.max));
        super::fingerprint::hex(&digest[..6])
    }
}

/// The size of `input`'s dimension `axis` in profile `k` (0 min, 1 opt, 2 max).
fn dim_size(
    input: &TensorSpec,
    axis: usize,
    hints: &ShapeHints,
    k: usize,
) -> Result<usize, String> {
    if let Dim::Fixed(n) = input.dims[axis] {
        return Ok(n);
    }
    let unknown = |what: &str| {
        format!(
            "dimension {axis} of input {} is dynamic and the experiment does not say its {what}",
            input.describe()
        )
    };
    match (input.rank(), axis) {
        (_, 0) => Ok(hints.batch[k]),
        (4, 1..=3) => hints
            .sample
            .map(|s| s[axis - 1])
            .ok_or_else(|| unknown("sample size")),
        (5, 2) => hints.frames.ok_or_else(|| unknown("frame count")),
        (5, 1 | 3 | 4) => hints
            .sample
            // [B, C, F, H, W]: C, H and W from one frame's C, H, W.
            .map(|[c, h, w]| [c, 0, 0, h, w][axis])
            .ok_or_else(|| unknown("sample size")),
        (2 | 3, 1) => hints
            .sequence
            .map(|s| s[k])
            .ok_or_else(|| unknown("sequence length")),
        _ => Err(unknown("size")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::roles::ElemType;

    fn sym(s: &str) -> Dim {
        Dim::Symbolic(s.into())
    }

    fn unet_inputs() -> Vec<TensorSpec> {
        vec![
            TensorSpec::tensor(
                "sample",
                ElemType::F32,
                vec![sym("batch"), Dim::Fixed(4), sym("height"), sym("width")],
            ),
            TensorSpec::tensor("timestep", ElemType::F32, vec![]),
            TensorSpec::tensor(
                "encoder_hidden_states",
                ElemType::F32,
                vec![sym("batch"), sym("sequence"), Dim::Fixed(768)],
            ),
            TensorSpec::tensor("time_ids", ElemType::F32, vec![sym("batch"), Dim::Fixed(6)]),
        ]
    }

    const HINTS: ShapeHints = ShapeHints {
        batch: [1, 8, 16],
        sample: Some([4, 64, 64]),
        frames: None,
        sequence: Some([77; 3]),
    };

    #[test]
    fn a_latent_unet_profile_names_every_dynamic_input() {
        let p = ShapeProfile::derive(&unet_inputs(), &HINTS)
            .unwrap()
            .unwrap();
        assert_eq!(
            p.min,
            "sample:1x4x64x64,encoder_hidden_states:1x77x768,time_ids:1x6"
        );
        assert_eq!(
            p.opt,
            "sample:8x4x64x64,encoder_hidden_states:8x77x768,time_ids:8x6"
        );
        assert_eq!(
            p.max,
            "sample:16x4x64x64,encoder_hidden_states:16x77x768,time_ids:16x6"
        );
    }

    #[test]
    fn profiles_differ_in_key_when_shapes_differ() {
        let a = ShapeProfile::derive(&unet_inputs(), &HINTS)
            .unwrap()
            .unwrap();
        let bigger = ShapeHints {
            sample: Some([4, 128, 128]),
            ..HINTS
        };
        let b = ShapeProfile::derive(&unet_inputs(), &bigger)
            .unwrap()
            .unwrap();
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), a.clone().key());
        assert_eq!(a.key().len(), 12);
    }

    #[test]
    fn a_static_model_needs_no_profile() {
        let fixed = vec![TensorSpec::tensor(
            "image",
            ElemType::F32,
            vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(16), Dim::Fixed(16)],
        )];
        assert_eq!(ShapeProfile::derive(&fixed, &HINTS).unwrap(), None);
    }

    #[test]
    fn an_unknown_size_is_named() {
        let video = ShapeHints {
            frames: Some(16),
            ..HINTS
        };
        let mut inputs = unet_inputs();
        inputs[0] = TensorSpec::tensor(
            "sample",
            ElemType::F32,
            vec![
                sym("batch"),
                Dim::Fixed(4),
                sym("frames"),
                sym("height"),
                sym("width"),
            ],
        );
        let profile = ShapeProfile::derive(&inputs[..3], &video).unwrap().unwrap();
        assert_eq!(
            profile.opt, "sample:8x4x16x64x64,encoder_hidden_states:128x77x768",
            "a video U-Net's text states come once per frame"
        );
        let no_sample = ShapeHints {
            sample: None,
            ..HINTS
        };
        let err = ShapeProfile::derive(&unet_inputs(), &no_sample).unwrap_err();
        assert!(
            err.contains("'sample'") && err.contains("sample size"),
            "{err}"
        );
    }
}
