//! Which block type each tensor of a GGUF file gets: llama.cpp's file types (`--type`) and
//! `llama-quantize`'s per-tensor choices for them, so a file Hearth writes has the tensor types a
//! llama.cpp user expects of, say, a Q4_K_M.

use hearth_formats::gguf::GgmlType;

use crate::ConvertError;

/// A GGUF file's type, as `llama-quantize` names them (`general.file_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgufFileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
}

const NAMES: [(GgufFileType, &str, u32); 13] = [
    (GgufFileType::F32, "F32", 0),
    (GgufFileType::F16, "F16", 1),
    (GgufFileType::BF16, "BF16", 32),
    (GgufFileType::Q8_0, "Q8_0", 7),
    (GgufFileType::Q4_0, "Q4_0", 2),
    (GgufFileType::Q4_1, "Q4_1", 3),
    (GgufFileType::Q5_0, "Q5_0", 8),
    (GgufFileType::Q5_1, "Q5_1", 9),
    (GgufFileType::Q4KS, "Q4_K_S", 14),
    (GgufFileType::Q4KM, "Q4_K_M", 15),
    (GgufFileType::Q5KS, "Q5_K_S", 16),
    (GgufFileType::Q5KM, "Q5_K_M", 17),
    (GgufFileType::Q6K, "Q6_K", 18),
];

impl GgufFileType {
    /// Case-insensitive: "q4_k_m", "Q8_0", "f16".
    pub fn parse(name: &str) -> Option<Self> {
        NAMES.iter().find(|(_, n, _)| n.eq_ignore_ascii_case(name)).map(|(t, _, _)| *t)
    }

    pub fn all_names() -> Vec<&'static str> {
        NAMES.iter().map(|(_, n, _)| *n).collect()
    }

    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(t, _, _)| *t == self).map_or("?", |(_, n, _)| n)
    }

    /// `general.file_type`.
    pub fn id(self) -> u32 {
        NAMES.iter().find(|(t, _, _)| *t == self).map_or(0, |(_, _, id)| *id)
    }

    /// The block type most tensors get.
    pub fn default_type(self) -> GgmlType {
        use GgufFileType::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q8_0 => GgmlType::Q8_0,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q4KS | Q4KM => GgmlType::Q4K,
            Q5KS | Q5KM => GgmlType::Q5K,
            Q6K => GgmlType::Q6K,
        }
    }
}

/// Whether `llama-quantize` gives a tensor a block type at all: matrices named `*weight`, not
/// norms (1-D tensors — norms, biases, `rope_freqs` — keep their type).
pub fn quantizable(name: &str, shape: &[usize]) -> bool {
    shape.len() >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// `llama-quantize`'s tensor order: tensors outside the blocks first, then block by block in
/// layer order, by name within each (its per-layer rules count tensors in this order).
pub fn llama_order(names: &mut [String]) {
    names.sort_by(|a, b| (layer(a), a).cmp(&(layer(b), b)));
}

/// `blk.N.…`'s N; −1 outside the blocks.
fn layer(name: &str) -> i64 {
    name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse().ok()).unwrap_or(-1)
}

/// `llama-quantize`'s choice per tensor (`llama_tensor_get_type`) for one file type, for a dense
/// model: the output matrix (the token embedding when tied) gets Q6_K; Q4_K_M/Q5_K_M give
/// `attn_v` and `ffn_down` Q6_K in the layers `use_more_bits` picks; Q4_K_S gives the first
/// layers Q5_K; rows that do not split into whole blocks fall back (Q4_K→Q5_0, Q5_K→Q5_1,
/// Q6_K→Q8_0, then F16). `pure` gives every matrix the default type.
pub struct TypePolicy {
    file_type: GgufFileType,
    pure: bool,
    tied: bool,
    layers: i64,
    attn_v_count: i64,
}

impl TypePolicy {
    /// For a model whose tensors are `names` (GGUF names) and which has `layers` blocks.
    pub fn new(file_type: GgufFileType, pure: bool, names: &[String], layers: usize) -> Self {
        TypePolicy {
            file_type,
            pure,
            tied: !names.iter().any(|n| n == "output.weight"),
            layers: layers as i64,
            attn_v_count: names.iter().filter(|n| is_attn_v(n)).count() as i64,
        }
    }

