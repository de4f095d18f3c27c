//! GGUF files written by `GgufWriter` read back exactly, and every way of corrupting one yields
//! a clear `FormatError`: never a panic, never an allocation sized by a lying count.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hearth_formats::gguf::{GgmlType, Gguf, GgufWriter, Value};
use hearth_formats::{FormatError, SharedBytes};

fn parse(bytes: Vec<u8>) -> Result<Gguf, FormatError> {
    Gguf::parse(SharedBytes::from_vec(bytes))
}

/// Parses bytes that must be rejected, and checks the message says why.
fn rejected(bytes: Vec<u8>, needle: &str) -> FormatError {
    let err = parse(bytes).expect_err("malformed GGUF parsed");
    let msg = err.to_string();
    assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
    err
}

fn written(w: &GgufWriter) -> Vec<u8> {
    let mut out = Vec::new();
    w.write_to(&mut out).unwrap();
    out
}

/// Recognisable bytes, so a tensor read from the wrong offset shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn every_value_type() -> Vec<(&'static str, Value)> {
    let ints = |v: &[i32]| Value::Array(v.iter().map(|&x| Value::I32(x)).collect());
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("t.u8", Value::U8(200)),
        ("t.i8", Value::I8(-100)),
        ("t.u16", Value::U16(60_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.bool.true", Value::Bool(true)),
        ("t.bool.false", Value::Bool(false)),
        ("t.string", Value::String("héllo ▁wörld 🔥".into())),
        ("t.string.empty", Value::String(String::new())),
        ("t.array.empty", Value::Array(vec![])),
        ("t.array.u8", Value::Array(vec![Value::U8(1), Value::U8(2), Value::U8(255)])),
        ("t.array.f32", Value::Array(vec![Value::F32(0.25), Value::F32(-3.0)])),
        ("t.array.bool", Value::Array(vec![Value::Bool(true), Value::Bool(false)])),
        ("t.array.string", Value::Array(vec![Value::String("a".into()), Value::String("▁b c".into())])),
        ("t.array.nested", Value::Array(vec![ints(&[1, -2, 3]), ints(&[]), ints(&[i32::MAX])])),
    ]
}

/// (name, row-major shape, type): odd sizes so that inter-tensor padding is exercised.
const TENSORS: [(&str, &[usize], GgmlType); 8] = [
    ("f32", &[2, 3], GgmlType::F32),
    ("f16", &[3], GgmlType::F16),
    ("bf16", &[1, 5], GgmlType::BF16),
    ("q4_0", &[2, 64], GgmlType::Q4_0),
    ("q8_0", &[32], GgmlType::Q8_0),
    ("q4_k", &[3, 256], GgmlType::Q4K),
    ("q6_k", &[256], GgmlType::Q6K),
    ("cube", &[2, 2, 2, 32], GgmlType::Q4_1),
];

fn tensor_len(shape: &[usize], ty: GgmlType) -> usize {
    shape.iter().product::<usize>() / ty.block_len() * ty.block_bytes()
}

fn full_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in every_value_type() {
        w.metadata(k, v);
    }
    for (i, (name, shape, ty)) in TENSORS.into_iter().enumerate() {
        w.tensor(name, shape, ty, pattern(tensor_len(shape, ty), i as u8)).unwrap();
    }
    w
}

fn assert_round_trip(g: &Gguf, alignment: u64) {
    for (i, (name, shape, ty)) in TENSORS.into_iter().enumerate() {
        let info = g.tensor(name).unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(info.shape(), shape, "{name}");
        assert_eq!(info.ggml_type, ty, "{name}");
        assert_eq!(info.size as usize, tensor_len(shape, ty), "{name}");
        assert_eq!(info.offset % alignment, 0, "{name} at {} is not {alignment}-aligned", info.offset);
        assert_eq!(&*g.tensor_data(info).unwrap(), &pattern(tensor_len(shape, ty), i as u8)[..], "{name} data");
    }
    let names: Vec<_> = g.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, TENSORS.map(|t| t.0), "tensor order");
}

#[test]
fn writer_output_round_trips() {
    let g = parse(written(&full_writer())).unwrap();
    assert_eq!(g.version, 3);
    let expected: BTreeMap<String, Value> = every_value_type().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    assert_eq!(g.metadata, expected);
    assert_eq!(g.architecture().unwrap(), "llama");
    assert_round_trip(&g, 32);
}

#[test]
fn write_file_round_trips_through_open() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.gguf");
    full_writer().write_file(&path).unwrap();
    assert!(!path.with_extension("gguf.partial").exists(), "temporary file left behind");
    assert_round_trip(&Gguf::open(&path).unwrap(), 32);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_honours_general_alignment() {
    let mut w = full_writer();
    w.metadata("general.alignment", Value::U32(256));
    assert_round_trip(&parse(written(&w)).unwrap(), 256);
}

