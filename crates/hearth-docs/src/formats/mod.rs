//! One module per format that needs more than splitting text into paragraphs.

pub(crate) mod docx;
pub(crate) mod html;
pub(crate) mod json;
pub(crate) mod markdown;
pub(crate) mod pdf;
