//! Turning logits into the next token: biases and penalties, then greedy or temperature
//! sampling filtered by top-k, top-p and min-p, reproducible under a seed; plus log-probs.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use hearth_engine::SamplingDefaults;

use crate::RuntimeError;

#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables.
    pub top_k: usize,
    /// 1 disables.
    pub top_p: f32,
    /// 0 disables; keeps tokens with probability ≥ min_p × the top probability.
    pub min_p: f32,
    /// 1 disables; > 1 discourages tokens already in the context (CTRL-style).
    pub repetition_penalty: f32,
    /// Subtracted once from any token already generated (OpenAI semantics).
    pub presence_penalty: f32,
    /// Subtracted per occurrence among generated tokens.
    pub frequency_penalty: f32,
    pub logit_bias: HashMap<u32, f32>,
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: HashMap::new(),
            seed: None,
        }
    }
}

/// llama.cpp's defaults, for what neither a request, the operator nor the model sets.
pub const LLAMA_CPP_SAMPLING: SamplingDefaults =
    SamplingDefaults { temperature: Some(0.8), top_p: Some(0.95), top_k: Some(40), min_p: Some(0.05), repetition_penalty: Some(1.0) };

impl SamplingParams {
    /// Sampling with each setting `settings` gives and llama.cpp's for the rest; no penalties,
    /// biases or seed.
    pub fn from_settings(settings: SamplingDefaults) -> Self {
        let s = settings.or(LLAMA_CPP_SAMPLING);
        let d = SamplingParams::default();
        SamplingParams {
            temperature: s.temperature.unwrap_or(d.temperature),
            top_k: s.top_k.unwrap_or(d.top_k),
            top_p: s.top_p.unwrap_or(d.top_p),
            min_p: s.min_p.unwrap_or(d.min_p),
            repetition_penalty: s.repetition_penalty.unwrap_or(d.repetition_penalty),
            ..d
        }
    }

    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |param: &'static str, message: String| Err(RuntimeError::Invalid { param, message });
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad("temperature", format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad("repetition_penalty", format!("repetition_penalty must be > 0, got {}", self.repetition_penalty));
        }
        for (name, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(name, format!("{name} must be in [-2, 2], got {v}"));
            }
        }
        if let Some((id, b)) = self.logit_bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(*b)) {
            return bad("logit_bias", format!("logit_bias for token {id} must be in [-100, 100], got {b}"));
        }
        Ok(())
    }
}

/// A token's log-probability and the most likely alternatives at its position.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Occurrences of each generated token, for presence/frequency penalties.
    counts: HashMap<u32, u32>,
    /// Vocabulary-sized scratch, reused every step.
    probs: Vec<(u32, f32)>,
    weights: Vec<f32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self, RuntimeError> {
        params.validate()?;
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Ok(Sampler { params, rng, counts: HashMap::new(), probs: Vec::new(), weights: Vec::new() })
    }

    /// Records a generated token (for the penalties).
    pub fn observe(&mut self, id: u32) {
        *self.counts.entry(id).or_default() += 1;
    }

    /// Picks the next token. `context` is every token the sequence holds (prompt and generated),
    /// which the repetition penalty looks at; `logits` is modified in place.
    pub fn sample(&mut self, logits: &mut [f32], context: &[u32]) -> u32 {
        let p = &self.params;
        for (&id, &b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += b;
            }
        }
        if p.repetition_penalty != 1.0 {
            let mut seen = std::collections::HashSet::new();
            for &id in context {
                if seen.insert(id) {
                    if let Some(l) = logits.get_mut(id as usize) {
                        *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                    }
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&id, &n) in &self.counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        if p.top_k == 0 && p.top_p >= 1.0 {
            return self.sample_whole_vocabulary(logits);
        }
        self.probs.clear();
        self.probs.extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l / p.temperature)));
        let by_logit_desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1);
        let mut keep = self.probs.len();
        if p.top_k > 0 && p.top_k < keep {
            self.probs.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            keep = p.top_k;
        }
        let cand = &mut self.probs[..keep];
        // Only top-p needs the candidates in order; sorting the whole vocabulary for every
        // token took a tenth of a batched decode step.
        if p.top_p < 1.0 {
            cand.sort_unstable_by(by_logit_desc);
        }
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for c in cand.iter_mut() {
            c.1 = (c.1 - max).exp();
            sum += c.1;
        }
        for c in cand.iter_mut() {
            c.1 /= sum;
        }
        let mut keep = cand.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, c) in cand.iter().enumerate() {
                acc += c.1;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        // min-p keeps what is at least `min_p` times the likeliest (which is always kept).
        // The likeliest has probability 1 / sum (its exp is 1).
        let floor = p.min_p / sum;
        let kept = |c: &&(u32, f32)| c.1 >= floor;
        let cand = &cand[..keep];
        let total: f32 = cand.iter().filter(kept).map(|c| c.1).sum();
        let mut r = self.rng.random::<f32>() * total;
        let mut last = cand[0].0;
        for c in cand.iter().filter(kept) {
            r -= c.1;
            last = c.0;
            if r <= 0.0 {
                return c.0;
            }
        }
        last
    }
}

