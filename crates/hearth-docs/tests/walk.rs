//! Folder walks: supported files, include/exclude globs, no hidden folders, no symlinks.

mod common;

use std::path::{Path, PathBuf};

use hearth_docs::walk;

fn relative(root: &Path, files: Vec<PathBuf>) -> Vec<String> {
    files.iter().map(|file| file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/")).collect()
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "b.md",
        "a.txt",
        "notes/draft.md",
        "notes/final.PDF",
        "notes/deep/x.json",
        "image.png",
        "Makefile",
        ".git/HEAD.txt",
        ".git/objects/o.md",
        "notes/.cache/c.md",
        ".hidden.md",
    ] {
        common::write(dir.path(), name, "x");
    }
    dir
}

fn strings(patterns: &[&str]) -> Vec<String> {
    patterns.iter().map(|p| p.to_string()).collect()
}

#[test]
fn walk_lists_supported_files_sorted_without_hidden_folders() {
    let dir = tree();
    let files = walk(dir.path(), &[], &[]).unwrap();
    assert!(files.iter().all(|file| file.starts_with(dir.path())));
    assert_eq!(relative(dir.path(), files), [".hidden.md", "a.txt", "b.md", "notes/deep/x.json", "notes/draft.md", "notes/final.PDF"]);
}

#[test]
fn walk_honours_include_and_exclude() {
    let dir = tree();
    let markdown = walk(dir.path(), &strings(&["*.md"]), &[]).unwrap();
    assert_eq!(relative(dir.path(), markdown), [".hidden.md", "b.md", "notes/draft.md"]);

    let notes = walk(dir.path(), &strings(&["notes/**"]), &strings(&["**/draft.*", "**/*.json"])).unwrap();
    assert_eq!(relative(dir.path(), notes), ["notes/final.PDF"]);

    // Include narrows the supported files: an unsupported one is never listed.
    assert!(walk(dir.path(), &strings(&["*.png"]), &[]).unwrap().is_empty());
}

#[test]
fn walk_of_a_file_is_that_file() {
    let dir = tree();
    let file = dir.path().join("image.png");
    assert_eq!(walk(&file, &[], &[]).unwrap(), vec![file]);
}

#[test]
fn walk_errors_name_the_path_or_pattern() {
    let dir = tree();
    let missing = dir.path().join("nowhere");
    let error = walk(&missing, &[], &[]).unwrap_err().to_string();
    assert!(error.starts_with(&format!("{}: ", missing.display())), "{error}");
    let error = walk(dir.path(), &strings(&["a[b"]), &[]).unwrap_err().to_string();
    assert!(error.starts_with("invalid glob \"a[b\": "), "{error}");
}

#[cfg(unix)]
#[test]
fn walk_does_not_follow_symlinks() {
    let dir = tree();
    let outside = tempfile::tempdir().unwrap();
    common::write(outside.path(), "secret.md", "x");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.md"), dir.path().join("link.md")).unwrap();
    let files = relative(dir.path(), walk(dir.path(), &[], &[]).unwrap());
    assert!(!files.iter().any(|file| file.contains("link")), "{files:?}");
}