#[test]
fn version_2_is_accepted() {
    let mut bytes = written(&full_writer());
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(parse(bytes).unwrap().version, 2);
}

#[test]
fn writer_rejects_bad_tensors_without_panicking() {
    let mut w = GgufWriter::new();
    assert!(w.tensor("scalar", &[], GgmlType::F32, vec![0; 4]).is_err(), "GGUF has no 0-dimensional tensors");
    assert!(w.tensor("short", &[2, 3], GgmlType::F32, vec![0; 20]).is_err());
    assert!(w.tensor("partial_block", &[16], GgmlType::Q4_0, vec![0; 9]).is_err());
    assert!(w.tensor("huge", &[usize::MAX, usize::MAX, 2], GgmlType::F32, vec![]).is_err());
}

/// A small file whose last tensor ends exactly at the end of the file (no trailing padding), so
/// that every proper prefix is missing bytes the header promises.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("llama".into()))
        .metadata("n", Value::U32(7))
        .metadata("list", Value::Array(vec![Value::Array(vec![Value::String("x".into())])]));
    w.tensor("a", &[3], GgmlType::F16, pattern(6, 1)).unwrap();
    w.tensor("b", &[32], GgmlType::Q8_0, pattern(34, 2)).unwrap();
    w.tensor("c", &[8], GgmlType::F32, pattern(32, 3)).unwrap();
    written(&w)
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_file();
    parse(full.clone()).expect("the untruncated file parses");
    for len in 0..full.len() {
        let result = catch_unwind(AssertUnwindSafe(|| parse(full[..len].to_vec())));
        match result {
            Err(_) => panic!("parsing the first {len} of {} bytes panicked", full.len()),
            Ok(Ok(_)) => panic!("the first {len} of {} bytes parsed", full.len()),
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("truncated") || msg.contains("past the end") || msg.contains("exceeds"), "{len}: {msg}");
            }
        }
    }
}

/// Hand-assembled GGUF, for files the writer would never produce.
struct Raw(Vec<u8>);

