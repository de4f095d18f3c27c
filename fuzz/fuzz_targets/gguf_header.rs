//! GGUF parsing of arbitrary bytes: must return Ok or Err, never panic, and every tensor of a
//! file it accepts must lie inside the file.
#![no_main]

use hearth_formats::gguf::Gguf;
use hearth_formats::SharedBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = Gguf::parse(SharedBytes::from_vec(data.to_vec())) else { return };
    for info in &gguf.tensors {
        let bytes = gguf.tensor_data(info).expect("an accepted tensor's data is inside the file");
        assert_eq!(bytes.len() as u64, info.size, "tensor {}", info.name);
        // Read every byte, so a window onto memory outside the file would trip the sanitizer.
        std::hint::black_box(bytes.iter().fold(0u8, |acc, &b| acc ^ b));
        std::hint::black_box(info.shape());
    }
    let _ = gguf.architecture();
});
