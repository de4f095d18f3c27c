use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::document::DocumentBuilder;
use crate::formats::{docx, html, json, markdown, pdf};
use crate::{ContentType, DocError, Document, Result};

/// Limits and field names for extraction.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtractOptions {
    /// A larger file (or posted content) is refused before it is read.
    pub max_bytes: u64,
    /// What a DOCX (a zip archive) may inflate to: a defence against zip bombs.
    pub max_unpacked_bytes: u64,
    /// How long PDF parsing may take; a parser stuck on a hostile file is abandoned.
    pub pdf_timeout: Duration,
    /// JSON records: the string field holding the text.
    pub json_text_field: String,
    pub json_title_field: String,
    /// JSON records: the field (string or number) naming each record in a file of many.
    pub json_id_field: String,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            max_bytes: 64 << 20,
            max_unpacked_bytes: 256 << 20,
            pdf_timeout: Duration::from_secs(30),
            json_text_field: "text".into(),
            json_title_field: "title".into(),
            json_id_field: "id".into(),
        }
    }
}

/// Extracts the documents in a file, its type taken from its extension. Errors name the file.
pub fn extract_file(path: &Path, opts: &ExtractOptions) -> Result<Vec<Document>> {
    read_and_extract(path, opts).map_err(|error| error.in_file(path))
}

fn read_and_extract(path: &Path, opts: &ExtractOptions) -> Result<Vec<Document>> {
    let content_type = ContentType::from_path(path).ok_or(DocError::UnsupportedType)?;
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    check_size(size, opts.max_bytes)?;
    let mut bytes = Vec::with_capacity(size as usize);
    // The file may have grown since: read one byte past the limit so that extract_bytes refuses it.
    file.take(opts.max_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    extract_bytes(&bytes, content_type, opts)
}

/// Extracts the documents in `bytes`: one, or one per record for JSON arrays and JSON Lines.
pub fn extract_bytes(bytes: &[u8], content_type: ContentType, opts: &ExtractOptions) -> Result<Vec<Document>> {
    check_size(bytes.len() as u64, opts.max_bytes)?;
    let document = match content_type {
        ContentType::Text => DocumentBuilder::from_paragraphs(utf8(bytes)?).finish(ContentType::Text, None, None),
        ContentType::Markdown => markdown::extract(utf8(bytes)?),
        ContentType::Html => html::extract(bytes),
        ContentType::Pdf => pdf::extract(bytes, opts.pdf_timeout)?,
        ContentType::Docx => docx::extract(bytes, opts.max_unpacked_bytes)?,
        ContentType::Json => return json::extract(utf8(bytes)?, opts),
    };
    Ok(vec![document])
}

fn check_size(size: u64, limit: u64) -> Result<()> {
    if size > limit {
        return Err(DocError::TooLarge { size, limit });
    }
    Ok(())
}

/// The text of UTF-8 bytes, without a byte order mark.
pub(crate) fn utf8(bytes: &[u8]) -> Result<&str> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let (skipped, bytes) = match bytes.strip_prefix(BOM) {
        Some(rest) => (BOM.len(), rest),
        None => (0, bytes),
    };
    std::str::from_utf8(bytes).map_err(|error| DocError::InvalidUtf8 { offset: skipped + error.valid_up_to() })
}
