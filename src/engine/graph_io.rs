//! A model's declared graph inputs and outputs, read from the ONNX file without ONNX Runtime: what a TensorRT
//! shape profile must name before the session exists. Weights (initializers) are skipped, never read, so a
//! multi-gigabyte U-Net costs a few kilobytes of reading.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use prost::Message;

use super::roles::{Dim, ElemType, TensorSpec};

/// ModelProto.graph, GraphProto.input and GraphProto.output.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
/// TensorProto.external_data: `location`, `offset`, `length` of a tensor kept outside the .onnx file.
const TENSOR_EXTERNAL_DATA: u64 = 13;

/// One key/value of TensorProto.external_data (onnx.proto's StringStringEntryProto).
#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// A value's declared name and type (onnx.proto's ValueInfoProto, the fields difflab reads).
#[derive(Clone, PartialEq, Message)]
struct ValueInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    kind: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor: Option<TensorType>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorType {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<Shape>,
}

#[derive(Clone, PartialEq, Message)]
struct Shape {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    param: Option<String>,
}

/// The graph's declared inputs and outputs, in order.
pub fn declared_io(path: &Path) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>), String> {
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    let has_graph = walk_graph(path, &mut |field, reader, pos, len| {
        let list = match field {
            GRAPH_INPUT => &mut inputs,
            GRAPH_OUTPUT => &mut outputs,
            _ => return Ok(false),
        };
        let mut bytes = vec![0; len as usize];
        reader
            .read_exact(&mut bytes)
            .map_err(|_| "it ends inside its graph".to_string())?;
        *pos += len;
        let info = ValueInfo::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        list.push(spec_of(info));
        Ok(true)
    })?;
    match has_graph {
        true => Ok((inputs, outputs)),
        false => Err(not_onnx(path, "it has no graph")),
    }
}

/// The files, relative to the model's folder, that its initializers keep their weights in (the `location` of
/// each external-data tensor: `model.onnx_data` for Optimum's exports), each once, in order of first use.
/// Weights inside the file are skipped, never read.
pub fn external_data(path: &Path) -> Result<Vec<String>, String> {
    let mut locations = Vec::new();
    walk_graph(path, &mut |field, reader, pos, len| {
        if field != GRAPH_INITIALIZER {
            return Ok(false);
        }
        tensor_locations(reader, pos, *pos + len, &mut locations)?;
        Ok(true)
    })?;
    Ok(locations)
}

/// What one length-delimited field of the graph is given to: its number, the reader at its start, the position
/// (to advance past what it reads) and its length. It returns whether it read the field; the rest are skipped.
type Visit<'a> = dyn FnMut(u64, &mut BufReader<File>, &mut u64, u64) -> Result<bool, String> + 'a;

/// Walks the graph's length-delimited fields without reading the ones `visit` leaves; `Ok(false)` when the
/// model has no graph.
fn walk_graph(path: &Path, visit: &mut Visit<'_>) -> Result<bool, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let end = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut reader = BufReader::new(file);
    let bad = |what: String| not_onnx(path, &what);
    let Some(graph) = find_field(&mut reader, end, MODEL_GRAPH).map_err(bad)? else {
        return Ok(false);
    };
    let mut pos = graph.0;
    reader
        .seek(SeekFrom::Start(pos))
        .map_err(|e| bad(e.to_string()))?;
    while pos < graph.1 {
        let (field, wire) = read_tag(&mut reader, &mut pos).map_err(bad)?;
        let Some(len) = skip_or_len(&mut reader, &mut pos, wire).map_err(bad)? else {
            continue;
        };
        if !visit(field, &mut reader, &mut pos, len).map_err(bad)? {
            reader
                .seek_relative(len as i64)
                .map_err(|e| bad(e.to_string()))?;
            pos += len;
        }
    }
    Ok(true)
}

fn not_onnx(path: &Path, what: &str) -> String {
    format!("{}: {what}; is it an ONNX model?", path.display())
}