    /// The type of tensor `name` (row-major `shape`), stored now as `current`.
    pub fn choose(&self, name: &str, shape: &[usize], current: GgmlType) -> Result<GgmlType, ConvertError> {
        use GgufFileType::*;
        if !quantizable(name, shape) {
            return Ok(current);
        }
        let default = self.file_type.default_type();
        if matches!(self.file_type, F32 | F16 | BF16) {
            return Ok(default);
        }
        let cols = *shape.last().unwrap_or(&0);
        let mut ty = default;
        if !self.pure {
            let more_bits = |i: i64, n: i64| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
            let i = layer(name);
            let (km, ks) = (matches!(self.file_type, Q4KM | Q5KM), self.file_type == Q4KS);
            if name == "output.weight" || (self.tied && name == "token_embd.weight") {
                if !cols.is_multiple_of(default.block_len()) {
                    ty = GgmlType::Q8_0;
                } else if ty != GgmlType::Q8_0 {
                    ty = GgmlType::Q6K;
                }
            } else if is_attn_v(name) {
                if km && more_bits(i, self.attn_v_count) {
                    ty = GgmlType::Q6K;
                } else if ks && i < 4 {
                    ty = GgmlType::Q5K;
                }
            } else if name.contains("ffn_down") {
                if km && more_bits(i, self.layers) {
                    ty = GgmlType::Q6K;
                } else if ks && i < self.layers / 8 {
                    ty = GgmlType::Q5K;
                }
            }
        }
        if cols.is_multiple_of(ty.block_len()) {
            return Ok(ty);
        }
        let fallback = match ty {
            GgmlType::Q4K => GgmlType::Q5_0,
            GgmlType::Q5K => GgmlType::Q5_1,
            GgmlType::Q6K => GgmlType::Q8_0,
            _ => {
                return Err(ConvertError::Unsupported(format!(
                    "{name}: rows of {cols} values do not split into {ty:?} blocks of {}",
                    ty.block_len()
                )))
            }
        };
        Ok(if cols.is_multiple_of(fallback.block_len()) { fallback } else { GgmlType::F16 })
    }
}

fn is_attn_v(name: &str) -> bool {
    ["attn_v.weight", "attn_qkv.weight", "attn_kv_b.weight"].iter().any(|p| name.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor types of the tiny fixtures llama-quantize made (testdata/tiny/refs/gguf.json):
    /// llama256 (one layer, hidden 256, untied) as Q4_K_M, and llama (tied, rows of 64) as Q8_0.
    #[test]
    fn choices_match_llama_quantize() {
        let names: Vec<String> =
            ["output.weight", "token_embd.weight", "blk.0.attn_v.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight"]
                .map(String::from)
                .to_vec();
        let p = TypePolicy::new(GgufFileType::Q4KM, false, &names, 1);
        let ty = |n: &str, shape: &[usize]| p.choose(n, shape, GgmlType::F16).unwrap();
        assert_eq!(ty("output.weight", &[4096, 256]), GgmlType::Q6K);
        assert_eq!(ty("token_embd.weight", &[4096, 256]), GgmlType::Q4K);
        assert_eq!(ty("blk.0.attn_v.weight", &[128, 256]), GgmlType::Q6K);
        assert_eq!(ty("blk.0.ffn_down.weight", &[256, 512]), GgmlType::Q6K);
        assert_eq!(ty("blk.0.attn_q.weight", &[256, 256]), GgmlType::Q4K);
        assert_eq!(ty("blk.0.attn_norm.weight", &[256]), GgmlType::F16, "1-D tensors keep their type");
        let tied = TypePolicy::new(GgufFileType::Q8_0, false, &names[1..], 2);
        assert_eq!(tied.choose("token_embd.weight", &[49152, 64], GgmlType::F16).unwrap(), GgmlType::Q8_0);
        let q4 = TypePolicy::new(GgufFileType::Q4_0, false, &names[1..], 2);
        assert_eq!(q4.choose("token_embd.weight", &[49152, 64], GgmlType::F16).unwrap(), GgmlType::Q8_0, "Q6_K falls back");
        assert_eq!(q4.choose("blk.0.attn_q.weight", &[64, 64], GgmlType::F16).unwrap(), GgmlType::Q4_0);
        let km = TypePolicy::new(GgufFileType::Q4KM, false, &names[1..], 2);
        assert_eq!(km.choose("blk.1.attn_q.weight", &[64, 64], GgmlType::F16).unwrap(), GgmlType::Q5_0, "Q4_K falls back");
        let pure = TypePolicy::new(GgufFileType::Q4_1, true, &names[1..], 2);
        assert_eq!(pure.choose("token_embd.weight", &[49152, 64], GgmlType::F16).unwrap(), GgmlType::Q4_1);
        let odd = TypePolicy::new(GgufFileType::Q4_0, true, &names, 2);
        assert!(odd.choose("blk.0.attn_q.weight", &[64, 48], GgmlType::F16).is_err());
    }

    #[test]
    fn order_is_llama_quantize_s() {
        let mut names: Vec<String> =
            ["blk.10.attn_q.weight", "token_embd.weight", "blk.2.ffn_up.weight", "blk.2.attn_k.weight", "output_norm.weight"]
                .map(String::from)
                .to_vec();
        llama_order(&mut names);
        assert_eq!(
            names,
            ["output_norm.weight", "token_embd.weight", "blk.2.attn_k.weight", "blk.2.ffn_up.weight", "blk.10.attn_q.weight"]
        );
    }
}
