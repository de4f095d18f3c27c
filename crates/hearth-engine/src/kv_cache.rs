//! Per-sequence key/value cache, allocated once for the sequence's whole context and written
//! in place, so decoding never concatenates or reallocates.

use candle_core::{DType, Device, Tensor};

use crate::config::ModelConfig;
use crate::Result;

pub struct KvCache {
    /// Per layer, `[kv_heads, capacity, head_dim]`.
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig, capacity: usize, device: &Device) -> Result<Self> {
        let shape = (cfg.num_kv_heads, capacity, cfg.head_dim);
        let alloc = || Tensor::zeros(shape, DType::F32, device);
        let keys = (0..cfg.num_layers).map(|_| alloc()).collect::<candle_core::Result<_>>()?;
        let values = (0..cfg.num_layers).map(|_| alloc()).collect::<candle_core::Result<_>>()?;
        Ok(KvCache { keys, values, len: 0, capacity })
    }

    /// Tokens whose keys and values are stored.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything after the first `len` tokens (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(|t| t.elem_count() * 4).sum()
    }

    /// Writes `[kv_heads, n, head_dim]` keys and values at position `at` of `layer` and returns
    /// views of everything stored up to `at + n`.
    pub(crate) fn append(&mut self, layer: usize, at: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        self.keys[layer].slice_set(&k.contiguous()?, 1, at)?;
        self.values[layer].slice_set(&v.contiguous()?, 1, at)?;
        Ok((self.keys[layer].narrow(1, 0, at + n)?, self.values[layer].narrow(1, 0, at + n)?))
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }
}
