//! Broken and hostile files give errors a user understands, naming the file.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use hearth_docs::{extract_bytes, extract_file, run_isolated, ContentType, DocError, ExtractOptions};

fn error_for(path: &Path, opts: &ExtractOptions) -> String {
    let error = extract_file(path, opts).expect_err("extraction should fail");
    assert!(matches!(error, DocError::File { .. }), "{error:?}");
    error.to_string()
}

fn assert_message(message: &str, file_name: &str, expected: &str) {
    assert!(message.contains(file_name), "{message:?} does not name {file_name}");
    assert!(message.contains(expected), "{message:?} does not say {expected:?}");
}

#[test]
fn unsupported_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "file.xyz", "text");
    assert_eq!(error_for(&path, &ExtractOptions::default()), format!("{}: unsupported file type", path.display()));
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let message = error_for(&dir.path().join("gone.txt"), &ExtractOptions::default());
    assert_message(&message, "gone.txt", "No such file");
}

#[test]
fn invalid_utf8_reports_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "notes.txt", b"fine text \xff\xfe broken");
    assert_message(&error_for(&path, &ExtractOptions::default()), "notes.txt", "notes.txt: not valid UTF-8 (byte 10)");
    // The offset counts a byte order mark.
    let error = extract_bytes(b"\xEF\xBB\xBFab\xc3", ContentType::Markdown, &ExtractOptions::default()).unwrap_err();
    assert_eq!(error.to_string(), "not valid UTF-8 (byte 5)");
}

#[test]
fn oversize_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.txt");
    // Sparse: 200 MiB of size and no data, so reading it would be slow and show up here.
    File::create(&path).unwrap().set_len(200 << 20).unwrap();
    let started = Instant::now();
    let message = error_for(&path, &ExtractOptions::default());
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_message(&message, "big.txt", "big.txt: 209715200 bytes is over the 67108864-byte limit");
    let posted = extract_bytes(b"12345", ContentType::Text, &ExtractOptions { max_bytes: 4, ..ExtractOptions::default() }).unwrap_err();
    assert_eq!(posted.to_string(), "5 bytes is over the 4-byte limit");
}

#[test]
fn truncated_pdf() {
    let dir = tempfile::tempdir().unwrap();
    let pdf = common::pdf(None, &[&["Page one."], &["Page two."]]);
    let path = common::write(dir.path(), "report.pdf", &pdf[..pdf.len() / 2]);
    assert_message(&error_for(&path, &ExtractOptions::default()), "report.pdf", "report.pdf: PDF parser failed: ");
}

#[test]
fn garbage_named_pdf() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let path = common::write(dir.path(), "garbage.pdf", garbage);
    assert_message(&error_for(&path, &ExtractOptions::default()), "garbage.pdf", "garbage.pdf: PDF parser failed: ");
}

#[test]
fn isolation_turns_panics_and_hangs_into_errors() {
    let crashed = run_isolated("PDF", Duration::from_secs(5), || -> hearth_docs::Result<()> { panic!("bad xref") }).unwrap_err();
    assert_eq!(crashed.to_string(), "PDF parser failed: it crashed: bad xref");

    let started = Instant::now();
    let hung = run_isolated("PDF", Duration::from_millis(100), || {
        std::thread::sleep(Duration::from_secs(5));
        Ok(())
    })
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert!(matches!(hung, DocError::Timeout { format: "PDF", .. }), "{hung:?}");
    assert_eq!(hung.to_string(), "PDF parsing timed out after 100ms");
    assert_eq!(DocError::Timeout { format: "PDF", timeout: Duration::from_secs(30) }.to_string(), "PDF parsing timed out after 30s");

    assert_eq!(run_isolated("PDF", Duration::from_secs(5), || Ok(42)).unwrap(), 42);
}

#[test]
fn docx_that_is_not_a_zip() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "letter.docx", "I am plain text, not a zip archive.");
    assert_message(&error_for(&path, &ExtractOptions::default()), "letter.docx", "letter.docx: DOCX parser failed: not a zip archive");
}

#[test]
fn zip_without_document_xml() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "photos.docx", common::zip(&[("image.png", b"\x89PNG")]));
    assert_message(&error_for(&path, &ExtractOptions::default()), "photos.docx", "word/document.xml is missing");
}

#[test]
fn zip_bomb_is_refused_by_its_declared_size() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = common::zip_bomb(300 << 20);
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let path = common::write(dir.path(), "bomb.docx", &bomb);
    // The default limit: refused before inflating anything.
    assert_message(&error_for(&path, &ExtractOptions::default()), "bomb.docx", "bomb.docx: unpacks to more than 268435456 bytes");
}

#[test]
fn zip_bomb_that_lies_about_its_size_is_cut_off_while_inflating() {
    let dir = tempfile::tempdir().unwrap();
    let mut bomb = common::zip_bomb(300 << 20);
    common::lie_about_unpacked_size(&mut bomb, 100);
    let path = common::write(dir.path(), "bomb.docx", &bomb);
    let opts = ExtractOptions { max_unpacked_bytes: 1 << 20, ..ExtractOptions::default() };
    let message = error_for(&path, &opts);
    // The zip crate stops at the declared size itself; the budget is the backstop.
    assert!(message.starts_with(&format!("{}: ", path.display())), "{message}");
    assert!(message.contains("declared uncompressed size") || message.contains("unpacks to more than 1048576 bytes"), "{message}");
}

#[test]
fn json_lines_with_a_record_missing_the_text_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write(dir.path(), "data.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"wrong field\"}\n");
    assert_message(&error_for(&path, &ExtractOptions::default()), "data.jsonl", "data.jsonl: line 2: no string field \"text\"");

    let path = common::write(dir.path(), "broken.jsonl", "{\"text\": \"ok\"}\n{\"text\": \n");
    assert_message(&error_for(&path, &ExtractOptions::default()), "broken.jsonl", "broken.jsonl: line 2: invalid JSON");

    let array = extract_bytes(br#"[{"text": "ok"}, {"title": "no text"}]"#, ContentType::Json, &ExtractOptions::default()).unwrap_err();
    assert_eq!(array.to_string(), "item 2: no string field \"text\"");

    let broken = extract_bytes(b"{\n  \"text\": \"unterminated\n", ContentType::Json, &ExtractOptions::default()).unwrap_err();
    assert!(broken.to_string().starts_with("JSON parser failed: "), "{broken}");
}
