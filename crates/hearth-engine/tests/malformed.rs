//! Broken model files, loaded the way a user loads them: each must fail with a message that
//! says what is wrong (printed, so `cargo test -- --nocapture` shows what a user would see),
//! never with a panic.

use std::path::{Path, PathBuf};

use hearth_engine::LoadedModel;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("malformed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Loads a model that must not load; returns the error message after printing it.
fn load_error(path: &Path, case: &str) -> String {
    match LoadedModel::load(path) {
        Ok(_) => panic!("{case}: {} loaded", path.display()),
        Err(e) => {
            let msg = e.to_string();
            eprintln!("{case}: {msg}");
            msg
        }
    }
}

fn assert_mentions(msg: &str, any_of: &[&str]) {
    assert!(any_of.iter().any(|n| msg.contains(n)), "{msg:?} mentions none of {any_of:?}");
}

#[test]
fn truncated_gguf() {
    let full = std::fs::read(testdata("tiny/gguf/llama-Q4_0.gguf")).unwrap();
    let dir = scratch("truncated-gguf");
    // Inside the magic, the version, the counts, the metadata, the tensor table and the data.
    for cut in [0, 3, 6, 20, 100, 4096, 64 << 10, full.len() / 2, full.len() - 1] {
        let path = dir.join(format!("cut-{cut}.gguf"));
        std::fs::write(&path, &full[..cut]).unwrap();
        let msg = load_error(&path, &format!("GGUF cut to {cut} bytes"));
        assert_mentions(&msg, &["truncated", "past the end", "exceeds"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gguf_with_wrong_magic() {
    let mut bytes = std::fs::read(testdata("tiny/gguf/llama-Q4_0.gguf")).unwrap();
    bytes[..4].copy_from_slice(b"GGML");
    let dir = scratch("magic");
    let path = dir.join("model.gguf");
    std::fs::write(&path, &bytes).unwrap();
    assert_mentions(&load_error(&path, "wrong magic"), &["not a GGUF file"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_path() {
    let dir = scratch("missing");
    assert_mentions(&load_error(&dir.join("nowhere.gguf"), "missing file"), &["nowhere.gguf"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of the tiny Llama directory, to be broken by the caller.
fn llama_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    for entry in std::fs::read_dir(testdata("tiny/hf/llama")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn intact_copy_loads() {
    // Guards the tests below: they fail for the damage they do, not for the copying.
    let dir = llama_dir("intact");
    assert!(LoadedModel::load(&dir).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_without_hidden_size() {
    let dir = llama_dir("no-hidden-size");
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, config.to_string()).unwrap();
    assert_mentions(&load_error(&dir, "config.json without hidden_size"), &["\"hidden_size\""]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_is_not_json() {
    let dir = llama_dir("config-not-json");
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"llama\", oops").unwrap();
    assert_mentions(&load_error(&dir, "config.json not JSON"), &["config.json"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncated_safetensors() {
    let dir = llama_dir("truncated-safetensors");
    let path = dir.join("model.safetensors");
    let full = std::fs::read(&path).unwrap();
    for cut in [0, 5, 8, 100, full.len() / 2, full.len() - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        let msg = load_error(&dir, &format!("model.safetensors cut to {cut} bytes"));
        assert_mentions(&msg, &["model.safetensors"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn index_pointing_outside_the_model() {
    let dir = llama_dir("index-escape");
    for target in ["../etc/passwd", "/etc/passwd", "..", "."] {
        let index = serde_json::json!({ "weight_map": { "model.embed_tokens.weight": target } });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        let msg = load_error(&dir, &format!("index naming {target:?}"));
        assert_mentions(&msg, &["outside the model"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
