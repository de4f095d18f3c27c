//! mlx's optimisers as mlx-lm uses them: Adam (its default: betas (0.9, 0.999), eps 1e-8, **no
//! bias correction**: `m = β₁m + (1−β₁)g`, `v = β₂v + (1−β₂)g²`, `w −= lr·m/(√v + ε)`), AdamW
//! (the same after `w ← w·(1 − lr·λ)`) and SGD (`w −= lr·g`), the learning rate following one of
//! mlx's schedules, evaluated at the update's 0-based step.

use crate::adapter::Lora;

/// A learning rate by optimiser step: mlx's schedulers, and mlx-lm's warm-up joined to them.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant(f32),
    /// `cosine_decay(init, decay_steps, end)`.
    CosineDecay {
        init: f32,
        decay_steps: usize,
        end: f32,
    },
    /// `linear_schedule(init, end, steps)`.
    Linear {
        init: f32,
        end: f32,
        steps: usize,
    },
    /// mlx-lm's `warmup`: `linear_schedule(init, then's first rate, steps)` for steps `0..=steps`,
    /// then `then` counted from 0 (`join_schedules` at `steps + 1`).
    Warmup {
        init: f32,
        steps: usize,
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// mlx-lm's `lr_schedule` (`{"name", "arguments", "warmup", "warmup_init"}`) for
    /// `cosine_decay` and `linear_schedule`; `None` for the constant `learning_rate`.
    pub fn from_mlx_lm(lr_schedule: Option<&serde_json::Value>, learning_rate: f32) -> Result<Schedule, String> {
        let Some(s) = lr_schedule.filter(|s| !s.is_null()) else { return Ok(Schedule::Constant(learning_rate)) };
        let args: Vec<f64> =
            s["arguments"].as_array().map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect()).unwrap_or_default();
        let arg = |i: usize| args.get(i).copied().ok_or_else(|| format!("lr_schedule {}: too few arguments", s["name"]));
        let main = match s["name"].as_str() {
            Some("cosine_decay") => Schedule::CosineDecay {
                init: arg(0)? as f32,
                decay_steps: arg(1)? as usize,
                end: args.get(2).copied().unwrap_or(0.0) as f32,
            },
            Some("linear_schedule") => Schedule::Linear { init: arg(0)? as f32, end: arg(1)? as f32, steps: arg(2)? as usize },
            other => return Err(format!("lr_schedule {other:?}: cosine_decay and linear_schedule are supported")),
        };
        Ok(match s["warmup"].as_u64() {
            Some(steps) if steps > 0 => {
                Schedule::Warmup { init: s["warmup_init"].as_f64().unwrap_or(0.0) as f32, steps: steps as usize, then: Box::new(main) }
            }
            _ => main,
        })
    }

    pub fn at(&self, step: usize) -> f32 {
        match self {
            Schedule::Constant(lr) => *lr,
            &Schedule::CosineDecay { init, decay_steps, end } => {
                let s = step.min(decay_steps) as f32;
                let decay = 0.5 * (1.0 + (std::f32::consts::PI / decay_steps as f32 * s).cos());
                end + decay * (init - end)
            }
            &Schedule::Linear { init, end, steps } => step.min(steps) as f32 * ((end - init) / steps as f32) + init,
            Schedule::Warmup { init, steps, then } => {
                if step < steps + 1 {
                    Schedule::Linear { init: *init, end: then.at(0), steps: *steps }.at(step)
                } else {
                    then.at(step - (steps + 1))
                }
            }
        }
    }
}

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rule {
    Adam,
    AdamW { weight_decay: f32 },
    Sgd,
}

pub struct Optimizer {
    pub rule: Rule,
    pub schedule: Schedule,
    pub betas: (f32, f32),
    pub eps: f32,
    /// Updates applied so far.
    pub step: usize,
    m: Option<Lora>,
    v: Option<Lora>,
}

impl Optimizer {
    pub fn new(rule: Rule, schedule: Schedule) -> Optimizer {
        Optimizer { rule, schedule, betas: (0.9, 0.999), eps: 1e-8, step: 0, m: None, v: None }
    }

    /// Adam's moments (`None` before the first update or for SGD).
    pub fn moments(&self) -> Option<(&Lora, &Lora)> {
        self.m.as_ref().zip(self.v.as_ref())
    }

    /// Continues from a saved state: `step` updates done, with these moments.
    pub fn restore(&mut self, step: usize, moments: Option<(Lora, Lora)>) {
        self.step = step;
        (self.m, self.v) = moments.unzip();
    }

    /// The rate the next update uses.
    pub fn learning_rate(&self) -> f32 {
        self.schedule.at(self.step)
    }

    /// One update of `params` by `grads`.
    pub fn update(&mut self, params: &mut Lora, grads: &Lora) {
        let lr = self.learning_rate();
        self.step += 1;
        if self.rule == Rule::Sgd {
            for (name, p) in params.layers.iter_mut() {
                let g = &grads.layers[name];
                p.values_mut().zip(g.values()).for_each(|(w, &g)| *w -= lr * g);
            }
            return;
        }
        let decay = match self.rule {
            Rule::AdamW { weight_decay } => 1.0 - lr * weight_decay,
            _ => 1.0,
        };
        let (b1, b2, eps) = (self.betas.0, self.betas.1, self.eps);
        let m = self.m.get_or_insert_with(|| params.zeros_like());
        let v = self.v.get_or_insert_with(|| params.zeros_like());
        for (name, p) in params.layers.iter_mut() {
            let (g, m, v) = (&grads.layers[name], m.layers.get_mut(name).expect("moments"), v.layers.get_mut(name).expect("moments"));
            for ((w, &g), (m, v)) in p.values_mut().zip(g.values()).zip(m.values_mut().zip(v.values_mut())) {
                *w *= decay;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *w -= lr * *m / (v.sqrt() + eps);
            }
        }
    }
}
