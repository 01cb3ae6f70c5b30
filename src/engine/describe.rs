//! What any ONNX file is to difflab, for `difflab info` on models that are not denoisers: its inputs and
//! outputs and the job difflab would give it (VAE decoder, text encoder, feature network).

use std::fmt::Write;
use std::path::Path;

use super::error::EngineError;
use super::roles::{ElemType, TensorSpec};
use super::session::{OnnxModel, OnnxOptions};

/// The job difflab would give a model with these inputs and outputs, in words; `None` when it has none.
pub fn use_of(inputs: &[TensorSpec], outputs: &[TensorSpec]) -> Option<&'static str> {
    let names = |specs: &[TensorSpec]| specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let (ins, outs) = (names(inputs), names(outputs));
    let has = |list: &[String], name: &str| list.iter().any(|n| n == name);
    let image_in = matches!(inputs, [one] if one.rank() == 4 && one.elem.is_float());
    let job = if has(&ins, "img_ids") && has(&ins, "txt_ids") {
        "a FLUX transformer: difflab packs the latents 2×2 into its tokens, feeds the ids, the timestep / 1000 \
         and the embedded guidance"
    } else if has(&ins, "input_ids") {
        if has(&outs, "text_embeds") {
            "a text encoder with a projection (SDXL's text_encoder_2, SD3's CLIPs): prompts → hidden states and pooled text_embeds"
        } else if has(&outs, "pooler_output") {
            "a text encoder (FLUX's CLIP): prompts → its pooled output"
        } else if outputs.len() == 1 {
            "a text encoder (T5 for SD3 and FLUX, Gemma 2 for Sana): prompts → hidden states"
        } else {
            "a text encoder: prompts → hidden states (encoder_hidden_states for the U-Net)"
        }
    } else if image_in && has(&ins, "latent_sample") {
        "a VAE decoder: latents → images (used for finished samples of a latent model)"
    } else if image_in && has(&outs, "latent_parameters") {
        "a VAE encoder (images → latents); difflab's text-to-image runs do not use it"
    } else if image_in
        && outputs
            .iter()
            .any(|o| o.rank() == 2 && o.elem != ElemType::I64)
    {
        "a feature network for FID/KID ([quality] features): images → features"
    } else {
        return None;
    };
    Some(job)
}

/// Opens the model and writes its inputs, outputs, provider and use; also says whether difflab has a use
/// for it.
pub fn describe_onnx(path: &Path, options: &OnnxOptions) -> Result<(String, bool), EngineError> {
    let model = OnnxModel::open(path, options)?;
    let mut out = String::new();
    let _ = writeln!(out, "{}", path.display());
    let _ = writeln!(out, "  provider  {}", model.provider());
    for spec in model.inputs() {
        let _ = writeln!(out, "  input     {}", spec.describe());
    }
    for spec in model.outputs() {
        let _ = writeln!(out, "  output    {}", spec.describe());
    }
    let job = use_of(model.inputs(), model.outputs());
    let shown = job.unwrap_or("none: not a denoiser, VAE, text encoder or feature network");
    let _ = writeln!(out, "  use       {shown}");
    Ok((out, job.is_some()))
}
