//! A hand-built safetensors file reads back exactly, and every way of corrupting one yields a
//! clear `FormatError`: never a panic, never an allocation sized by the header's claims.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hearth_formats::safetensors::SafeTensors;
use hearth_formats::{DType, FormatError, SharedBytes};

fn parse(bytes: Vec<u8>) -> Result<SafeTensors, FormatError> {
    SafeTensors::parse(SharedBytes::from_vec(bytes))
}

/// The 8-byte length, the header, then the data.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A file of one tensor described by `entry` (the JSON of its dtype, shape and offsets).
fn one_tensor(entry: &str, data_len: usize) -> Vec<u8> {
    file(&format!(r#"{{"t":{entry}}}"#), &vec![0; data_len])
}

/// Parses bytes that must be rejected, and checks the message says why.
fn rejected(bytes: Vec<u8>, needle: &str) -> FormatError {
    let err = parse(bytes).expect_err("malformed safetensors parsed");
    let msg = err.to_string();
    assert!(msg.contains(needle), "error {msg:?} does not mention {needle:?}");
    err
}

const HEADER: &str = r#"{
    "__metadata__": {"format": "pt", "note": "ünïcode"},
    "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "h": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
    "s": {"dtype": "I64", "shape": [], "data_offsets": [32, 40]},
    "e": {"dtype": "F16", "shape": [0, 7], "data_offsets": [40, 40]},
    "b": {"dtype": "BOOL", "shape": [3], "data_offsets": [40, 43]}
}"#;

fn valid() -> Vec<u8> {
    file(HEADER, &(0..43).collect::<Vec<u8>>())
}

#[test]
fn valid_file_round_trips() {
    let st = parse(valid()).unwrap();
    assert_eq!(st.metadata.len(), 2);
    assert_eq!(st.metadata["format"], "pt");
    assert_eq!(st.metadata["note"], "ünïcode");
    let expect = [
        ("w", DType::F32, vec![2, 3], 0..24),
        ("h", DType::BF16, vec![4], 24..32),
        ("s", DType::I64, vec![], 32..40),
        ("e", DType::F16, vec![0, 7], 40..40),
        ("b", DType::U8, vec![3], 40..43),
    ];
    assert_eq!(st.tensors.len(), expect.len());
    for (name, dtype, shape, bytes) in expect {
        let t = &st.tensors[name];
        assert_eq!(t.dtype, dtype, "{name}");
        assert_eq!(t.shape, shape, "{name}");
        assert_eq!(&*t.data, &bytes.map(|b| b as u8).collect::<Vec<_>>()[..], "{name}");
    }
}

#[test]
fn every_truncation_is_an_error() {
    let full = valid();
    for len in 0..full.len() {
        match catch_unwind(AssertUnwindSafe(|| parse(full[..len].to_vec()))) {
            Err(_) => panic!("parsing the first {len} of {} bytes panicked", full.len()),
            Ok(Ok(_)) => panic!("the first {len} of {} bytes parsed", full.len()),
            Ok(Err(_)) => {}
        }
    }
}

#[test]
fn shorter_than_the_length_prefix() {
    for len in 0..8 {
        let err = rejected(vec![0; len], "truncated");
        assert!(matches!(err, FormatError::Truncated { needed: 8, .. }), "{len} bytes: {err}");
    }
}

#[test]
fn header_length_larger_than_the_file() {
    let mut bytes = valid();
    let real = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    for claimed in [bytes.len() as u64, real + 44, 1 << 63, u64::MAX] {
        bytes[..8].copy_from_slice(&claimed.to_le_bytes());
        rejected(bytes.clone(), "does not fit");
    }
}

#[test]
fn header_is_not_json() {
    rejected(file("not json at all", &[]), "not valid JSON");
    rejected(file(r#"{"t": {"dtype": "F32""#, &[]), "not valid JSON");
    rejected(file("[1, 2, 3]", &[]), "not valid JSON");
    rejected(file("", &[]), "not valid JSON");
    // Invalid UTF-8 inside a string.
    let mut bytes = file(r#"{"ab": 1}"#, &[]);
    bytes[10] = 0xff;
    rejected(bytes, "not valid JSON");
    // Deep nesting hits serde_json's recursion limit rather than overflowing the stack.
    rejected(file(&"[".repeat(100_000), &[]), "not valid JSON");
}

#[test]
fn entry_is_not_a_tensor() {
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [1]}"#, 4), "tensor t");
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [1], "data_offsets": [0]}"#, 4), "tensor t");
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}"#, 4), "tensor t");
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}"#, 4), "tensor t");
    rejected(one_tensor("42", 4), "tensor t");
    rejected(file(r#"{"__metadata__": {"n": 1}}"#, &[]), "__metadata__");
}

#[test]
fn data_offsets_beyond_the_data() {
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}"#, 7), "do not match");
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [2], "data_offsets": [1000, 1008]}"#, 8), "do not match");
    let far = u64::MAX - 4;
    rejected(one_tensor(&format!(r#"{{"dtype": "F32", "shape": [1], "data_offsets": [{far}, {}]}}"#, far + 4), 8), "do not match");
}

#[test]
fn a_header_that_lies_about_sizes() {
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}"#, 24), "do not match");
    rejected(one_tensor(r#"{"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}"#, 16), "do not match");
    rejected(one_tensor(r#"{"dtype": "F32", "shape": [], "data_offsets": [0, 0]}"#, 4), "do not match");
}

#[test]
fn begin_after_end() {
    let err = rejected(one_tensor(r#"{"dtype": "U8", "shape": [4], "data_offsets": [8, 4]}"#, 8), "do not match");
    assert!(err.to_string().contains("[8, 4)"));
}

#[test]
fn shape_product_overflow() {
    let big = 1u64 << 32;
    rejected(one_tensor(&format!(r#"{{"dtype": "U8", "shape": [{big}, {big}, {big}], "data_offsets": [0, 0]}}"#), 0), "overflows");
    rejected(one_tensor(&format!(r#"{{"dtype": "F64", "shape": [{}], "data_offsets": [0, 0]}}"#, u64::MAX), 0), "overflows");
    rejected(one_tensor(&format!(r#"{{"dtype": "F32", "shape": [{}, 4], "data_offsets": [0, 0]}}"#, 1u64 << 62), 0), "overflows");
}

#[test]
fn unknown_dtype() {
    for dtype in ["F8_E4M3", "Q4_0", "f32", ""] {
        let entry = format!(r#"{{"dtype": "{dtype}", "shape": [1], "data_offsets": [0, 1]}}"#);
        rejected(one_tensor(&entry, 1), "unsupported safetensors dtype");
    }
}

#[test]
fn index_naming_files_outside_the_model() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("st-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let index = dir.join("model.safetensors.index.json");
    // `..` and `.` are single path components too, so a component count alone lets them through.
    for target in ["../etc/passwd", "/etc/passwd", "..", ".", "sub/model.safetensors"] {
        std::fs::write(&index, format!(r#"{{"weight_map": {{"w": "{target}"}}}}"#)).unwrap();
        let err = hearth_formats::safetensors::model_files(&dir).expect_err(target);
        assert!(err.to_string().contains("outside the model"), "{target}: {err}");
    }
    std::fs::write(&index, r#"{"weight_map": {"w": "model-00001.safetensors"}}"#).unwrap();
    assert_eq!(hearth_formats::safetensors::model_files(&dir).unwrap(), [dir.join("model-00001.safetensors")]);
    std::fs::remove_dir_all(&dir).unwrap();
}