/// Adds the external-data locations of the TensorProto that ends at `end`, skipping its data.
fn tensor_locations(
    reader: &mut BufReader<File>,
    pos: &mut u64,
    end: u64,
    locations: &mut Vec<String>,
) -> Result<(), String> {
    while *pos < end {
        let (field, wire) = read_tag(reader, pos)?;
        let Some(len) = skip_or_len(reader, pos, wire)? else {
            continue;
        };
        if field == TENSOR_EXTERNAL_DATA && len < 1 << 16 {
            let mut bytes = vec![0; len as usize];
            reader
                .read_exact(&mut bytes)
                .map_err(|_| "it ends inside its graph".to_string())?;
            *pos += len;
            let entry = Entry::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            if entry.key == "location" && !locations.contains(&entry.value) {
                locations.push(entry.value);
            }
        } else {
            reader
                .seek_relative(len as i64)
                .map_err(|e| e.to_string())?;
            *pos += len;
        }
    }
    Ok(())
}

fn spec_of(info: ValueInfo) -> TensorSpec {
    let Some(tensor) = info.kind.and_then(|k| k.tensor) else {
        return TensorSpec {
            name: info.name,
            elem: ElemType::Other("non-tensor"),
            dims: Vec::new(),
            is_tensor: false,
        };
    };
    let elem = match tensor.elem_type {
        1 => ElemType::F32,
        10 => ElemType::F16,
        16 => ElemType::Bf16,
        11 => ElemType::F64,
        7 => ElemType::I64,
        6 => ElemType::I32,
        _ => ElemType::Other("other"),
    };
    let dims = tensor
        .shape
        .map(|s| s.dim)
        .unwrap_or_default()
        .into_iter()
        .map(|d| match (d.value, d.param) {
            (Some(v), _) if v > 0 => Dim::Fixed(v as usize),
            (_, Some(p)) => Dim::Symbolic(p),
            _ => Dim::Symbolic(String::new()),
        })
        .collect();
    TensorSpec::tensor(&info.name, elem, dims)
}

/// The byte range [start, end) of the first length-delimited top-level `field`.
fn find_field(
    reader: &mut BufReader<File>,
    end: u64,
    field: u64,
) -> Result<Option<(u64, u64)>, String> {
    let mut pos = 0;
    while pos < end {
        let (f, wire) = read_tag(reader, &mut pos)?;
        let Some(len) = skip_or_len(reader, &mut pos, wire)? else {
            continue;
        };
        if f == field {
            return Ok(Some((pos, pos + len)));
        }
        reader
            .seek_relative(len as i64)
            .map_err(|e| e.to_string())?;
        pos += len;
    }
    Ok(None)
}

fn read_tag(reader: &mut impl Read, pos: &mut u64) -> Result<(u64, u64), String> {
    let tag = read_varint(reader, pos)?;
    Ok((tag >> 3, tag & 7))
}

/// Skips a fixed-size or varint field and returns `None`, or returns the length of a length-delimited one.
fn skip_or_len(
    reader: &mut BufReader<File>,
    pos: &mut u64,
    wire: u64,
) -> Result<Option<u64>, String> {
    let skip = match wire {
        0 => {
            read_varint(reader, pos)?;
            return Ok(None);
        }
        1 => 8,
        2 => return read_varint(reader, pos).map(Some),
        5 => 4,
        other => return Err(format!("unexpected protobuf wire type {other}")),
    };
    reader.seek_relative(skip).map_err(|e| e.to_string())?;
    *pos += skip as u64;
    Ok(None)
}

