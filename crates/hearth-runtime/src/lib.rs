//! The one generation runtime under every front end (`hearth generate`, `chat`, `bench`, the
//! knowledge base's answers, every server route). It owns sequences: admission, chunked
//! prefill, batched decode, sampling, stop strings, incremental detokenisation, log-probs,
//! the prompt cache, cancellation and the events a sequence emits. Constraints plug in as a
//! per-sequence [`LogitsProcessor`], fine-tunes as a per-sequence LoRA [`Adapter`].

mod batch;
mod complete;
mod error;
mod prompt_cache;
mod request;
mod sampler;
mod scheduler;
mod sequence;
mod stop;

pub use batch::{Gauges, Runtime, RuntimeConfig};
pub use complete::Completion;
pub use error::RuntimeError;
// Loading a model to run is part of the API a front end needs; nothing else of the engine is.
pub use hearth_engine::loader::{describe, ModelFacts};
pub use hearth_engine::lora::LoraAdapter;
pub use hearth_engine::{check_adapter_fits, Adapter, DeviceChoice, EngineError, LoadOptions, LoadedModel, ModelFormat, SamplingDefaults};
pub use request::{Event, FinishReason, GenerateParams, LogitsProcessor, Observer, Request, SampledToken, Usage};
pub use sampler::{logprobs, Sampler, SamplingParams, TokenLogprob, LLAMA_CPP_SAMPLING};
pub use scheduler::Scheduler;
pub use stop::partial_suffix;
