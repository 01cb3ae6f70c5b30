//! Cheap previews of latent x0: the per-family linear map from latents to RGB that web UIs use for
//! their "approx cheap" previews (AUTOMATIC1111's `sd_samplers_common`, ComfyUI's `latent_formats`), so a
//! live preview never costs a VAE decode.

use crate::engine::pipeline_folder::Family;

/// A linear map from latent channels to RGB in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct LatentPreview {
    /// `factors[c]` is latent channel c's contribution to R, G, B.
    factors: Vec<[f32; 3]>,
    bias: [f32; 3],
}

/// Stable Diffusion 1.x/2.x's factors (ComfyUI's `SD15.latent_rgb_factors`).
const SD15: [[f32; 3]; 4] = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
];

/// SDXL's factors and bias (ComfyUI's `SDXL.latent_rgb_factors`).
const SDXL: [[f32; 3]; 4] = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
];
const SDXL_BIAS: [f32; 3] = [0.1084, -0.0175, -0.0011];

/// SD3's 16-channel factors and bias (ComfyUI's `SD3.latent_rgb_factors`).
const SD3: [[f32; 3]; 16] = [
    [-0.0922, -0.0175, 0.0749],
    [0.0311, 0.0633, 0.0954],
    [0.1994, 0.0927, 0.0458],
    [0.0856, 0.0339, 0.0902],
    [0.0587, 0.0272, -0.0496],
    [-0.0006, 0.1104, 0.0309],
    [0.0978, 0.0306, 0.0427],
    [-0.0042, 0.1038, 0.1358],
    [-0.0194, 0.0020, 0.0669],
    [-0.0488, 0.0130, -0.0268],
    [0.0922, 0.0988, 0.0951],
    [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895],
    [-0.0069, -0.0030, -0.0810],
    [-0.0596, -0.0465, -0.0293],
    [-0.1448, -0.1463, -0.1189],
];
const SD3_BIAS: [f32; 3] = [0.2394, 0.2135, 0.1925];

/// FLUX's 16-channel factors and bias (ComfyUI's `Flux.latent_rgb_factors`).
const FLUX: [[f32; 3]; 16] = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
];
const FLUX_BIAS: [f32; 3] = [-0.0329, -0.0718, -0.0851];

impl LatentPreview {
    /// The map for a pipeline family's latents (4 channels for SD and SDXL, 16 for SD3 and FLUX); `None` for latents
    /// it does not know (Sana's).
    pub fn for_family(family: Family, channels: usize) -> Option<Self> {
        let (factors, bias): (&[[f32; 3]], [f32; 3]) = match family {
            Family::StableDiffusionXl => (&SDXL, SDXL_BIAS),
            Family::StableDiffusion3 => (&SD3, SD3_BIAS),
            Family::Flux => (&FLUX, FLUX_BIAS),
            Family::StableDiffusion | Family::UnetOnly => (&SD15, [0.0; 3]),
            // No published latent→RGB map for Sana's DC-AE: its previews are decoded.
            Family::Sana => return None,
        };
        (factors.len() == channels).then(|| Self {
            factors: factors.to_vec(),
            bias,
        })
    }

    /// RGB previews (3 × h × w each, in [-1, 1]) of latents of shape `shape` (C × h × w each), each pixel
    /// repeated `scale` times in both directions so they come out at the decoded image's size.
    pub fn rgb(&self, latents: &[f32], shape: [usize; 3], scale: usize) -> Vec<f32> {
        let [c, h, w] = shape;
        let (oh, ow) = (h * scale, w * scale);
        let mut out = Vec::with_capacity(latents.len() / c.max(1) * 3 * scale * scale);
        for item in latents.chunks(c * h * w) {
            for rgb in 0..3 {
                for y in 0..oh {
                    for x in 0..ow {
                        let p = (y / scale) * w + x / scale;
                        let v = (0..c).fold(self.bias[rgb], |acc, ch| {
                            acc + item[ch * h * w + p] * self.factors[ch][rgb]
                        });
                        out.push(v.clamp(-1.0, 1.0));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::LatentPreview;
    use crate::engine::pipeline_folder::Family;

    #[test]
    fn maps_channels_to_rgb_and_upsamples() {
        let map = LatentPreview::for_family(Family::StableDiffusion, 4).unwrap();
        // One 1×1 latent with only channel 0 set: RGB is channel 0's factors.
        let rgb = map.rgb(&[1.0, 0.0, 0.0, 0.0], [4, 1, 1], 2);
        assert_eq!(rgb.len(), 12);
        assert_eq!(&rgb[..4], &[0.3512; 4]);
        assert_eq!(&rgb[8..], &[0.3227; 4]);
        let xl = LatentPreview::for_family(Family::StableDiffusionXl, 4).unwrap();
        assert_eq!(
            xl.rgb(&[0.0; 4], [4, 1, 1], 1),
            vec![0.1084, -0.0175, -0.0011]
        );
        assert!(LatentPreview::for_family(Family::StableDiffusion, 16).is_none());
        let sd3 = LatentPreview::for_family(Family::StableDiffusion3, 16).unwrap();
        assert_eq!(
            sd3.rgb(&[0.0; 16], [16, 1, 1], 1),
            vec![0.2394, 0.2135, 0.1925]
        );
    }
}
