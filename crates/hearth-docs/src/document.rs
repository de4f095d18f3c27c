use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::ContentType;

/// A stretch of a document under one heading path (and, for PDF, on one page).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// The headings above this stretch, outermost first: `["Install", "Linux"]`.
    pub path: Vec<String>,
    /// 1-based PDF page.
    pub page: Option<u32>,
    /// Byte range into [`Document::text`].
    pub span: Range<usize>,
}

/// Plain text with its structure, extracted from a file or from posted content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Which record this is when one file holds many (a JSON array item or JSONL line): the
    /// record's id field if it has one, else `item:N` / `line:N` (1-based).
    pub key: Option<String>,
    pub title: Option<String>,
    pub content_type: ContentType,
    /// All the extracted text: blocks (paragraphs, list items, headings…) joined by a blank line.
    pub text: String,
    /// Consecutive, non-overlapping sections covering every block of `text`, in order.
    pub sections: Vec<Section>,
}

/// Builds a [`Document`] block by block, keeping the sections in step with the text.
#[derive(Default)]
pub(crate) struct DocumentBuilder {
    text: String,
    sections: Vec<Section>,
    /// Open headings with their levels (0 for a title above level-1 headings).
    headings: Vec<(u8, String)>,
    page: Option<u32>,
    /// False after a heading or a page break: the next block starts a new section.
    continues_section: bool,
}

impl DocumentBuilder {
    /// A document of plain text: paragraphs, no headings.
    pub fn from_paragraphs(text: &str) -> Self {
        let mut builder = DocumentBuilder::default();
        builder.push_paragraphs(text);
        builder
    }

    /// Opens a heading: it replaces any open heading of the same or a deeper level, and its
    /// text is the first block of its section. An empty heading changes nothing.
    pub fn heading(&mut self, level: u8, heading: &str) {
        let heading = collapse_whitespace(heading);
        if heading.is_empty() {
            return;
        }
        while self.headings.last().is_some_and(|(open, _)| *open >= level) {
            self.headings.pop();
        }
        self.headings.push((level, heading.clone()));
        self.continues_section = false;
        self.push_block(&heading);
    }

    pub fn start_page(&mut self, page: u32) {
        self.page = Some(page);
        self.continues_section = false;
    }

    /// Appends one block, trimmed; a blank one is dropped.
    pub fn push_block(&mut self, block: &str) {
        let block = block.trim();
        if block.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        let start = self.text.len();
        self.text.push_str(block);
        let end = self.text.len();
        match self.sections.last_mut() {
            Some(section) if self.continues_section => section.span.end = end,
            _ => {
                let path = self.headings.iter().map(|(_, heading)| heading.clone()).collect();
                self.sections.push(Section { path, page: self.page, span: start..end });
                self.continues_section = true;
            }
        }
    }

    /// Appends plain text as paragraphs: runs of non-blank lines, with trailing spaces (and
    /// carriage returns) cut from each line.
    pub fn push_paragraphs(&mut self, text: &str) {
        let mut paragraph = String::new();
        for line in text.lines().map(str::trim_end) {
            if line.is_empty() {
                self.push_block(&paragraph);
                paragraph.clear();
                continue;
            }
            if !paragraph.is_empty() {
                paragraph.push('\n');
            }
            paragraph.push_str(line);
        }
        self.push_block(&paragraph);
    }

    pub fn finish(self, content_type: ContentType, title: Option<&str>, key: Option<String>) -> Document {
        let title = title.map(collapse_whitespace).filter(|title| !title.is_empty());
        Document { key, title, content_type, text: self.text, sections: self.sections }
    }
}

/// Runs of whitespace (newlines included) become one space; the ends are trimmed.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
