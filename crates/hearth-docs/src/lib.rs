//! Documents for the knowledge base: files and posted content (text, Markdown, HTML, PDF,
//! DOCX, JSON and JSON Lines) become plain text with its structure — a [`Document`] whose
//! [`Section`]s carry heading paths and PDF pages — and documents become [`Chunk`]s sized for
//! an embedding model.
//!
//! [`extract_file`] reads one file (refusing one over [`ExtractOptions::max_bytes`] before
//! reading it), [`extract_bytes`] posted content; [`walk`] lists the files of a folder;
//! [`chunk`] splits a document. Hostile files give errors, not crashes or stalls: zip bombs are
//! cut off at [`ExtractOptions::max_unpacked_bytes`], HTML nested deeper than browsers allow is
//! flattened, and the PDF parser runs in [`run_isolated`], where a panic or a hang becomes an
//! error (and at most [`MAX_ABANDONED_PARSERS`] hung parser threads are left running).

mod chunk;
mod content_type;
mod document;
mod error;
mod extract;
mod formats;
mod isolate;
mod walk;

pub use chunk::{chunk, Chunk, ChunkOptions};
pub use content_type::ContentType;
pub use document::{Document, Section};
pub use error::{DocError, Result};
pub use extract::{extract_bytes, extract_file, ExtractOptions};
pub use isolate::{run_isolated, MAX_ABANDONED_PARSERS};
pub use walk::walk;
