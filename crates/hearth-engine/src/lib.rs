//! Hearth's transformer engine: loads decoder LLMs from GGUF, safetensors and MLX-quantised
//! directories with weights kept in their stored format, and runs their forward pass
//! (generation itself is `hearth-runtime`'s).

mod candle;
pub mod config;
mod error;
mod host;
mod kv_cache;
mod linear;
pub mod loader;
pub mod lora;
pub mod model;
pub mod rope;
mod sampling_defaults;
pub mod weights;

pub use error::{EngineError, Result};
pub use hearth_kernels::Precision;
pub use kv_cache::KvCache;
pub use loader::{check_adapter_fits, DeviceChoice, LoadOptions, LoadedModel, ModelFormat};
pub use lora::Adapter;
pub use sampling_defaults::SamplingDefaults;
