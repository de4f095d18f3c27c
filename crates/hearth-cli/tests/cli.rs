//! The `hearth` binary end to end on a tiny GGUF model.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn tiny_gguf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/gguf/llama-Q8_0.gguf")
}

fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

#[test]
fn generate_streams_text_then_prints_speed_and_memory() {
    let out = hearth().args(["generate", "--max-tokens", "6", "--prompt", "Hello", "--model"]).arg(tiny_gguf()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for figure in ["Prompt:", "tokens-per-sec", "Generation: 6 tokens", "Peak memory:"] {
        assert!(stderr.contains(figure), "missing {figure:?} in {stderr}");
    }
    assert!(!out.stdout.is_empty());
}

#[test]
fn unknown_model_is_a_clear_error() {
    let out = hearth().args(["generate", "--model", "no-such-model", "--prompt", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such model"), "{stderr}");
}

#[test]
fn chat_keeps_the_conversation_across_turns() {
    let mut child = hearth()
        .args(["chat", "--verbose", "--max-tokens", "4", "--model"])
        .arg(tiny_gguf())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hi there\nAnd again\n/exit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cached: Vec<usize> = stderr.lines().filter_map(|l| l.split_once(" tokens (")?.1.split_once(" cached")?.0.parse().ok()).collect();
    assert_eq!(cached.len(), 2, "{stderr}");
    assert_eq!(cached[0], 0);
    assert!(cached[1] > 10, "the second turn re-used only {} cached tokens", cached[1]);
}