impl Sampler {
    /// Temperature and min-p alone need no candidate list: the weights are computed in
    /// vocabulary order in one vectorised pass (the general path took a tenth of a batched
    /// decode step), and drawn from in the same order as that path.
    fn sample_whole_vocabulary(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv_t = 1.0 / p.temperature;
        self.weights.clear();
        self.weights.extend(logits.iter().map(|&l| hearth_kernels::math::exp((l - max) * inv_t)));
        // The likeliest token has weight 1, so min-p keeps weights of at least min_p.
        let floor = p.min_p;
        let mut part = [0f32; 16];
        let chunks = self.weights.chunks_exact(16);
        let tail: f32 = chunks.remainder().iter().filter(|&&w| w >= floor).sum();
        for c in chunks {
            part.iter_mut().zip(c).for_each(|(s, &w)| *s += if w >= floor { w } else { 0.0 });
        }
        let total = part.iter().sum::<f32>() + tail;
        let mut r = self.rng.random::<f32>() * total;
        let mut last = 0;
        for (i, &w) in self.weights.iter().enumerate().filter(|&(_, &w)| w >= floor) {
            r -= w;
            last = i;
            if r <= 0.0 {
                break;
            }
        }
        last as u32
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Log-softmax of `logits` at `id`, with the `n` most likely tokens.
pub fn logprobs(logits: &[f32], id: u32, n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (i, &l) in logits.iter().enumerate() {
            if top.len() < n || l > top[top.len() - 1].1 {
                let at = top.partition_point(|t| t.1 >= l);
                top.insert(at, (i as u32, l));
                top.truncate(n);
            }
        }
    }
    TokenLogprob {
        logprob: logits.get(id as usize).map_or(f32::NEG_INFINITY, |l| l - lse),
        top: top.into_iter().map(|(i, l)| (i, l - lse)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draw frequencies over logits ln 1, ln 2, ln 4, ln 8 (probabilities 1/15 … 8/15).
    fn frequencies(params: SamplingParams) -> [f64; 4] {
        let mut s = Sampler::new(SamplingParams { seed: Some(3), ..params }).unwrap();
        let mut counts = [0usize; 4];
        let draws = 40_000;
        for _ in 0..draws {
            let mut logits = [1f32, 2.0, 4.0, 8.0].map(f32::ln);
            counts[s.sample(&mut logits, &[]) as usize] += 1;
        }
        counts.map(|c| c as f64 / draws as f64)
    }

    #[test]
    fn both_sampling_paths_draw_from_the_same_distribution() {
        let close = |got: [f64; 4], want: [f64; 4]| {
            assert!(got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 0.01), "{got:?} vs {want:?}");
        };
        // Temperature alone takes the whole-vocabulary path; top-k = vocabulary the general one.
        let plain = SamplingParams { temperature: 1.0, ..Default::default() };
        close(frequencies(plain.clone()), [1.0 / 15.0, 2.0 / 15.0, 4.0 / 15.0, 8.0 / 15.0]);
        close(frequencies(SamplingParams { top_k: 4, ..plain.clone() }), frequencies(plain.clone()));
        // min-p 0.3 drops the tokens at 1/8 and 2/8 of the likeliest.
        let min_p = SamplingParams { min_p: 0.3, ..plain.clone() };
        close(frequencies(min_p.clone()), [0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0]);
        close(frequencies(SamplingParams { top_k: 4, ..min_p }), [0.0, 0.0, 1.0 / 3.0, 2.0 / 3.0]);
        // Temperature 2 flattens: weights 1, √2, 2, 2√2.
        let sum = 1.0 + 2f64.sqrt() + 2.0 + 2.0 * 2f64.sqrt();
        close(
            frequencies(SamplingParams { temperature: 2.0, ..plain }),
            [1.0 / sum, 2f64.sqrt() / sum, 2.0 / sum, 2.0 * 2f64.sqrt() / sum],
        );
    }
}
