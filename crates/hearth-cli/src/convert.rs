//! `hearth convert`, `hearth fuse` and `hearth quantize`: a model in another format or precision — MLX
//! (float or affine-quantised, as `mlx_lm.convert`), Hugging Face, or GGUF of llama.cpp's
//! common types (as `convert_hf_to_gguf.py` + `llama-quantize`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hearth_convert::{Affine, FloatType, GgufFileType, GgufOptions, MlxOptions, Report};

#[derive(Clone, Copy, ValueEnum)]
pub enum Target {
    Mlx,
    Hf,
    Gguf,
}

/// What MLX quantisation to apply.
#[derive(Args)]
pub struct MlxQuant {
    /// Bits per weight for MLX affine quantisation: 2, 3, 4, 5, 6 or 8.
    #[arg(long, default_value_t = 4)]
    q_bits: u32,
    /// Weights per scale and bias for MLX affine quantisation: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    q_group_size: usize,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// Source model: a Hugging Face or MLX float directory, a GGUF file, or a name the store
    /// resolves.
    #[arg(long, short)]
    model: String,
    /// Output format.
    #[arg(long)]
    to: Target,
    /// Output directory (MLX, Hugging Face) or file (GGUF).
    #[arg(long)]
    out: PathBuf,
    /// MLX: quantise linear and embedding weights (affine).
    #[arg(long, short)]
    quantize: bool,
    #[command(flatten)]
    mlx: MlxQuant,
    /// MLX/Hugging Face: cast weights to float16, bfloat16 or float32 first [default: each keeps its own].
    #[arg(long)]
    dtype: Option<String>,
    /// GGUF: the file type (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K).
    #[arg(long = "type", default_value = "F16")]
    file_type: String,
    /// GGUF: every matrix in the type's own block type (llama-quantize --pure).
    #[arg(long)]
    pure: bool,
    /// Merge this LoRA adapter (an mlx-lm adapter directory) into the weights (`hearth fuse`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct QuantizeArgs {
    /// Source model: a GGUF file (re-quantised to --type) or a float MLX/Hugging Face directory
    /// (MLX affine, --q-bits/--q-group-size), or a name the store resolves.
    #[arg(long, short)]
    model: String,
    /// Output file or directory.
    #[arg(long)]
    out: PathBuf,
    /// GGUF source: the file type (see `hearth convert --help`) [default: Q4_K_M].
    #[arg(long = "type")]
    file_type: Option<String>,
    /// GGUF: every matrix in the type's own block type.
    #[arg(long)]
    pure: bool,
    /// Directory source: bits per weight for MLX affine quantisation: 2, 3, 4, 5, 6 or 8.
    #[arg(long, default_value_t = 4)]
    q_bits: u32,
    /// Directory source: weights per scale and bias: 32, 64 or 128.
    #[arg(long, default_value_t = 64)]
    q_group_size: usize,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
}

fn file_type(name: &str) -> anyhow::Result<GgufFileType> {
    GgufFileType::parse(name).with_context(|| format!("--type must be one of {}, got {name:?}", GgufFileType::all_names().join(", ")))
}

fn done(out: &Path, report: &Report, started: std::time::Instant) {
    let kept = if report.kept > 0 { format!(", {} of them blocks kept exactly", report.kept) } else { String::new() };
    eprintln!(
        "wrote {} ({} tensors, {} quantised{kept}, {:.1} MB) in {:.1} s",
        out.display(),
        report.tensors,
        report.quantized,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let src = crate::store_cmd::resolve_model(&args.model)?;
    let dtype = match args.dtype.as_deref() {
        None => None,
        Some(name) => Some(FloatType::parse(name).with_context(|| format!("--dtype must be float16, bfloat16 or float32, got {name:?}"))?),
    };
    let started = std::time::Instant::now();
    let report = match args.to {
        Target::Mlx | Target::Hf => {
            if src.is_file() {
                eprintln!("{}: GGUF blocks are de-quantised to float32 first", src.display());
            }
            if let Target::Hf = args.to {
                anyhow::ensure!(!args.quantize, "--quantize applies to MLX output; Hugging Face output is float");
                let opts = MlxOptions { dtype, quantize: None, force: args.force, adapter: args.adapter };
                hearth_convert::to_hf(&src, &args.out, &opts)?
            } else {
                let quantize = args.quantize.then_some(Affine { bits: args.mlx.q_bits, group_size: args.mlx.q_group_size });
                hearth_convert::to_mlx(&src, &args.out, &MlxOptions { dtype, quantize, force: args.force, adapter: args.adapter })?
            }
        }
        Target::Gguf => {
            anyhow::ensure!(!args.quantize && dtype.is_none(), "GGUF output takes --type, not --quantize or --dtype");
            let opts = GgufOptions { file_type: file_type(&args.file_type)?, pure: args.pure, force: args.force, adapter: args.adapter };
            hearth_convert::to_gguf(&src, &args.out, &opts)?
        }
    };
    done(&args.out, &report, started);
    Ok(())
}

/// `hearth fuse`: a conversion with an adapter merged in, as `mlx_lm.fuse` does.
pub fn fuse(args: ConvertArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.adapter.is_some(), "hearth fuse needs --adapter <dir>");
    run(args)
}

/// A same-format conversion: a GGUF re-quantised, or an MLX/Hugging Face directory quantised.
pub fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    let src = crate::store_cmd::resolve_model(&args.model)?;
    let started = std::time::Instant::now();
    let report = if src.is_file() {
        let file_type = file_type(args.file_type.as_deref().unwrap_or("Q4_K_M"))?;
        let opts = GgufOptions { file_type, pure: args.pure, force: args.force, adapter: None };
        hearth_convert::to_gguf(&src, &args.out, &opts)?
    } else {
        // A directory becomes MLX affine: GGUF's options do not apply.
        anyhow::ensure!(
            args.file_type.is_none() && !args.pure,
            "--type and --pure apply to a GGUF source; a directory is quantised to MLX (--q-bits, --q-group-size)"
        );
        let quantize = Some(Affine { bits: args.q_bits, group_size: args.q_group_size });
        hearth_convert::to_mlx(&src, &args.out, &MlxOptions { quantize, force: args.force, ..MlxOptions::default() })?
    };
    done(&args.out, &report, started);
    Ok(())
}
