//! Hearth's transformer runtime: loads decoder LLMs from GGUF, safetensors and MLX-quantised
//! directories with weights kept in their stored format, and generates text from them.

pub mod config;
mod error;
pub mod generate;
mod host;
mod kv_cache;
mod linear;
pub mod loader;
pub mod lora;
pub mod model;
mod rope;
pub mod sampler;
pub mod weights;

pub use error::{EngineError, Result};
pub use generate::{FinishReason, GenerateParams, Generation, Session, StopMatcher, TokenEvent};
pub use hearth_kernels::Precision;
pub use kv_cache::KvCache;
pub use loader::{DeviceChoice, LoadOptions, LoadedModel, ModelFormat};
pub use sampler::{logprobs, Sampler, SamplingParams, TokenLogprob};
