use std::time::Duration;

use crate::document::DocumentBuilder;
use crate::isolate::run_isolated;
use crate::{ContentType, DocError, Document, Result};

/// Each page is a section; the title is the Info dictionary's /Title.
pub(crate) fn extract(bytes: &[u8], timeout: Duration) -> Result<Document> {
    // The parser thread may outlive this call (on timeout), so it gets its own copy.
    let bytes = bytes.to_vec();
    let pdf = run_isolated("PDF", timeout, move || parse(&bytes))?;
    let mut doc = DocumentBuilder::default();
    for (page, text) in &pdf.pages {
        doc.start_page(*page);
        doc.push_paragraphs(text);
    }
    Ok(doc.finish(ContentType::Pdf, pdf.title.as_deref(), None))
}

struct ParsedPdf {
    title: Option<String>,
    /// Page number (1-based) and text.
    pages: Vec<(u32, String)>,
}

fn parse(bytes: &[u8]) -> Result<ParsedPdf> {
    let failed = |message: String| DocError::Parse { format: "PDF", message };
    let mut pdf = lopdf::Document::load_mem(bytes).map_err(|error| failed(error.to_string()))?;
    // Many PDFs are encrypted with an empty password only to restrict printing or copying.
    if pdf.is_encrypted() && pdf.decrypt("").is_err() {
        return Err(failed("the file is encrypted with a password".into()));
    }
    let pages = pdf
        .get_pages()
        .into_keys()
        .map(|page| {
            let mut text = String::new();
            pdf_extract::output_doc_page(&pdf, &mut pdf_extract::PlainTextOutput::new(&mut text), page)
                .map_err(|error| failed(format!("page {page}: {error}")))?;
            Ok((page, text))
        })
        .collect::<Result<_>>()?;
    Ok(ParsedPdf { title: info_title(&pdf), pages })
}

fn info_title(pdf: &lopdf::Document) -> Option<String> {
    let info = pdf.dereference(pdf.trailer.get(b"Info").ok()?).ok()?.1.as_dict().ok()?;
    let title = pdf.dereference(info.get(b"Title").ok()?).ok()?.1;
    // lopdf keeps the byte order mark of UTF-8 strings.
    Some(lopdf::decode_text_string(title).ok()?.trim_start_matches('\u{feff}').to_string())
}
