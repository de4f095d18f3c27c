use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DocError;

/// The formats this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    /// A JSON object, an array of objects, or JSON Lines.
    Json,
}

impl ContentType {
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Text => "text",
            ContentType::Markdown => "markdown",
            ContentType::Html => "html",
            ContentType::Pdf => "pdf",
            ContentType::Docx => "docx",
            ContentType::Json => "json",
        }
    }

    /// The type a file's extension (any case) names, if it is one this crate reads.
    pub fn from_path(path: &Path) -> Option<ContentType> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        Self::from_name(&extension)
    }

    /// Type names and file extensions name the same types, so one table serves both.
    fn from_name(name: &str) -> Option<ContentType> {
        Some(match name {
            "text" | "txt" | "text/plain" => ContentType::Text,
            "markdown" | "md" | "text/markdown" => ContentType::Markdown,
            "html" | "htm" | "text/html" => ContentType::Html,
            "pdf" | "application/pdf" => ContentType::Pdf,
            "docx" | "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => ContentType::Docx,
            "json" | "jsonl" | "application/json" | "application/jsonl" | "application/x-ndjson" => ContentType::Json,
            _ => return None,
        })
    }
}

/// Parses a type name ("markdown"), a file extension ("md") or a MIME type ("text/markdown"),
/// in any case.
impl FromStr for ContentType {
    type Err = DocError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(&name.trim().to_ascii_lowercase()).ok_or_else(|| DocError::UnknownContentType(name.to_string()))
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
