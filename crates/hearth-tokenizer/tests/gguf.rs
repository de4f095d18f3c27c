mod common;

use common::*;
use hearth_tokenizer::{GgufVocab, Tokenizer, TokenizerError};
use serde_json::Value;

/// SmolLM2's tokenizer.json re-expressed as the GGUF metadata llama.cpp's converter writes.
fn smollm2_as_gguf() -> GgufVocab {
    let json = read_json(testdata("tiny/hf/llama/tokenizer.json"));
    let vocab = json["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (text, id) in vocab {
        tokens[id.as_u64().unwrap() as usize] = text.clone();
    }
    let mut types = vec![1; tokens.len()];
    for added in json["added_tokens"].as_array().unwrap() {
        types[added["id"].as_u64().unwrap() as usize] = 3;
    }
    let merges = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            Value::String(s) => s.clone(),
            Value::Array(pair) => format!("{} {}", pair[0].as_str().unwrap(), pair[1].as_str().unwrap()),
            other => panic!("merge {other}"),
        })
        .collect();
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types: Some(types),
        merges: Some(merges),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        pad_id: Some(2),
        add_bos: Some(false),
        ..Default::default()
    }
}

#[test]
fn gguf_gpt2_vocab_matches_tokenizer_json() {
    let vocab = smollm2_as_gguf();
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    let reference = smollm2();
    assert_eq!(tok.vocab_size(), reference.vocab_size());
    assert_eq!(tok.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert!(tok.is_special(1) && !tok.is_special(100));
    for (text, want, decoded) in tokenize_cases() {
        assert_eq!(tok.encode(&text, false).unwrap(), want, "encode {text:?}");
        assert_eq!(tok.encode(&text, true).unwrap(), want, "add_bos=false {text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), decoded, "decode {text:?}");
    }
    // Digits are split one by one (llama.cpp's smollm rules) even after a space.
    assert_eq!(tok.encode("x 2024", false).unwrap(), reference.encode("x 2024", false).unwrap());
}

#[test]
fn gguf_add_bos_prepends_bos() {
    let vocab = GgufVocab { add_bos: Some(true), ..smollm2_as_gguf() };
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    assert_eq!(tok.encode("Hello, world!", true).unwrap(), vec![1, 19556, 28, 905, 17]);
    assert_eq!(tok.encode("Hello, world!", false).unwrap(), vec![19556, 28, 905, 17]);
    let eos = GgufVocab { add_eos: Some(true), ..vocab };
    let tok = Tokenizer::from_gguf(&eos).unwrap();
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![1, 19556, 2]);
}

#[test]
fn gguf_other_pre_tokenizers_build() {
    // The SmolLM2 vocabulary is only a vehicle here: what matters is that every supported rule
    // set compiles and splits as its regex says.
    for pre in ["default", "gpt-2", "llama-bpe", "llama3", "qwen2", "deepseek-coder", "falcon", "starcoder"] {
        let vocab = GgufVocab { pre: Some(pre.into()), ..smollm2_as_gguf() };
        let tok = Tokenizer::from_gguf(&vocab).unwrap_or_else(|e| panic!("{pre}: {e}"));
        let text = "Hello, world! It's 2024.\n\n  ok";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{pre}");
    }
    let qwen = Tokenizer::from_gguf(&GgufVocab { pre: Some("qwen2".into()), ..smollm2_as_gguf() }).unwrap();
    let llama3 = Tokenizer::from_gguf(&GgufVocab { pre: Some("llama-bpe".into()), ..smollm2_as_gguf() }).unwrap();
    // llama3 keeps up to three digits together, qwen2 splits every digit.
    let word_count = |t: &Tokenizer| t.encode("12345", false).unwrap().len();
    assert_eq!(word_count(&qwen), 5);
    assert!(word_count(&llama3) >= 2);
}

#[test]
fn gguf_errors_are_clear() {
    let err = |v: GgufVocab| Tokenizer::from_gguf(&v).err().expect("must fail");

    let e = err(GgufVocab { model: "t5".into(), ..smollm2_as_gguf() });
    assert!(matches!(e, TokenizerError::UnsupportedModel(ref m) if m == "t5"), "{e}");

    let e = err(GgufVocab { pre: Some("mystery".into()), ..smollm2_as_gguf() });
    assert!(e.to_string().contains("mystery"), "{e}");

    let e = err(GgufVocab { scores: Some(vec![0.0; 3]), ..smollm2_as_gguf() });
    assert!(e.to_string().contains("scores"), "{e}");

    let e = err(GgufVocab { token_types: Some(vec![1; 3]), ..smollm2_as_gguf() });
    assert!(e.to_string().contains("token_type"), "{e}");

    let mut v = smollm2_as_gguf();
    v.merges.as_mut().unwrap()[0] = "nosuchtoken alsonot".into();
    let e = err(v);
    assert!(e.to_string().contains("nosuchtoken"), "{e}");

    let mut v = smollm2_as_gguf();
    v.merges.as_mut().unwrap()[0] = "nospace".into();
    assert!(err(v).to_string().contains("nospace"));

    let e = err(GgufVocab { merges: None, ..smollm2_as_gguf() });
    assert!(e.to_string().contains("merges"), "{e}");

    let e = err(GgufVocab { bos_id: Some(1_000_000), ..smollm2_as_gguf() });
    assert!(e.to_string().contains("bos_token_id"), "{e}");

    let e = err(GgufVocab { bos_id: None, add_bos: Some(true), ..smollm2_as_gguf() });
    assert!(e.to_string().contains("add_bos_token"), "{e}");

    let mut v = smollm2_as_gguf();
    v.tokens[5] = v.tokens[6].clone();
    assert!(err(v).to_string().contains("twice"));

    let e = err(GgufVocab::default());
    assert!(matches!(e, TokenizerError::InvalidVocab(_)), "{e}");
}

/// A tiny SentencePiece vocabulary: 3 specials, 256 byte tokens, then pieces with scores.
fn spm_vocab(pieces: &[(&str, f32)]) -> GgufVocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut scores = vec![0.0, 0.0, 0.0];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        scores.push(0.0);
        types.push(6);
    }
    for (piece, score) in pieces {
        tokens.push(piece.to_string());
        scores.push(*score);
        types.push(1);
    }
    GgufVocab {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        ..Default::default()
    }
}

