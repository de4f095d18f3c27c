mod common;

use common::*;
use hearth_tokenizer::{GgufVocab, Tokenizer};

fn stream_all(tok: &Tokenizer, ids: &[u32], skip: bool) -> Vec<String> {
    let mut dec = tok.stream_decoder(skip);
    let mut chunks: Vec<String> = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    chunks.push(dec.flush().unwrap());
    chunks
}

#[test]
fn streaming_equals_full_decode_on_fixtures() {
    let tok = smollm2();
    for (text, ids, _) in tokenize_cases() {
        for skip in [false, true] {
            let chunks = stream_all(&tok, &ids, skip);
            let full = tok.decode(&ids, skip).unwrap();
            assert_eq!(chunks.concat(), full, "{text:?} skip={skip}");
            if !full.contains(char::REPLACEMENT_CHARACTER) {
                for c in &chunks {
                    assert!(!c.contains(char::REPLACEMENT_CHARACTER), "{text:?}: chunk {c:?}");
                }
            }
        }
    }
}

#[test]
fn emoji_split_across_byte_tokens_is_held_back() {
    let tok = smollm2();
    let text = "🚀🔥";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.len() > 2, "emoji should need several byte tokens: {ids:?}");
    let chunks = stream_all(&tok, &ids, false);
    assert_eq!(chunks.concat(), text);
    assert!(chunks.iter().all(|c| !c.contains(char::REPLACEMENT_CHARACTER)), "{chunks:?}");
    // Something was held back: some pushes returned nothing.
    assert!(chunks.iter().any(String::is_empty));
}

#[test]
fn flush_emits_an_unfinished_character() {
    let tok = smollm2();
    let ids = tok.encode("🚀", false).unwrap();
    let mut dec = tok.stream_decoder(false);
    let first = dec.push(ids[0]).unwrap();
    assert_eq!(first, "");
    let rest = dec.flush().unwrap();
    assert_eq!(rest, tok.decode(&ids[..1], false).unwrap());
    assert_eq!(dec.flush().unwrap(), "");
}

/// SentencePiece decoders strip the leading space of what they decode; the window keeps the
/// spaces between words.
#[test]
fn sentencepiece_spaces_survive_streaming() {
    let mut tokens: Vec<String> =
        ["<unk>", "<s>", "</s>", "\u{2581}", "H", "e", "l", "o", "w", "r", "d"].iter().map(|s| s.to_string()).collect();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(
        [
            "\u{2581}Hello",
            "\u{2581}world",
            "\u{2581}H",
            "\u{2581}He",
            "\u{2581}Hel",
            "\u{2581}Hell",
            "\u{2581}w",
            "\u{2581}wo",
            "\u{2581}wor",
            "\u{2581}worl",
            "ll",
            "el",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let n = tokens.len();
    let mut types = vec![1; n];
    types[0] = 2;
    types[1] = 3;
    types[2] = 3;
    for t in types.iter_mut().skip(11).take(256) {
        *t = 6;
    }
    let scores = (0..n).map(|i| -(i as f32)).collect();
    let vocab = GgufVocab {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        ..Default::default()
    };
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    let text = "Hello world é";
    let ids = tok.encode(text, false).unwrap();
    let chunks = stream_all(&tok, &ids, false);
    assert_eq!(chunks.concat(), text);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}
