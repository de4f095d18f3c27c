//! Builders for test inputs: real PDF and DOCX files made in the test, nothing checked in.
#![allow(dead_code)] // each test binary uses its own share of these

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use lopdf::content::{Content, Operation};
use lopdf::{dictionary, Object, Stream};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A PDF with one page per entry, each page's lines set one under the other in Helvetica.
pub fn pdf(title: Option<&str>, pages: &[&[&str]]) -> Vec<u8> {
    let mut doc = lopdf::Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for lines in pages {
        let mut operations = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("TL", vec![14.into()]),
            Operation::new("Td", vec![72.into(), 720.into()]),
        ];
        for line in *lines {
            operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
            operations.push(Operation::new("T*", vec![]));
        }
        operations.push(Operation::new("ET", vec![]));
        let content_id = doc.add_object(Stream::new(dictionary! {}, Content { operations }.encode().unwrap()));
        kids.push(doc.add_object(dictionary! { "Type" => "Page", "Parent" => pages_id, "Contents" => content_id }).into());
    }
    let count = kids.len() as i64;
    let pages = dictionary! {
        "Type" => "Pages",
        "Kids" => kids,
        "Count" => count,
        "Resources" => resources_id,
        "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
    };
    doc.objects.insert(pages_id, Object::Dictionary(pages));
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    if let Some(title) = title {
        let info_id = doc.add_object(dictionary! { "Title" => Object::string_literal(title) });
        doc.trailer.set("Info", info_id);
    }
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

/// A zip archive of the named members, deflated.
pub fn zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in members {
        zip.start_file(*name, deflated()).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A DOCX whose body holds these paragraphs, each with an optional style id.
pub fn docx(core_title: Option<&str>, paragraphs: &[(Option<&str>, &str)]) -> Vec<u8> {
    let body: String = paragraphs
        .iter()
        .map(|(style, text)| {
            let properties = style.map(|style| format!(r#"<w:pPr><w:pStyle w:val="{style}"/></w:pPr>"#)).unwrap_or_default();
            format!(r#"<w:p>{properties}<w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>"#)
        })
        .collect();
    let document = format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
    );
    let core = core_title.map(|title| {
        format!(r#"<?xml version="1.0" encoding="UTF-8"?><cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title></cp:coreProperties>"#)
    });
    let mut members = vec![("word/document.xml", document.as_bytes())];
    members.extend(core.as_deref().map(|core| ("docProps/core.xml", core.as_bytes())));
    zip(&members)
}

/// A DOCX whose `word/document.xml` is `size` zero bytes, deflated to a small fraction of that
/// (written in pieces, so making it needs little memory).
pub fn zip_bomb(size: usize) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("word/document.xml", deflated()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size / zeros.len() {
        zip.write_all(&zeros).unwrap();
    }
    zip.write_all(&zeros[..size % zeros.len()]).unwrap();
    zip.finish().unwrap().into_inner()
}

/// Rewrites the uncompressed sizes a zip declares (local header and central directory) to
/// `declared`, as a hostile archive would.
pub fn lie_about_unpacked_size(zip: &mut [u8], declared: u32) {
    const LOCAL_HEADER: &[u8] = b"PK\x03\x04";
    const CENTRAL_HEADER: &[u8] = b"PK\x01\x02";
    let find = |signature: &[u8]| zip.windows(4).rposition(|window| window == signature).unwrap();
    let local = find(LOCAL_HEADER) + 22;
    let central = find(CENTRAL_HEADER) + 24;
    zip[local..local + 4].copy_from_slice(&declared.to_le_bytes());
    zip[central..central + 4].copy_from_slice(&declared.to_le_bytes());
}
