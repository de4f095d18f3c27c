mod common;

use common::*;
use hearth_tokenizer::{Tokenizer, TokenizerError};

#[test]
fn smollm2_fixture_ids_and_decodes() {
    let tok = smollm2();
    for (text, want, decoded) in tokenize_cases() {
        assert_eq!(tok.encode(&text, false).unwrap(), want, "encode {text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), decoded, "decode {text:?}");
    }
}

#[test]
fn smollm2_special_token_info() {
    let tok = smollm2();
    assert_eq!(tok.vocab_size(), 49152);
    // tokenizer_config.json next to tokenizer.json names them.
    assert_eq!(tok.bos_token().as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.id_to_token(1).as_deref(), Some("<|im_start|>"));
    assert!(tok.is_special(2));
    assert!(!tok.is_special(19556));
    assert_eq!(tok.id_to_token(u32::MAX), None);
    // Special tokens are dropped only when asked.
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi");
    // Its post-processor adds nothing, so both modes agree.
    assert_eq!(tok.encode("Hello", true).unwrap(), tok.encode("Hello", false).unwrap());
}

#[test]
fn malformed_files_are_errors() {
    let scratch = temp_dir();
    let dir = scratch.path();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 42").unwrap();
    let err = Tokenizer::from_file(&path).err().expect("must fail");
    assert!(matches!(err, TokenizerError::Load { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let missing = Tokenizer::from_file(&dir.join("nope.json")).err().expect("must fail");
    assert!(matches!(missing, TokenizerError::Io { .. }), "{missing}");
}

#[test]
fn out_of_range_ids_do_not_panic() {
    let tok = smollm2();
    // Unknown ids are skipped by the decoder rather than crashing it.
    assert_eq!(tok.decode(&[u32::MAX, 19556], false).unwrap(), "Hello");
}
