//! Fine-tuning Hearth's models: LoRA adapters trained on a frozen base kept in its stored format
//! (float or quantised: its products de-quantise a panel at a time, never the whole model, or
//! under [`hearth_kernels::Precision::Fast`] run quantised weights on 8-bit integers as
//! inference does), with mlx-lm's loss, layer choice, adapter layout and optimiser, so that the
//! numbers are theirs.
//!
//! - [`Lora`]: the trainable adapters (mlx-lm's `lora_a` `[in, r]`, `lora_b` `[r, out]`).
//! - [`TrainModel`]: the base model; [`TrainModel::loss_and_grads`] runs the decoder forward,
//!   saving what the backward pass needs, and back again.
//! - [`Batch`] and mlx-lm's masked cross-entropy ([`loss`]).
//! - [`Optimizer`]: mlx's Adam, AdamW and SGD with its learning-rate schedules.

mod adapter;
mod backward;
pub mod data;
mod export;
mod linalg;
pub mod loss;
mod model;
mod optim;
pub mod run;
pub mod trainer;

pub use adapter::{Lora, LoraLayer};
pub use export::AdapterFormat;
pub use loss::Batch;
pub use model::{Step, TrainModel};
pub use optim::{Optimizer, Rule, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] hearth_engine::EngineError),
    #[error(transparent)]
    Format(#[from] hearth_formats::FormatError),
    #[error("{0}")]
    Invalid(String),
    /// Asked to stop; the checkpoint after `iter` is saved, for `--resume`.
    #[error("stopped after iteration {iter}; the checkpoint is saved")]
    Stopped { iter: usize },
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Peak resident memory of this process in bytes (Linux: VmHWM), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
