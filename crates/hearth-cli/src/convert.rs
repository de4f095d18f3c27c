//! `hearth convert`: a model in another format (today: a float Hugging Face or MLX directory,
//! or a GGUF file, to an MLX directory, cast and optionally affine-quantised as
//! `mlx_lm.convert` does).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use hearth_convert::{Affine, FloatType, MlxOptions};

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    Mlx,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Source model: a Hugging Face or MLX float directory, a GGUF file (Llama, Mistral, Qwen2,
    /// Qwen3), or a name the store resolves.
    #[arg(long, short)]
    model: String,
    /// Output format.
    #[arg(long)]
    to: Target,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Quantise linear and embedding weights (MLX affine).
    #[arg(long, short)]
    quantize: bool,
    /// Bits per weight with --quantize: 2, 3, 4, 5, 6 or 8.
    #[arg(long, default_value_t = 4)]
    q_bits: u32,
    /// Weights per scale and bias with --quantize: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    q_group_size: usize,
    /// Cast weights to float16, bfloat16 or float32 first [default: each keeps its own].
    #[arg(long)]
    dtype: Option<String>,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let src = crate::store_cmd::resolve_model(&args.model)?;
    if src.is_file() {
        eprintln!("{}: GGUF blocks are de-quantised to float32 first", src.display());
    }
    let dtype = match args.dtype.as_deref() {
        None => None,
        Some(name) => Some(FloatType::parse(name).with_context(|| format!("--dtype must be float16, bfloat16 or float32, got {name:?}"))?),
    };
    let quantize = args.quantize.then_some(Affine { bits: args.q_bits, group_size: args.q_group_size });
    let Target::Mlx = args.to;
    let started = std::time::Instant::now();
    let report = hearth_convert::to_mlx(&src, &args.out, &MlxOptions { dtype, quantize, force: args.force })?;
    eprintln!(
        "wrote {} ({} tensors, {} quantised, {} of them GGUF blocks kept exactly, {:.1} MB) in {:.1} s",
        args.out.display(),
        report.tensors,
        report.quantized,
        report.kept,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
