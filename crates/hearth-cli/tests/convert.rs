//! `hearth convert`, `hearth quantize` and `hearth fuse` as a user runs them: outputs recorded
//! in the store (`hearth list`, usable by name, unregistered by `hearth rm`), existing outputs
//! refused, and a disk that fills up mid-write leaving nothing under the final name.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn converted_models_are_listed_and_used_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let q8 = tmp.path().join("tiny-q8.gguf");
    let said = ok(hearth(&home).args(["quantize", "-m"]).arg(tiny("gguf/llama-F16.gguf")).args(["--type", "Q8_0", "--out"]).arg(&q8));
    assert!(said.contains("registered as local/tiny-q8"), "{said}");
    let mlx = tmp.path().join("mixed");
    let said = ok(hearth(&home)
        .args(["convert", "-m"])
        .arg(tiny("hf/llama"))
        .args(["--to", "mlx", "-q", "--quant-predicate", "mixed_3_6", "--q-group-size", "32", "--name", "tiny-mixed", "--out"])
        .arg(&mlx));
    assert!(said.contains("registered as local/tiny-mixed"), "{said}");
    let fused = tmp.path().join("fused");
    ok(hearth(&home)
        .args(["fuse", "-m"])
        .arg(&mlx)
        .args(["--to", "mlx", "--no-register", "--adapter"])
        .arg(tiny("lora/adapters"))
        .arg("--out")
        .arg(&fused));
    assert!(fused.join("model.safetensors").is_file());

    let list = ok(hearth(&home).arg("list"));
    let row = |name: &str| list.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} not in:\n{list}")).to_string();
    assert!(row("local/tiny-q8 ").contains("gguf") && row("local/tiny-q8 ").contains("Q8_0"), "{list}");
    assert!(row("local/tiny-mixed ").contains("mlx"), "{list}");
    assert!(!list.contains("fused"), "--no-register: {list}");
    let shown = ok(hearth(&home).args(["show", "local/tiny-q8"]));
    assert!(shown.contains("source:        converted") && shown.contains("tiny-q8.gguf"), "{shown}");

    // Used by name, as any model in the store.
    let text = ok(hearth(&home).args(["generate", "-m", "local/tiny-mixed", "--prompt", "Hello", "--max-tokens", "4", "--temp", "0"]));
    assert!(!text.is_empty());

    // An existing output is refused without --force, and registering it again replaces it.
    let again = fails(
        hearth(&home)
            .args(["quantize", "-m"])
            .arg(tiny("gguf/llama-F16.gguf"))
            .args(["--type", "Q4_0", "--out"])
            .arg(&q8)
            .output()
            .unwrap(),
    );
    assert!(again.contains("exists; pass --force"), "{again}");
    ok(hearth(&home).args(["quantize", "--force", "-m"]).arg(tiny("gguf/llama-F16.gguf")).args(["--type", "Q4_0", "--out"]).arg(&q8));
    assert!(ok(hearth(&home).arg("list")).lines().any(|l| l.starts_with("local/tiny-q8 ") && l.contains("Q4_0")));

    // Pruning the cache keeps local models (they have no snapshot), while their files exist.
    ok(hearth(&home).args(["cache", "prune"]));
    assert!(ok(hearth(&home).arg("list")).contains("local/tiny-mixed"));

    // `rm` unregisters; the files stay.
    let removed = ok(hearth(&home).args(["rm", "local/tiny-q8"]));
    assert!(removed.contains("left in place"), "{removed}");
    assert!(q8.is_file());
    assert!(!ok(hearth(&home).arg("list")).contains("local/tiny-q8"));
}

/// A write limit (`ulimit -f`, SIGXFSZ ignored so the write fails with EFBIG instead of
/// killing the process) stands in for a full disk: each conversion fails with the error, and
/// neither the output nor a temporary file is left.
#[test]
fn a_full_disk_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for (to, out) in [("gguf", "tiny.gguf"), ("mlx", "tiny-mlx"), ("hf", "tiny-hf")] {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("trap '' XFSZ; ulimit -f 512; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_hearth"))
            .args(["convert", "-m"])
            .arg(tiny("hf/llama"))
            .args(["--to", to, "--out"])
            .arg(out_dir.join(out))
            .env("HEARTH_HOME", &home)
            .stdin(Stdio::null());
        let err = fails(cmd.output().unwrap());
        assert!(err.contains("File too large"), "{to}: {err}");
        assert!(entries(&out_dir).is_empty(), "{to}: left {:?}", entries(&out_dir));
    }
}