fn read_varint(reader: &mut impl Read, pos: &mut u64) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        reader
            .read_exact(&mut byte)
            .map_err(|_| "it ends inside a field".to_string())?;
        *pos += 1;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a malformed varint".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_model(graph: &[u8]) -> tempfile::NamedTempFile {
        let mut bytes = vec![0x08, 0x08]; // ir_version 8
        bytes.push(0x3a); // field 7, length-delimited
        prost::encoding::encode_varint(graph.len() as u64, &mut bytes);
        bytes.extend_from_slice(graph);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    fn value(name: &str, elem: i32, dims: &[Result<i64, &str>]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            kind: Some(TypeProto {
                tensor: Some(TensorType {
                    elem_type: elem,
                    shape: Some(Shape {
                        dim: dims
                            .iter()
                            .map(|d| match d {
                                Ok(v) => Dimension {
                                    value: Some(*v),
                                    param: None,
                                },
                                Err(p) => Dimension {
                                    value: None,
                                    param: Some(p.to_string()),
                                },
                            })
                            .collect(),
                    }),
                }),
            }),
        }
    }

    #[test]
    fn reads_inputs_and_outputs_skipping_everything_else() {
        let mut graph = Vec::new();
        // An initializer-sized blob (field 5) and a node (field 1) before the inputs are skipped.
        prost::encoding::bytes::encode(5, &vec![7u8; 100_000], &mut graph);
        prost::encoding::bytes::encode(1, &vec![1u8; 10], &mut graph);
        let sample = value("sample", 1, &[Err("batch"), Ok(4), Err("h"), Err("w")]);
        let out = value("out_sample", 1, &[Err("batch"), Ok(4), Err("h"), Err("w")]);
        prost::encoding::message::encode(11, &sample, &mut graph);
        prost::encoding::message::encode(11, &value("timestep", 7, &[]), &mut graph);
        prost::encoding::message::encode(12, &out, &mut graph);
        let file = write_model(&graph);
        let (inputs, outputs) = declared_io(file.path()).unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].describe(), "'sample' [batch, 4, h, w] float32");
        assert_eq!(inputs[1].describe(), "'timestep' [] int64");
        assert_eq!(outputs[0].name, "out_sample");
    }

    fn external_tensor(name: &str, location: &str) -> Vec<u8> {
        let mut tensor = Vec::new();
        prost::encoding::int64::encode_packed(1, &[320, 4, 3, 3], &mut tensor);
        prost::encoding::string::encode(8, &name.to_string(), &mut tensor);
        for (key, value) in [("location", location), ("offset", "0"), ("length", "46080")] {
            let entry = Entry {
                key: key.into(),
                value: value.into(),
            };
            prost::encoding::message::encode(13, &entry, &mut tensor);
        }
        prost::encoding::int32::encode(14, &1, &mut tensor);
        tensor
    }

    #[test]
    fn lists_each_external_data_file_once_and_skips_inline_weights() {
        let mut graph = Vec::new();
        let mut inline = Vec::new();
        prost::encoding::bytes::encode(9, &vec![3u8; 50_000], &mut inline);
        prost::encoding::bytes::encode(5, &inline, &mut graph);
        prost::encoding::bytes::encode(5, &external_tensor("a", "model.onnx_data"), &mut graph);
        prost::encoding::bytes::encode(5, &external_tensor("b", "weights/b.bin"), &mut graph);
        prost::encoding::bytes::encode(5, &external_tensor("c", "model.onnx_data"), &mut graph);
        prost::encoding::message::encode(11, &value("sample", 1, &[Ok(1)]), &mut graph);
        let file = write_model(&graph);
        assert_eq!(
            external_data(file.path()).unwrap(),
            vec!["model.onnx_data".to_string(), "weights/b.bin".to_string()]
        );
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        let mut graph = Vec::new();
        prost::encoding::message::encode(11, &value("sample", 1, &[Ok(1)]), &mut graph);
        let file = write_model(&graph);
        let bytes = std::fs::read(file.path()).unwrap();
        std::fs::write(file.path(), &bytes[..bytes.len() - 3]).unwrap();
        let err = declared_io(file.path()).unwrap_err();
        assert!(err.contains("ends inside"), "{err}");
    }
}
