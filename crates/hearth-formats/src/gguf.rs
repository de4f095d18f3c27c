//! GGUF (versions 2 and 3), llama.cpp's single-file model format: a header of typed metadata,
//! a table of tensors, then the aligned tensor data. The reader works on a byte slice (usually
//! a memory map) and validates everything; the writer produces files llama.cpp loads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::{DType, FormatError, SharedBytes};

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// No real model has tensors of more dimensions than this (ggml's own limit).
const MAX_DIMS: u32 = 4;

/// llama.cpp's tensor element types, with their numeric ids in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Result<Self, FormatError> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            9 => Self::Q8_1,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            other => return Err(FormatError::UnknownTensorType(other)),
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Q8K => 15,
            Self::BF16 => 30,
        }
    }

    /// Elements per block.
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// The storage type as the format-neutral [`DType`].
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::BF16 => DType::BF16,
            q => DType::Ggml(q),
        }
    }
}

/// The data alignment a `general.alignment` value (if any) asks for, validated.
fn alignment(value: Option<&Value>) -> Result<u64, FormatError> {
    match value {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => Ok(a),
            _ => Err(FormatError::Invalid(format!("bad general.alignment {v:?}"))),
        },
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// Any integer type, widened; `None` for other types or negative values.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's entry in the table, with its data located and bounds-checked.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte range of the data in the file.
    pub offset: u64,
    pub size: u64,
}

impl TensorInfo {
    /// Shape in the usual row-major order (outermost first), as safetensors and candle use.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file.
#[derive(Debug)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data: SharedBytes,
}

