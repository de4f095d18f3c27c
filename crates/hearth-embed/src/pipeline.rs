//! What follows the transformer, as sentence-transformers declares it: pooling of the token
//! states, then the Dense layers and normalisation in their order.

use hearth_formats::sentence::{DenseActivation, SentenceConfig, Stage};

use crate::config::Pooling;
use crate::math::gelu_erf;
use crate::weights::{Linear, Tensors};
use crate::{EmbedError, Result};

pub(crate) struct Pipeline {
    pooling: Pooling,
    include_prompt: bool,
    stages: Vec<LoadedStage>,
}

enum LoadedStage {
    Dense { linear: Linear, activation: DenseActivation, out: usize },
    Normalize,
}

impl Pipeline {
    /// Loads the Dense layers' weights, checking that each takes what the module before it
    /// gives (the transformer's `hidden` features first).
    pub fn load(cfg: &SentenceConfig, hidden: usize) -> Result<Self> {
        let mut width = hidden;
        let mut stages = Vec::with_capacity(cfg.stages.len());
        for stage in &cfg.stages {
            stages.push(match stage {
                Stage::Normalize => LoadedStage::Normalize,
                Stage::Dense(d) => {
                    if d.in_features != width {
                        return Err(EmbedError::Config {
                            path: d.dir.join("config.json"),
                            message: format!("this Dense layer takes {} features but the module before it gives {width}", d.in_features),
                        });
                    }
                    let tensors = Tensors::open(&d.dir)?;
                    let linear = tensors.dense("linear", d.out_features, d.in_features, d.bias).map_err(|e| EmbedError::Config {
                        path: d.dir.clone(),
                        message: format!("{e} (config.json says {} → {} features)", d.in_features, d.out_features),
                    })?;
                    width = d.out_features;
                    LoadedStage::Dense { linear, activation: d.activation, out: d.out_features }
                }
            });
        }
        Ok(Pipeline { pooling: cfg.pooling, include_prompt: cfg.include_prompt, stages })
    }

    /// Pools one sequence's token states (`[tokens, h]`); `prompt_tokens` leading tokens are
    /// left out where the model pools without its prompt. An empty sequence pools to zeros.
    pub fn pool(&self, states: &[f32], h: usize, prompt_tokens: usize) -> Vec<f32> {
        let skip = if self.include_prompt { 0 } else { prompt_tokens.min(states.len() / h) };
        let rows = || states.chunks_exact(h).skip(skip);
        let n = (states.len() / h - skip) as f32;
        let mut out = vec![0f32; h];
        let sum = |out: &mut [f32], weight: &dyn Fn(usize) -> f32| {
            for (t, row) in rows().enumerate() {
                out.iter_mut().zip(row).for_each(|(o, v)| *o += weight(t) * v);
            }
        };
        match self.pooling {
            Pooling::Cls => {
                if let Some(first) = states.chunks_exact(h).next() {
                    out.copy_from_slice(first);
                }
            }
            Pooling::LastToken => {
                if let Some(last) = rows().last() {
                    out.copy_from_slice(last);
                }
            }
            Pooling::Max => {
                out.fill(f32::NEG_INFINITY);
                rows().for_each(|row| out.iter_mut().zip(row).for_each(|(o, &v)| *o = o.max(v)));
                // sentence-transformers' value where nothing was pooled.
                out.iter_mut().filter(|o| o.is_infinite()).for_each(|o| *o = -1e9);
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                sum(&mut out, &|_| 1.0);
                let d = if self.pooling == Pooling::Mean { n } else { n.sqrt() };
                out.iter_mut().for_each(|o| *o /= d.max(1e-9));
            }
            Pooling::WeightedMean => {
                // Weights 1, 2, … by position in the whole input, as sentence-transformers counts.
                sum(&mut out, &|t| (skip + t + 1) as f32);
                let total: f32 = (skip..skip + n as usize).map(|t| (t + 1) as f32).sum();
                out.iter_mut().for_each(|o| *o /= total.max(1e-9));
            }
        }
        out
    }

    /// The modules after the pooling, in order.
    pub fn finish(&self, mut v: Vec<f32>) -> Vec<f32> {
        for stage in &self.stages {
            match stage {
                LoadedStage::Dense { linear, activation, out } => {
                    let mut y = vec![0f32; *out];
                    linear.forward(&v, &mut y);
                    y.iter_mut().for_each(|x| *x = activate(*activation, *x));
                    v = y;
                }
                LoadedStage::Normalize => normalize(&mut v),
            }
        }
        v
    }
}

fn activate(a: DenseActivation, x: f32) -> f32 {
    match a {
        DenseActivation::Identity => x,
        DenseActivation::Tanh => x.tanh(),
        DenseActivation::Relu => x.max(0.0),
        DenseActivation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        DenseActivation::Gelu => gelu_erf(x),
    }
}

/// As torch's `F.normalize`: divides by max(‖v‖, 1e-12).
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}
