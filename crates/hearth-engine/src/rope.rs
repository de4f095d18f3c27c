//! Rotary position embeddings (the Hugging Face "rotate half" layout), with the frequency
//! scalings real checkpoints use. Tables are computed per forward pass for just the positions
//! in it, so long contexts need no precomputed table.

use candle_core::{Device, Tensor};

use crate::config::{RopeScaling, RopeSettings};
use crate::Result;

pub struct Rope {
    inv_freq: Vec<f32>,
    position_scale: f32,
}

impl Rope {
    /// The rotation of heads of `dim` values.
    pub fn new(dim: usize, settings: &RopeSettings) -> Result<Self> {
        let base: Vec<f64> = (0..dim / 2).map(|i| 1.0 / settings.theta.powf((2 * i) as f64 / dim as f64)).collect();
        let mut position_scale = 1.0;
        let inv_freq: Vec<f64> = match &settings.scaling {
            RopeScaling::None => base,
            RopeScaling::Linear(f) => {
                position_scale = 1.0 / *f as f32;
                base
            }
            RopeScaling::FreqFactors(factors) => {
                if factors.len() != base.len() {
                    return Err(crate::EngineError::Weights(format!(
                        "rope_freqs has {} factors, head_dim/2 is {}",
                        factors.len(),
                        base.len()
                    )));
                }
                base.iter().zip(factors).map(|(f, d)| f / *d as f64).collect()
            }
            &RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                let low_wavelen = original_context / low_freq_factor;
                let high_wavelen = original_context / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        Ok(Rope { inv_freq: inv_freq.iter().map(|&f| f as f32).collect(), position_scale })
    }

    /// Fills cos and sin tables `[n, head_dim/2]` for positions `start..start + n`.
    pub fn fill(&self, start: usize, n: usize, cos: &mut [f32], sin: &mut [f32]) {
        let half = self.inv_freq.len();
        for (i, p) in (start..start + n).enumerate() {
            let pos = p as f32 * self.position_scale;
            for (j, &f) in self.inv_freq.iter().enumerate() {
                let angle = pos * f;
                cos[i * half + j] = angle.cos();
                sin[i * half + j] = angle.sin();
            }
        }
    }

    /// The same tables as tensors.
    pub fn tables(&self, start: usize, n: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (vec![0f32; n * half], vec![0f32; n * half]);
        self.fill(start, n, &mut cos, &mut sin);
        Ok((Tensor::from_vec(cos, (n, half), device)?, Tensor::from_vec(sin, (n, half), device)?))
    }
}