impl Gguf {
    /// Memory-maps and parses a file.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        Self::parse(SharedBytes::map_file(path)?)
    }

    pub fn parse(data: SharedBytes) -> Result<Self, FormatError> {
        let mut r = Reader { buf: &data, pos: 0 };
        let magic: [u8; 4] = r.take(4)?.try_into().expect("took 4 bytes");
        if magic != MAGIC {
            return Err(FormatError::BadMagic(magic));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let n_tensors = r.count(8)?;
        let n_kv = r.count(10)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let alignment = alignment(metadata.get("general.alignment"))?;
        let mut raw = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(FormatError::Invalid(format!("tensor {name}: {n_dims} dimensions")));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            let ggml_type = GgmlType::from_id(r.u32()?)?;
            let offset = r.u64()?;
            raw.push((name, dims, ggml_type, offset));
        }
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let file_len = data.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashSet::new();
        for (name, dims, ggml_type, offset) in raw {
            if !seen.insert(name.clone()) {
                return Err(FormatError::Invalid(format!("duplicate tensor name {name}")));
            }
            let rows = dims[1..]
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| FormatError::Invalid(format!("tensor {name}: dimensions overflow")))?;
            let size =
                crate::tensor_bytes(ggml_type.dtype(), dims[0], rows).map_err(|e| FormatError::Invalid(format!("tensor {name}: {e}")))?;
            if offset % alignment != 0 {
                return Err(FormatError::Invalid(format!("tensor {name}: offset {offset} not aligned")));
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            match (start, end) {
                (Some(start), Some(end)) if end <= file_len => tensors.push(TensorInfo { name, dims, ggml_type, offset: start, size }),
                _ => {
                    return Err(FormatError::Invalid(format!(
                        "tensor {name}: data at offset {offset} (+{size} bytes) lies past the end of the file ({file_len} bytes)"
                    )))
                }
            }
        }
        Ok(Gguf { version, metadata, tensors, data })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor (a window onto the memory map, not a copy).
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<SharedBytes, FormatError> {
        self.data.slice(info.offset as usize..(info.offset + info.size) as usize)
    }

    /// `general.architecture`, the prefix of the model's hyper-parameter keys.
    pub fn architecture(&self) -> Result<&str, FormatError> {
        self.get("general.architecture").and_then(Value::as_str).ok_or_else(|| FormatError::Invalid("missing general.architecture".into()))
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Arrays nest in principle; real files never go deeper than one level.
const MAX_ARRAY_NESTING: usize = 2;

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], FormatError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(FormatError::Truncated { offset: self.pos as u64, needed: n, len: self.buf.len() as u64 });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A count of items each at least `min_item_bytes` long: rejected if the rest of the file
    /// could not possibly hold them, so a lying count can't make us allocate.
    fn count(&mut self, min_item_bytes: u64) -> Result<usize, FormatError> {
        let n = self.u64()?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item_bytes) > remaining {
            return Err(FormatError::Invalid(format!(
                "count {n} at offset {} exceeds what the remaining {remaining} bytes can hold",
                self.pos - 8
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, FormatError> {
        let len = self.u64()?;
        let at = self.pos;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FormatError::Invalid(format!("string at offset {at} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<Value, FormatError> {
        let b = |r: &mut Self, n| r.take(n);
        Ok(match ty {
            0 => Value::U8(b(self, 1)?[0]),
            1 => Value::I8(b(self, 1)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(b(self, 2)?.try_into().expect("2"))),
            3 => Value::I16(i16::from_le_bytes(b(self, 2)?.try_into().expect("2"))),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => match b(self, 1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                v => return Err(FormatError::Invalid(format!("bool value {v}"))),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(FormatError::Invalid("arrays nested too deeply".into()));
                }
                let elem = self.u32()?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(FormatError::UnknownValueType(other)),
                };
                let n = self.count(min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(FormatError::UnknownValueType(other)),
        })
    }
}

/// Builds a GGUF v3 file: metadata and tensors whose bytes are already in their final type.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(GgufTensorSpec, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn metadata(&mut self, key: impl Into<String>, value: Value) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Adds a tensor; `shape` is row-major (outermost first), `data` its encoded bytes.
    pub fn tensor(&mut self, name: impl Into<String>, shape: &[usize], ty: GgmlType, data: Vec<u8>) -> Result<&mut Self, FormatError> {
        let spec = GgufTensorSpec::new(name, shape, ty);
        let expected = spec.bytes()?;
        if expected != data.len() as u64 {
            return Err(FormatError::Invalid(format!(
                "tensor {}: {} bytes given, shape {shape:?} of {ty:?} needs {expected}",
                spec.name,
                data.len()
            )));
        }
        self.tensors.push((spec, data));
        Ok(self)
    }

    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let specs = self.tensors.iter().map(|(spec, _)| spec.clone()).collect();
        let mut stream = GgufStream::new(out, &self.metadata, specs)?;
        for (spec, data) in &self.tensors {
            stream.write(&spec.name, data)?;
        }
        stream.finish().map(|_| ())
    }

    /// Writes atomically: a temporary file beside the target, renamed into place when complete.
    pub fn write_file(&self, path: &Path) -> Result<(), FormatError> {
        let tmp = path.with_extension("gguf.partial");
        let result = (|| {
            let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            self.write_to(&mut f)?;
            f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            FormatError::io(path, e)
        })
    }
}

/// A tensor as a GGUF header declares it, before its bytes are written.
#[derive(Clone, Debug)]
pub struct GgufTensorSpec {
    pub name: String,
    /// Dimensions as GGUF stores them: innermost (contiguous) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl GgufTensorSpec {
    /// A tensor of row-major `shape` (outermost first).
    pub fn new(name: impl Into<String>, shape: &[usize], ty: GgmlType) -> Self {
        GgufTensorSpec { name: name.into(), dims: shape.iter().rev().map(|&d| d as u64).collect(), ty }
    }

    /// Bytes its data takes.
    pub fn bytes(&self) -> Result<u64, FormatError> {
        let Some((&row_len, outer)) = self.dims.split_first() else {
            return Err(FormatError::Invalid(format!("tensor {}: GGUF tensors need at least one dimension", self.name)));
        };
        let rows = outer
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| FormatError::Invalid(format!("tensor {}: dimensions overflow", self.name)))?;
        crate::tensor_bytes(self.ty.dtype(), row_len, rows)
    }
}

/// Writes a GGUF v3 file front to back: the header (metadata and every tensor's place) first,
/// then each tensor's bytes in the declared order, so a converter holds one tensor at a time.
pub struct GgufStream<W: Write> {
    out: W,
    tensors: Vec<(String, u64)>,
    next: usize,
    alignment: u64,
}

impl<W: Write> GgufStream<W> {
    pub fn new(mut out: W, metadata: &[(String, Value)], tensors: Vec<GgufTensorSpec>) -> std::io::Result<Self> {
        let invalid = |e: FormatError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string());
        // Readers align data to the file's own `general.alignment` (the last one, as the parser
        // keeps it), so the writer must too.
        let requested = metadata.iter().rev().find(|(k, _)| k == "general.alignment").map(|(_, v)| v);
        let alignment = alignment(requested).map_err(invalid)?;
        let align = |n: u64| n.div_ceil(alignment) * alignment;
        let mut header = Vec::new();
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            write_string(&mut header, key);
            header.extend_from_slice(&value.type_id().to_le_bytes());
            write_value(&mut header, value);
        }
        let mut offset = 0u64;
        let mut sizes = Vec::with_capacity(tensors.len());
        for t in &tensors {
            let size = t.bytes().map_err(invalid)?;
            write_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ty.id().to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + size);
            sizes.push((t.name.clone(), size));
        }
        header.resize(align(header.len() as u64) as usize, 0);
        out.write_all(&header)?;
        Ok(GgufStream { out, tensors: sizes, next: 0, alignment })
    }

    /// The next declared tensor's bytes.
    pub fn write(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let Some((expected, size)) = self.tensors.get(self.next) else {
            return Err(invalid(format!("tensor {name} was not declared")));
        };
        if expected != name || *size != data.len() as u64 {
            return Err(invalid(format!("tensor {name} ({} bytes) written where {expected} ({size} bytes) was declared", data.len())));
        }
        self.out.write_all(data)?;
        let pad = data.len() as u64 % self.alignment;
        if pad != 0 {
            self.out.write_all(&vec![0u8; (self.alignment - pad) as usize])?;
        }
        self.next += 1;
        Ok(())
    }

    /// The writer back once every declared tensor is written.
    pub fn finish(self) -> std::io::Result<W> {
        if let Some((name, _)) = self.tensors.get(self.next) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("tensor {name} was declared but not written")));
        }
        Ok(self.out)
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(*v as u8),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            // An empty array's element type is irrelevant; u8 is what llama.cpp writes.
            let elem = items.first().map_or(0, Value::type_id);
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
    }
}