#[test]
fn spm_round_trip_byte_fallback_and_merge_priority() {
    let pieces = [
        ("\u{2581}", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("c", -2.0),
        ("\u{2581}a", -3.0),
        ("ab", -5.0),
        ("bc", -4.0), // scores higher than "ab"
        ("\u{2581}ab", -6.0),
    ];
    let vocab = spm_vocab(&pieces);
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    let id = |p: &str| tok.token_to_id(p).unwrap();

    // llama.cpp on "▁abc": the best pair is "▁a" (-3); then "bc" (-4) beats "▁ab" (-6), and
    // "▁a"+"bc" is no piece, so the result is [▁a, bc].
    assert_eq!(tok.encode("abc", false).unwrap(), vec![id("\u{2581}a"), id("bc")]);
    // Without "bc", "▁a"+"b" -> "▁ab" wins instead.
    let no_bc: Vec<_> = pieces.iter().copied().filter(|(p, _)| *p != "bc").collect();
    let tok2 = Tokenizer::from_gguf(&spm_vocab(&no_bc)).unwrap();
    let id2 = |p: &str| tok2.token_to_id(p).unwrap();
    assert_eq!(tok2.encode("abc", false).unwrap(), vec![id2("\u{2581}ab"), id2("c")]);

    // add_bos defaults to true for SentencePiece.
    assert_eq!(tok.encode("a", true).unwrap(), vec![1, id("\u{2581}a")]);
    assert_eq!(tok.bos_token().as_deref(), Some("<s>"));

    // Byte fallback: "é" is not a piece, so it becomes its UTF-8 bytes.
    let ids = tok.encode("a é", false).unwrap();
    assert_eq!(ids, vec![id("\u{2581}a"), id("\u{2581}"), 3 + 0xC3, 3 + 0xA9]);

    for text in ["abc", "a b c", "cab  bca", "é🚀 x", "", " leading"] {
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text, "{text:?}");
    }
    // Special tokens in text are matched and get the prefix space after them, like llama.cpp.
    assert_eq!(tok.encode("<s>a", false).unwrap(), vec![1, id("\u{2581}a")]);
    assert_eq!(tok.decode(&[1, id("\u{2581}a")], true).unwrap(), "a");
}

#[test]
fn spm_without_space_prefix() {
    let vocab = GgufVocab { add_space_prefix: Some(false), ..spm_vocab(&[("\u{2581}", -1.0), ("a", -2.0), ("\u{2581}a", -3.0)]) };
    let tok = Tokenizer::from_gguf(&vocab).unwrap();
    assert_eq!(tok.encode("a a", false).unwrap(), vec![tok.token_to_id("a").unwrap(), tok.token_to_id("\u{2581}a").unwrap()]);
    assert_eq!(tok.decode(&tok.encode(" a", false).unwrap(), false).unwrap(), " a");
}
