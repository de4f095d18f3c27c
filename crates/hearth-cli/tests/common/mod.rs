//! What the model-writing CLI tests share: the fixtures' paths and `hearth` with its own home.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A path under testdata/tiny.
pub fn tiny(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(path)
}

/// `hearth` with its own home, offline.
pub fn hearth(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env("HEARTH_HOME", home).env("HF_HUB_OFFLINE", "1").env("HF_HUB_CACHE", home.join("no-hf-cache")).stdin(Stdio::null());
    c
}

/// Runs `cmd`, which must succeed; its stdout and stderr.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
