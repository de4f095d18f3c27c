//! Writes a random-weight Llama in Q4_K with the project's own GGUF writer, with SmolLM2's
//! tokenizer copied in so llama.cpp and Hearth both load it — a model of any size for
//! benchmarks, without downloading one.
//!
//!     cargo run --release -p hearth-engine --example random_llama -- OUT.gguf [hidden layers ffn heads kv_heads]
//!
//! The default shape (2048, 16, 8192, 32, 8; vocabulary 49,152) has about 1.1 B parameters.

use std::path::PathBuf;

use hearth_formats::gguf::{GgmlType, Gguf, GgufWriter, Value};
use hearth_kernels::quant::quantize_ggml;

/// xorshift64*: fast, reproducible, plenty for random weights.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// A `rows × cols` matrix of uniform weights in ±`scale`, quantised to Q4_K on two threads.
fn q4k_matrix(rows: usize, cols: usize, scale: f32, seed: u64) -> Vec<u8> {
    let halves: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|h| {
                s.spawn(move || {
                    let (r0, r1) = (h * rows / 2, (h + 1) * rows / 2);
                    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (h as u64 + 1));
                    let mut out = Vec::with_capacity((r1 - r0) * cols / 256 * 144);
                    let mut row = vec![0f32; cols];
                    for _ in r0..r1 {
                        row.iter_mut().for_each(|v| *v = rng.uniform() * scale);
                        quantize_ggml(GgmlType::Q4K, &row, &mut out);
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("quantiser thread")).collect()
    });
    halves.concat()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().ok_or("usage: random_llama OUT.gguf [hidden layers ffn heads kv_heads]")?);
    let dims: Vec<usize> = args[1..].iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [hidden, layers, ffn, heads, kv_heads] = match dims[..] {
        [] => [2048, 16, 8192, 32, 8],
        [a, b, c, d, e] => [a, b, c, d, e],
        _ => return Err("give all five dimensions or none".into()),
    };
    let head_dim = hidden / heads;
    let tok_src = hearth_store::installed_model("smollm2").ok_or("SmolLM2 is not installed: run scripts/fetch-test-models.sh")?;
    let source = Gguf::open(&tok_src)?;
    let vocab = source.get("tokenizer.ggml.tokens").and_then(Value::as_array).map_or(0, <[Value]>::len);

    let mut w = GgufWriter::new();
    let u32v = |v: usize| Value::U32(v as u32);
    w.metadata("general.architecture", Value::String("llama".into()))
        .metadata("general.name", Value::String(format!("random-llama-{hidden}x{layers}")))
        .metadata("general.file_type", Value::U32(15))
        .metadata("llama.context_length", u32v(4096))
        .metadata("llama.embedding_length", u32v(hidden))
        .metadata("llama.block_count", u32v(layers))
        .metadata("llama.feed_forward_length", u32v(ffn))
        .metadata("llama.attention.head_count", u32v(heads))
        .metadata("llama.attention.head_count_kv", u32v(kv_heads))
        .metadata("llama.rope.dimension_count", u32v(head_dim))
        .metadata("llama.rope.freq_base", Value::F32(500_000.0))
        .metadata("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .metadata("llama.vocab_size", u32v(vocab));
    for (key, value) in source.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        w.metadata(key.clone(), value.clone());
    }
    let norm = |n: usize| vec![1f32; n].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let init = 1.0 / (hidden as f32).sqrt();
    w.tensor("token_embd.weight", &[vocab, hidden], GgmlType::Q4K, q4k_matrix(vocab, hidden, init, 1))?;
    for l in 0..layers {
        let seed = 100 + 10 * l as u64;
        let kv = kv_heads * head_dim;
        w.tensor(format!("blk.{l}.attn_norm.weight"), &[hidden], GgmlType::F32, norm(hidden))?;
        w.tensor(format!("blk.{l}.attn_q.weight"), &[hidden, hidden], GgmlType::Q4K, q4k_matrix(hidden, hidden, init, seed))?;
        w.tensor(format!("blk.{l}.attn_k.weight"), &[kv, hidden], GgmlType::Q4K, q4k_matrix(kv, hidden, init, seed + 1))?;
        w.tensor(format!("blk.{l}.attn_v.weight"), &[kv, hidden], GgmlType::Q4K, q4k_matrix(kv, hidden, init, seed + 2))?;
        w.tensor(format!("blk.{l}.attn_output.weight"), &[hidden, hidden], GgmlType::Q4K, q4k_matrix(hidden, hidden, init, seed + 3))?;
        w.tensor(format!("blk.{l}.ffn_norm.weight"), &[hidden], GgmlType::F32, norm(hidden))?;
        w.tensor(format!("blk.{l}.ffn_gate.weight"), &[ffn, hidden], GgmlType::Q4K, q4k_matrix(ffn, hidden, init, seed + 4))?;
        w.tensor(format!("blk.{l}.ffn_up.weight"), &[ffn, hidden], GgmlType::Q4K, q4k_matrix(ffn, hidden, init, seed + 5))?;
        let down_init = 1.0 / (ffn as f32).sqrt();
        w.tensor(format!("blk.{l}.ffn_down.weight"), &[hidden, ffn], GgmlType::Q4K, q4k_matrix(hidden, ffn, down_init, seed + 6))?;
    }
    w.tensor("output_norm.weight", &[hidden], GgmlType::F32, norm(hidden))?;
    w.write_file(&out)?;
    let params = vocab * hidden + layers * (2 * hidden * hidden + 2 * kv_heads * head_dim * hidden + 3 * ffn * hidden);
    println!("{}: {:.2} B parameters, {:.0} MB", out.display(), params as f64 / 1e9, std::fs::metadata(&out)?.len() as f64 / 1e6);
    Ok(())
}
