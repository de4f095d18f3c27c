//! safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's
//! dtype, shape and byte range, then the data. Also the sharded `*.index.json` layout.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::{DType, FormatError, SharedBytes};

/// Real headers are kilobytes to a few megabytes; anything larger is not a header.
const MAX_HEADER_BYTES: u64 = 100 << 20;

#[derive(Clone, Debug)]
pub struct TensorView {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: SharedBytes,
}

/// One parsed safetensors file.
#[derive(Debug)]
pub struct SafeTensors {
    pub tensors: BTreeMap<String, TensorView>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

fn parse_dtype(s: &str) -> Result<DType, FormatError> {
    Ok(match s {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I8" => DType::I8,
        "U8" | "BOOL" => DType::U8,
        "I16" => DType::I16,
        "I32" => DType::I32,
        "I64" => DType::I64,
        "U32" => DType::U32,
        other => return Err(FormatError::Invalid(format!("unsupported safetensors dtype {other}"))),
    })
}

impl SafeTensors {
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        Self::parse(SharedBytes::map_file(path)?).map_err(|e| FormatError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn parse(bytes: SharedBytes) -> Result<Self, FormatError> {
        let len = bytes.len() as u64;
        if len < 8 {
            return Err(FormatError::Truncated { offset: 0, needed: 8, len });
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES || header_len > len - 8 {
            return Err(FormatError::Invalid(format!("header length {header_len} does not fit in a {len}-byte file")));
        }
        let header_end = 8 + header_len as usize;
        let raw: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..header_end]).map_err(|e| FormatError::Invalid(format!("header is not valid JSON: {e}")))?;
        let data = bytes.slice(header_end..bytes.len())?;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, value) in raw {
            if name == "__metadata__" {
                // MLX writes `null` when there is no metadata.
                if value.is_null() {
                    continue;
                }
                metadata = serde_json::from_value(value).map_err(|e| FormatError::Invalid(format!("__metadata__: {e}")))?;
                continue;
            }
            let entry: Entry = serde_json::from_value(value).map_err(|e| FormatError::Invalid(format!("tensor {name}: {e}")))?;
            let dtype = parse_dtype(&entry.dtype)?;
            let [begin, end] = entry.data_offsets;
            let (row_len, rows) = match entry.shape.split_last() {
                None => (1, 1),
                Some((&last, outer)) => (
                    last,
                    outer
                        .iter()
                        .try_fold(1u64, |a, &d| a.checked_mul(d))
                        .ok_or_else(|| FormatError::Invalid(format!("tensor {name}: shape overflows")))?,
                ),
            };
            let size = crate::tensor_bytes(dtype, row_len, rows)?;
            if begin > end || end > data.len() as u64 || end - begin != size {
                return Err(FormatError::Invalid(format!(
                    "tensor {name}: offsets [{begin}, {end}) do not match shape {:?} of {} ({size} bytes) in {} bytes of data",
                    entry.shape,
                    entry.dtype,
                    data.len()
                )));
            }
            let view = TensorView {
                dtype,
                shape: entry.shape.iter().map(|&d| d as usize).collect(),
                data: data.slice(begin as usize..end as usize)?,
            };
            tensors.insert(name, view);
        }
        Ok(SafeTensors { tensors, metadata })
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards a
/// `model.safetensors.index.json` names, or (as some exports have) every `*.safetensors`.
pub fn model_files(dir: &Path) -> Result<Vec<PathBuf>, FormatError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(&index).map_err(|e| FormatError::io(&index, e))?;
        let parsed: Index = serde_json::from_str(&text).map_err(|e| FormatError::Invalid(format!("{}: {e}", index.display())))?;
        let mut files: Vec<String> = parsed.weight_map.into_values().collect();
        files.sort();
        files.dedup();
        return files
            .into_iter()
            .map(|f| {
                let p = Path::new(&f);
                // Exactly one plain file name: `..` and `.` are one component each, too.
                let mut parts = p.components();
                if !matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None)) {
                    return Err(FormatError::Invalid(format!("index names a file outside the model: {f}")));
                }
                Ok(dir.join(p))
            })
            .collect();
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FormatError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(FormatError::Invalid(format!("no .safetensors files in {}", dir.display())));
    }
    Ok(found)
}

/// The name safetensors gives a dtype.
pub fn dtype_name(dtype: DType) -> Result<&'static str, FormatError> {
    Ok(match dtype {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        DType::I8 => "I8",
        DType::U8 => "U8",
        DType::I16 => "I16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        DType::U32 => "U32",
        DType::Ggml(t) => return Err(FormatError::Invalid(format!("safetensors cannot hold {t:?} blocks"))),
    })
}

/// A tensor a [`SafeTensorsWriter`] will write: its name, dtype and shape.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn bytes(&self) -> Result<u64, FormatError> {
        let row = self.shape.last().copied().unwrap_or(1) as u64;
        let rows = self.shape.iter().rev().skip(1).product::<usize>() as u64;
        crate::tensor_bytes(self.dtype, row, rows)
    }
}

/// Writes a safetensors file a tensor at a time: the header goes first (every tensor's size
/// is known from its spec), then each tensor's bytes in the order the specs gave, so memory
/// stays bounded by one tensor.
pub struct SafeTensorsWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    sizes: Vec<(String, u64)>,
    next: usize,
}

impl SafeTensorsWriter {
    pub fn create(path: &Path, metadata: &BTreeMap<String, String>, tensors: &[TensorSpec]) -> Result<Self, FormatError> {
        let io = |e| FormatError::io(path, e);
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
        let mut header = serde_json::Map::new();
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| FormatError::Invalid(e.to_string()))?);
        }
        let (mut offset, mut sizes) = (0u64, Vec::with_capacity(tensors.len()));
        for t in tensors {
            let bytes = t.bytes()?;
            let entry = serde_json::json!({"dtype": dtype_name(t.dtype)?, "shape": t.shape, "data_offsets": [offset, offset + bytes]});
            header.insert(t.name.clone(), entry);
            sizes.push((t.name.clone(), bytes));
            offset += bytes;
        }
        let mut text = serde_json::Value::Object(header).to_string().into_bytes();
        // The data starts 8-byte aligned, as the reference writer pads it.
        text.resize(text.len().next_multiple_of(8), b' ');
        std::io::Write::write_all(&mut out, &(text.len() as u64).to_le_bytes()).map_err(io)?;
        std::io::Write::write_all(&mut out, &text).map_err(io)?;
        Ok(SafeTensorsWriter { path: path.to_path_buf(), out, sizes, next: 0 })
    }

    /// The next tensor's bytes.
    pub fn write(&mut self, name: &str, data: &[u8]) -> Result<(), FormatError> {
        let Some((expected, bytes)) = self.sizes.get(self.next) else {
            return Err(FormatError::Invalid(format!("{name}: more tensors than the header names")));
        };
        if expected != name || *bytes != data.len() as u64 {
            return Err(FormatError::Invalid(format!("{name}: expected {expected} of {bytes} bytes, got {} bytes", data.len())));
        }
        std::io::Write::write_all(&mut self.out, data).map_err(|e| FormatError::io(&self.path, e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written, and puts the file on disk (synced).
    pub fn finish(self) -> Result<(), FormatError> {
        if self.next != self.sizes.len() {
            return Err(FormatError::Invalid(format!("{} of {} tensors written", self.next, self.sizes.len())));
        }
        let io = |e| FormatError::io(&self.path, e);
        let file = self.out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }
}
