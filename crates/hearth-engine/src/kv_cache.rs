//! Per-sequence key/value cache, allocated once for the sequence's whole context and written
//! in place, so decoding never concatenates or reallocates.

use candle_core::{DType, Device, Tensor};
use hearth_kernels::attend::{key_slot, KvHead, KEY_TILE};

use crate::config::ModelConfig;
use crate::{EngineError, Result};

/// Host memory: per layer and KV head, keys in tiles of 16 positions (`[tile][head_dim][16]`,
/// the attention kernel's layout) and values by position (`[position][head_dim]`); the capacity
/// is rounded up to whole tiles.
pub(crate) struct HostKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    capacity: usize,
    head_dim: usize,
}

impl HostKv {
    fn new(cfg: &ModelConfig, capacity: usize) -> Self {
        let capacity = capacity.next_multiple_of(KEY_TILE);
        let per_layer = cfg.num_kv_heads * capacity * cfg.head_dim;
        HostKv {
            keys: (0..cfg.num_layers).map(|_| vec![0f32; per_layer]).collect(),
            values: (0..cfg.num_layers).map(|_| vec![0f32; per_layer]).collect(),
            capacity,
            head_dim: cfg.head_dim,
        }
    }

    /// Stores `n` tokens' keys and values (`[n, kv_heads · head_dim]`) from position `at`.
    pub(crate) fn write(&mut self, layer: usize, at: usize, k: &[f32], v: &[f32]) {
        let (hd, span) = (self.head_dim, self.capacity * self.head_dim);
        let heads = self.keys[layer].len() / span;
        for (i, (kr, vr)) in k.chunks_exact(heads * hd).zip(v.chunks_exact(heads * hd)).enumerate() {
            for h in 0..heads {
                let keys = &mut self.keys[layer][h * span..(h + 1) * span];
                for (d, &value) in kr[h * hd..(h + 1) * hd].iter().enumerate() {
                    keys[key_slot(at + i, d, hd)] = value;
                }
                let dst = (h * self.capacity + at + i) * hd;
                self.values[layer][dst..dst + hd].copy_from_slice(&vr[h * hd..(h + 1) * hd]);
            }
        }
    }

    /// One KV head's cache holding `len` positions.
    pub(crate) fn head(&self, layer: usize, head: usize, len: usize) -> KvHead<'_> {
        let span = self.capacity * self.head_dim;
        KvHead {
            key_tiles: &self.keys[layer][head * span..(head + 1) * span],
            values: &self.values[layer][head * span..(head + 1) * span],
            len,
        }
    }

    /// A fresh allocation holding the first `len` positions of every head (the rest stays
    /// zeroed, hence virtual).
    fn prefix_copy(&self, len: usize) -> HostKv {
        let span = self.capacity * self.head_dim;
        // Keys by whole tiles, values by position.
        let keys = len.div_ceil(KEY_TILE) * KEY_TILE * self.head_dim;
        let copy = |src: &Vec<Vec<f32>>, used: usize| -> Vec<Vec<f32>> {
            src.iter()
                .map(|layer| {
                    let mut dst = vec![0f32; layer.len()];
                    for (d, s) in dst.chunks_exact_mut(span).zip(layer.chunks_exact(span)) {
                        d[..used].copy_from_slice(&s[..used]);
                    }
                    dst
                })
                .collect()
        };
        HostKv {
            keys: copy(&self.keys, keys),
            values: copy(&self.values, len * self.head_dim),
            capacity: self.capacity,
            head_dim: self.head_dim,
        }
    }
}

/// Device memory (the candle path): per layer `[kv_heads, capacity, head_dim]` tensors.
pub(crate) struct DeviceKv {
    keys: Vec<Tensor>,
    values: Vec<Tensor>,
}

impl DeviceKv {
    /// Writes `[kv_heads, n, head_dim]` keys and values at position `at` of `layer` and returns
    /// views of everything stored up to `at + n`.
    pub(crate) fn append(&mut self, layer: usize, at: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        self.keys[layer].slice_set(&k.contiguous()?, 1, at)?;
        self.values[layer].slice_set(&v.contiguous()?, 1, at)?;
        Ok((self.keys[layer].narrow(1, 0, at + n)?, self.values[layer].narrow(1, 0, at + n)?))
    }
}

enum Storage {
    Host(HostKv),
    Device(DeviceKv),
}

pub struct KvCache {
    storage: Storage,
    len: usize,
    capacity: usize,
    bytes: usize,
}

impl KvCache {
    /// A cache in host memory, for the host decoder. Zeroed allocations stay virtual until
    /// written, so a long context costs memory only as it fills.
    pub(crate) fn host(cfg: &ModelConfig, capacity: usize) -> Self {
        let storage = Storage::Host(HostKv::new(cfg, capacity));
        KvCache { storage, len: 0, capacity, bytes: Self::bytes_for(cfg, capacity) }
    }

    /// A cache of tensors on `device`, for the candle decoder.
    pub(crate) fn on_device(cfg: &ModelConfig, capacity: usize, device: &Device) -> Result<Self> {
        let alloc = || Tensor::zeros((cfg.num_kv_heads, capacity, cfg.head_dim), DType::F32, device);
        let storage = Storage::Device(DeviceKv {
            keys: (0..cfg.num_layers).map(|_| alloc()).collect::<candle_core::Result<_>>()?,
            values: (0..cfg.num_layers).map(|_| alloc()).collect::<candle_core::Result<_>>()?,
        });
        Ok(KvCache { storage, len: 0, capacity, bytes: Self::bytes_for(cfg, capacity) })
    }

    /// Bytes of a cache for `capacity` positions, rounded up to whole key tiles as the host
    /// cache allocates them.
    fn bytes_for(cfg: &ModelConfig, capacity: usize) -> usize {
        2 * cfg.num_layers * cfg.num_kv_heads * capacity.next_multiple_of(KEY_TILE) * cfg.head_dim * 4
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

    /// An independent cache holding the same tokens, so several sequences can continue one
    /// prefilled prompt (`n` choices).
    pub fn fork(&self) -> Result<KvCache> {
        let storage = match &self.storage {
            Storage::Host(h) => Storage::Host(h.prefix_copy(self.len)),
            Storage::Device(d) => {
                let copy = |ts: &[Tensor]| ts.iter().map(Tensor::copy).collect::<candle_core::Result<Vec<_>>>();
                Storage::Device(DeviceKv { keys: copy(&d.keys)?, values: copy(&d.values)? })
            }
        };
        Ok(KvCache { storage, len: self.len, capacity: self.capacity, bytes: self.bytes })
    }

    /// Bytes reserved for the full context.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    /// The host form, for the host decoder; a cache another decoder type made is an error.
    pub(crate) fn host_mut(&mut self) -> Result<&mut HostKv> {
        match &mut self.storage {
            Storage::Host(h) => Ok(h),
            Storage::Device(_) => Err(wrong_form()),
        }
    }

    /// The device form, for the candle decoder.
    pub(crate) fn device_mut(&mut self) -> Result<&mut DeviceKv> {
        match &mut self.storage {
            Storage::Device(d) => Ok(d),
            Storage::Host(_) => Err(wrong_form()),
        }
    }
}

fn wrong_form() -> EngineError {
    EngineError::InvalidRequest("the KV cache was made by a model on another backend".into())
}