impl Raw {
    fn new(n_tensors: u64, n_kv: u64) -> Self {
        Raw(Vec::new()).bytes(b"GGUF").u32(3).u64(n_tensors).u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Self {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }
    fn str(self, s: &[u8]) -> Self {
        self.u64(s.len() as u64).bytes(s)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> Self {
        let mut r = self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(ty).u64(offset)
    }
    /// Pads the header to the default alignment and appends `n` bytes of tensor data.
    fn data(mut self, n: usize) -> Vec<u8> {
        self.0.resize(self.0.len().next_multiple_of(32) + n, 0);
        self.0
    }
}

#[test]
fn raw_builder_makes_valid_files() {
    let g = parse(Raw::new(2, 0).tensor("a", &[4], 0, 0).tensor("b", &[32], 8, 32).data(32 + 34)).unwrap();
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.tensor("b").unwrap().size, 34);
}

#[test]
fn wrong_magic() {
    for magic in [*b"GGML", *b"gguf", [0; 4], *b"\x89PNG"] {
        let mut bytes = small_file();
        bytes[..4].copy_from_slice(&magic);
        assert!(matches!(rejected(bytes, "magic"), FormatError::BadMagic(m) if m == magic));
    }
    rejected(b"PK\x03\x04 a zip, not a model".to_vec(), "not a GGUF file");
}

#[test]
fn unsupported_versions() {
    for version in [0, 1, 4, u32::MAX] {
        let mut bytes = small_file();
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let err = rejected(bytes, "version");
        assert!(matches!(err, FormatError::UnsupportedVersion(v) if v == version));
        assert!(err.to_string().contains(&version.to_string()));
    }
}

#[test]
fn tensor_data_past_the_end() {
    rejected(Raw::new(1, 0).tensor("a", &[8], 0, 0).data(31), "past the end");
    rejected(Raw::new(1, 0).tensor("a", &[8], 0, 1 << 40).data(32), "past the end");
    // Offsets whose sum with the data start overflows a u64.
    rejected(Raw::new(1, 0).tensor("a", &[8], 0, u64::MAX - 31).data(32), "past the end");
    // Dimensions that multiply out fine but describe terabytes.
    rejected(Raw::new(1, 0).tensor("a", &[1 << 20, 1 << 20], 0, 0).data(32), "past the end");
}

#[test]
fn tensor_offset_not_aligned() {
    let err = rejected(Raw::new(1, 0).tensor("a", &[4], 0, 4).data(64), "not aligned");
    assert!(err.to_string().contains("tensor a"));
}

#[test]
fn absurd_dimensions() {
    rejected(Raw::new(1, 0).tensor("a", &[u64::MAX], 0, 0).data(32), "overflows");
    rejected(Raw::new(1, 0).tensor("a", &[u64::MAX], 1, 0).data(32), "overflows");
    rejected(Raw::new(1, 0).tensor("a", &[1, 1 << 32, 1 << 32], 0, 0).data(32), "dimensions overflow");
    rejected(Raw::new(1, 0).tensor("a", &[2, u64::MAX / 2 + 1], 0, 0).data(32), "overflows");
    rejected(Raw::new(1, 0).tensor("a", &[1, 1, 1, 1, 1], 0, 0).data(32), "5 dimensions");
    rejected(Raw::new(1, 0).tensor("a", &[], 0, 0).data(32), "0 dimensions");
    // A dimension count so large its dimensions could not be read must not be allocated for.
    rejected(Raw::new(1, 0).str(b"a").u32(u32::MAX).data(32), "dimensions");
    rejected(Raw::new(1, 0).tensor("a", &[33], 2, 0).data(64), "whole");
}

#[test]
fn unknown_tensor_type() {
    for id in [4, 5, 16, 99, u32::MAX] {
        let err = rejected(Raw::new(1, 0).tensor("a", &[4], id, 0).data(64), "unknown GGUF tensor type");
        assert!(matches!(err, FormatError::UnknownTensorType(t) if t == id));
    }
}

#[test]
fn unknown_metadata_value_type() {
    let err = rejected(Raw::new(0, 1).str(b"k").u32(13).u64(0).data(0), "unknown GGUF metadata value type 13");
    assert!(matches!(err, FormatError::UnknownValueType(13)));
    // As the element type of an array.
    let err = rejected(Raw::new(0, 1).str(b"k").u32(9).u32(77).u64(1).u64(0).data(0), "unknown");
    assert!(matches!(err, FormatError::UnknownValueType(77)));
}

#[test]
fn string_length_of_u64_max() {
    // As a key, as a string value, as an array element and as a tensor name.
    rejected(Raw::new(0, 1).u64(u64::MAX).bytes(b"key").data(0), "truncated");
    rejected(Raw::new(0, 1).str(b"k").u32(8).u64(u64::MAX).bytes(b"value").data(0), "truncated");
    rejected(Raw::new(0, 1).str(b"k").u32(9).u32(8).u64(1).u64(u64::MAX).data(0), "truncated");
    rejected(Raw::new(1, 0).u64(u64::MAX).data(64), "truncated");
}

#[test]
fn huge_counts() {
    for count in [1u64 << 60, u64::MAX, 1 << 32] {
        rejected(Raw::new(0, 1).str(b"k").u32(9).u32(0).u64(count).data(64), "count");
        rejected(Raw::new(count, 0).data(64), "count");
        rejected(Raw::new(0, count).data(64), "count");
    }
    // Nested arrays: the inner count is checked against what is left, too.
    rejected(Raw::new(0, 1).str(b"k").u32(9).u32(9).u64(1).u32(4).u64(1 << 60).data(64), "count");
}

#[test]
fn arrays_nested_too_deeply() {
    let three_deep = Raw::new(0, 1).str(b"k").u32(9).u32(9).u64(1).u32(9).u64(1).u32(0).u64(0);
    rejected(three_deep.data(0), "nested too deeply");
}

#[test]
fn bool_other_than_0_or_1() {
    rejected(Raw::new(0, 1).str(b"k").u32(7).bytes(&[2]).data(0), "bool value 2");
}

#[test]
fn duplicate_tensor_names() {
    let bytes = Raw::new(2, 0).tensor("w", &[8], 0, 0).tensor("w", &[8], 0, 32).data(64);
    rejected(bytes, "duplicate tensor name w");
}

#[test]
fn invalid_utf8() {
    rejected(Raw::new(0, 1).str(b"bad\xff\xfekey").u32(4).u32(1).data(0), "not UTF-8");
    rejected(Raw::new(0, 1).str(b"k").u32(8).str(b"\xc3\x28").data(0), "not UTF-8");
    rejected(Raw::new(1, 0).str(b"\xffname").u32(1).u64(8).u32(0).u64(0).data(32), "not UTF-8");
}

#[test]
fn bad_alignment_values() {
    let with_alignment = |ty: u32, value: &[u8]| Raw::new(0, 1).str(b"general.alignment").u32(ty).bytes(value).data(0);
    rejected(with_alignment(4, &0u32.to_le_bytes()), "bad general.alignment");
    rejected(with_alignment(4, &3u32.to_le_bytes()), "bad general.alignment");
    rejected(with_alignment(10, &(1u64 << 40).to_le_bytes()), "bad general.alignment");
    rejected(with_alignment(5, &(-32i32).to_le_bytes()), "bad general.alignment");
    rejected(with_alignment(8, &[&2u64.to_le_bytes()[..], b"32"].concat()), "bad general.alignment");
    // The writer refuses them too, rather than writing a file it cannot read back.
    for bad in [Value::U32(0), Value::U32(3), Value::U64(1 << 40)] {
        let mut w = GgufWriter::new();
        w.metadata("general.alignment", bad);
        assert!(w.write_to(&mut Vec::new()).is_err());
    }
}
