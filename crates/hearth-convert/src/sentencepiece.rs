//! The pieces of a SentencePiece model file (`tokenizer.model`, a protobuf `ModelProto`): each
//! piece's text, score and type, which is what llama.cpp's SentencePiece vocabulary holds.

use std::path::Path;

use crate::{io, ConvertError};

/// A piece's type, numbered as sentencepiece_model.proto (and llama.cpp's token types) number them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

pub(crate) struct Piece {
    pub text: String,
    pub score: f32,
    pub kind: PieceType,
}

fn bad(path: &Path, what: &str) -> ConvertError {
    ConvertError::Unsupported(format!("{}: not a SentencePiece model ({what})", path.display()))
}

/// A protobuf message's fields: (field number, wire type, payload), varints decoded.
struct Fields<'a> {
    data: &'a [u8],
}

enum Payload<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
    Fixed64,
}

fn varint(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<(u64, Payload<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let field = (|| {
            let key = varint(&mut self.data)?;
            let payload = match key & 7 {
                0 => Payload::Varint(varint(&mut self.data)?),
                1 => {
                    self.data = self.data.get(8..)?;
                    Payload::Fixed64
                }
                2 => {
                    let len = usize::try_from(varint(&mut self.data)?).ok()?;
                    let (bytes, rest) = (self.data.get(..len)?, self.data.get(len..)?);
                    self.data = rest;
                    Payload::Bytes(bytes)
                }
                5 => {
                    let (bytes, rest) = (self.data.get(..4)?, self.data.get(4..)?);
                    self.data = rest;
                    Payload::Fixed32(bytes.try_into().ok()?)
                }
                _ => return None,
            };
            Some((key >> 3, payload))
        })();
        if field.is_none() {
            self.data = &[];
        }
        Some(field)
    }
}

/// Every piece of the model at `path`, in id order.
pub(crate) fn pieces(path: &Path) -> Result<Vec<Piece>, ConvertError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let mut out = Vec::new();
    for field in (Fields { data: &data }) {
        let (number, payload) = field.ok_or_else(|| bad(path, "malformed protobuf"))?;
        // ModelProto field 1: `repeated SentencePiece pieces`; the rest are the trainer's and
        // normaliser's settings.
        let (1, Payload::Bytes(message)) = (number, payload) else { continue };
        let mut piece = Piece { text: String::new(), score: 0.0, kind: PieceType::Normal };
        for field in (Fields { data: message }) {
            match field.ok_or_else(|| bad(path, "malformed piece"))? {
                (1, Payload::Bytes(text)) => {
                    piece.text = String::from_utf8(text.to_vec()).map_err(|_| bad(path, "a piece is not UTF-8"))?;
                }
                (2, Payload::Fixed32(bytes)) => piece.score = f32::from_le_bytes(bytes),
                (3, Payload::Varint(kind)) => {
                    piece.kind = match kind {
                        1 => PieceType::Normal,
                        2 => PieceType::Unknown,
                        3 => PieceType::Control,
                        4 => PieceType::UserDefined,
                        5 => PieceType::Unused,
                        6 => PieceType::Byte,
                        _ => return Err(bad(path, "unknown piece type")),
                    }
                }
                _ => {}
            }
        }
        out.push(piece);
    }
    if out.is_empty() {
        return Err(bad(path, "no pieces"));
    }
    Ok(out)
}
