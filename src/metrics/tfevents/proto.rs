//! The parts of TensorFlow's `Event`, `Summary` and `TensorProto` messages that hold scalars and images.
//!
//! Field numbers follow `tensorflow/core/util/event.proto`, `summary.proto`, `tensor.proto`,
//! `tensor_shape.proto` and `types.proto`. Fields difflab does not use (graphs,
//! histograms, audio...) are not declared, so prost skips their bytes without decoding them.

/// `tensorflow.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `oneof what`: `file_version` (3).
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    /// `oneof what`: `summary` (5).
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// `oneof value`: `simple_value` (2).
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    /// `oneof value`: `image` (4), a legacy image summary (TF 1.x, tensorboardX, torch `add_image(s)`).
    #[prost(message, optional, tag = "4")]
    pub image: Option<Image>,
    /// `oneof value`: `tensor` (8).
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TensorProto>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

/// `tensorflow.Summary.Image`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grayscale, 2 grayscale and alpha, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

/// `tensorflow.SummaryMetadata.PluginData`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    /// The plugin's own message (the hparams plugin's `HParamsPluginData`).
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// `tensorboard.hparams.HParamsPluginData`: only its `session_start_info`, which holds a run's
/// hyperparameters (torch's `add_hparams`, accelerate's `init_trackers(config=...)`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
}

/// `tensorboard.hparams.SessionStartInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    #[prost(map = "string, message", tag = "1")]
    pub hparams: std::collections::HashMap<String, ProtoValue>,
}

/// `google.protobuf.Value`, the scalar kinds (a struct or list hyperparameter is shown as absent).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    #[prost(double, optional, tag = "2")]
    pub number_value: Option<f64>,
    #[prost(string, optional, tag = "3")]
    pub string_value: Option<String>,
    #[prost(bool, optional, tag = "4")]
    pub bool_value: Option<bool>,
}

/// `tensorflow.TensorProto`, numeric parts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    /// DT_STRING values: the images plugin's `[width, height, png, png, …]`.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    /// DT_HALF and DT_BFLOAT16 values, one 16-bit pattern per element.
    #[prost(int32, repeated, tag = "13")]
    pub half_val: Vec<i32>,
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<Dim>,
}

/// `tensorflow.TensorShapeProto.Dim`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dim {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

/// `tensorflow.DataType` values difflab reads as scalars.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const DOUBLE: i32 = 2;
    pub const INT32: i32 = 3;
    pub const INT64: i32 = 9;
    pub const BFLOAT16: i32 = 14;
    pub const HALF: i32 = 19;
    pub const STRING: i32 = 7;
}

/// The value of a rank-0 numeric tensor (or one with every dimension of size 1), or `None`.
///
/// Like TensorBoard's data server, the value may sit in the typed field (`float_val`,
/// `double_val`, `half_val`, ...) or in `tensor_content` (little-endian); unlike it, double,
/// half, bfloat16 and integer tensors are read too.
pub fn tensor_scalar(t: &TensorProto) -> Option<f64> {
    if let Some(shape) = &t.tensor_shape
        && shape.dim.iter().any(|d| d.size != 1)
    {
        return None;
    }
    let content = &t.tensor_content[..];
    fn one<T: Copy>(v: &[T]) -> Option<T> {
        match v {
            [x] => Some(*x),
            _ => None,
        }
    }
    match t.dtype {
        dtype::FLOAT => one(&t.float_val)
            .map(f64::from)
            .or_else(|| Some(f32::from_le_bytes(content.try_into().ok()?) as f64)),
        dtype::DOUBLE => {
            one(&t.double_val).or_else(|| Some(f64::from_le_bytes(content.try_into().ok()?)))
        }
        dtype::HALF => one(&t.half_val)
            .map(|h| f16_to_f64(h as u16))
            .or_else(|| Some(f16_to_f64(u16::from_le_bytes(content.try_into().ok()?)))),
        dtype::BFLOAT16 => one(&t.half_val)
            .map(|h| bf16_to_f64(h as u16))
            .or_else(|| Some(bf16_to_f64(u16::from_le_bytes(content.try_into().ok()?)))),
        dtype::INT32 => one(&t.int_val)
            .map(f64::from)
            .or_else(|| Some(i32::from_le_bytes(content.try_into().ok()?) as f64)),
        dtype::INT64 => one(&t.int64_val)
            .map(|v| v as f64)
            .or_else(|| Some(i64::from_le_bytes(content.try_into().ok()?) as f64)),
        _ => None,
    }
}

/// The images of a TF 2.x image summary: a string tensor `[width, height, png, png, …]` (the images plugin's
/// layout, width first), each with that size; `None` for any other tensor.
pub fn tensor_images(t: &TensorProto) -> Option<(u32, u32, &[Vec<u8>])> {
    if t.dtype != dtype::STRING {
        return None;
    }
    let [width, height, images @ ..] = t.string_val.as_slice() else {
        return None;
    };
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.trim().parse::<u32>().ok();
    Some((number(width)?, number(height)?, images))
}

/// IEEE 754 binary16 to f64.
pub fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        0x1f if frac == 0.0 => sign * f64::INFINITY,
        0x1f => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// bfloat16 (the top half of an f32) to f64.
pub fn bf16_to_f64(bits: u16) -> f64 {
    f32::from_bits((bits as u32) << 16) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(f16_to_f64(0x7c00), f64::INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(bf16_to_f64(0x3f80), 1.0);
    }

    #[test]
    fn tensor_shapes() {
        let mut t = TensorProto {
            dtype: dtype::FLOAT,
            float_val: vec![0.5],
            ..Default::default()
        };
        assert_eq!(tensor_scalar(&t), Some(0.5));
        t.tensor_shape = Some(TensorShapeProto {
            dim: vec![Dim { size: 2 }],
        });
        assert_eq!(tensor_scalar(&t), None);
        t.tensor_shape = None;
        t.float_val = vec![1.0, 2.0];
        assert_eq!(tensor_scalar(&t), None);
        t.float_val.clear();
        t.tensor_content = 0.25f32.to_le_bytes().to_vec();
        assert_eq!(tensor_scalar(&t), Some(0.25));
        t.tensor_content.pop();
        assert_eq!(tensor_scalar(&t), None);
    }
}
