//! Cheap checks of a model file before ONNX Runtime sees it.

use std::io::Read;
use std::path::Path;

use super::error::EngineError;

/// ModelProto's field numbers and wire types (0 varint, 2 length-delimited).
const MODEL_PROTO_FIELDS: [(u64, u64); 11] = [
    (1, 0),  // ir_version
    (2, 2),  // producer_name
    (3, 2),  // producer_version
    (4, 2),  // domain
    (5, 0),  // model_version
    (6, 2),  // doc_string
    (7, 2),  // graph
    (8, 2),  // opset_import
    (14, 2), // metadata_props
    (20, 2), // training_info
    (25, 2), // functions
];

/// Rejects what plainly is not an ONNX model before ONNX Runtime sees it, naming what it looks like instead.
pub(super) fn check_model_file(path: &Path) -> Result<(), EngineError> {
    let not_onnx = |reason: String| EngineError::NotOnnx {
        path: path.to_path_buf(),
        reason: format!(
            "{reason}; export the model with torch.onnx.export or `optimum-cli export onnx`"
        ),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(EngineError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(not_onnx(format!("it cannot be read ({e})"))),
    };
    if meta.is_dir() {
        return Err(not_onnx(
            "it is a folder (give the .onnx file in it)".into(),
        ));
    }
    if meta.len() == 0 {
        return Err(not_onnx("the file is empty".into()));
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| not_onnx(format!("it cannot be read ({e})")))?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        return Err(not_onnx(
            "it is a zip archive (a PyTorch checkpoint?)".into(),
        ));
    }
    if head.first() == Some(&0x80) {
        return Err(not_onnx(
            "it is a Python pickle (a PyTorch .pt/.ckpt?)".into(),
        ));
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Err(not_onnx("it is a safetensors file".into()));
    }
    if head.starts_with(b"\x89HDF") {
        return Err(not_onnx("it is an HDF5 file (Keras?)".into()));
    }
    let mut tag = 0u64;
    let mut valid = false;
    for (i, &b) in head.iter().take(2).enumerate() {
        tag |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            valid = true;
            break;
        }
    }
    let (field, wire) = (tag >> 3, tag & 7);
    if !valid || !MODEL_PROTO_FIELDS.contains(&(field, wire)) {
        let looks_like_text = head
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        let what = if looks_like_text {
            "it is a text file"
        } else {
            "it does not start like an ONNX ModelProto"
        };
        return Err(not_onnx(what.into()));
    }
    Ok(())
}
