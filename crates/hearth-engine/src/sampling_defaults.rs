//! The sampling settings a model declares for itself: `generation_config.json` beside Hugging
//! Face and MLX weights, `general.sampling.*` in a GGUF file (llama.cpp's keys). Front ends use
//! them for whatever a request leaves out.

use hearth_formats::gguf::Gguf;
use serde_json::Value as Json;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
}

impl SamplingDefaults {
    /// From a `generation_config.json`; values of the wrong type or range are ignored, as
    /// transformers would refuse them.
    pub fn from_generation_config(gen: &Json) -> Self {
        let number = |k: &str| gen.get(k).and_then(Json::as_f64).filter(|x| x.is_finite() && *x >= 0.0).map(|x| x as f32);
        SamplingDefaults {
            temperature: number("temperature"),
            top_p: number("top_p").filter(|p| *p > 0.0 && *p <= 1.0),
            top_k: gen.get("top_k").and_then(Json::as_u64).map(|k| k as usize),
            min_p: number("min_p").filter(|p| *p <= 1.0),
            repetition_penalty: number("repetition_penalty").filter(|p| *p > 0.0),
        }
    }

    pub fn from_gguf(g: &Gguf) -> Self {
        let number = |k: &str| {
            g.get(&format!("general.sampling.{k}")).and_then(|v| v.as_f64()).filter(|x| x.is_finite() && *x >= 0.0).map(|x| x as f32)
        };
        SamplingDefaults {
            temperature: number("temp"),
            top_p: number("top_p").filter(|p| *p > 0.0 && *p <= 1.0),
            top_k: g.get("general.sampling.top_k").and_then(|v| v.as_u64()).map(|k| k as usize),
            min_p: number("min_p").filter(|p| *p <= 1.0),
            repetition_penalty: number("penalty_repeat").filter(|p| *p > 0.0),
        }
    }

    /// `self`, with `other`'s values where `self` has none.
    pub fn or(self, other: SamplingDefaults) -> SamplingDefaults {
        SamplingDefaults {
            temperature: self.temperature.or(other.temperature),
            top_p: self.top_p.or(other.top_p),
            top_k: self.top_k.or(other.top_k),
            min_p: self.min_p.or(other.min_p),
            repetition_penalty: self.repetition_penalty.or(other.repetition_penalty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SamplingDefaults;

    #[test]
    fn generation_config_values_are_read_and_bad_ones_ignored() {
        let gen = serde_json::json!({"temperature": 0.6, "top_p": 0.95, "top_k": 20, "repetition_penalty": "high", "min_p": 2.0});
        let d = SamplingDefaults::from_generation_config(&gen);
        assert_eq!(
            d,
            SamplingDefaults { temperature: Some(0.6), top_p: Some(0.95), top_k: Some(20), min_p: None, repetition_penalty: None }
        );
        let more = SamplingDefaults { min_p: Some(0.05), temperature: Some(0.8), ..Default::default() };
        assert_eq!(d.or(more).min_p, Some(0.05));
        assert_eq!(d.or(more).temperature, Some(0.6));
    }
}
