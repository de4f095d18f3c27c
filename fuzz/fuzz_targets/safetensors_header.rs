//! safetensors parsing of arbitrary bytes: must return Ok or Err, never panic, and every
//! tensor of a file it accepts must have exactly the bytes its dtype and shape need.
#![no_main]

use hearth_formats::safetensors::SafeTensors;
use hearth_formats::SharedBytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(st) = SafeTensors::parse(SharedBytes::from_vec(data.to_vec())) else { return };
    for (name, view) in &st.tensors {
        let (row_len, rows) = match view.shape.split_last() {
            None => (1, 1),
            Some((&last, outer)) => (last as u64, outer.iter().map(|&d| d as u64).product()),
        };
        let size = hearth_formats::tensor_bytes(view.dtype, row_len, rows).expect("an accepted shape has a size");
        assert_eq!(view.data.len() as u64, size, "tensor {name}");
        // Read every byte, so a window onto memory outside the file would trip the sanitizer.
        std::hint::black_box(view.data.iter().fold(0u8, |acc, &b| acc ^ b));
    }
});
