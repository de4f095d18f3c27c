//! mlx's Adam as mlx-lm uses it by default: betas (0.9, 0.999), eps 1e-8 and **no bias
//! correction**: `m = β₁m + (1−β₁)g`, `v = β₂v + (1−β₂)g²`, `w −= lr·m/(√v + ε)`.

use crate::adapter::Lora;

pub struct Adam {
    pub learning_rate: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    m: Option<Lora>,
    v: Option<Lora>,
}

impl Adam {
    pub fn new(learning_rate: f32) -> Adam {
        Adam { learning_rate, betas: (0.9, 0.999), eps: 1e-8, m: None, v: None }
    }

    /// One update of `params` by `grads`.
    pub fn step(&mut self, params: &mut Lora, grads: &Lora) {
        let (b1, b2) = self.betas;
        let m = self.m.get_or_insert_with(|| params.zeros_like());
        let v = self.v.get_or_insert_with(|| params.zeros_like());
        for (name, p) in params.layers.iter_mut() {
            let (g, m, v) = (&grads.layers[name], m.layers.get_mut(name).expect("moments"), v.layers.get_mut(name).expect("moments"));
            for (w, (g, (m, v))) in [(&mut p.a, (&g.a, (&mut m.a, &mut v.a))), (&mut p.b, (&g.b, (&mut m.b, &mut v.b)))] {
                for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= self.learning_rate * *m / (v.sqrt() + self.eps);
                }
            }
        }
    }
}
