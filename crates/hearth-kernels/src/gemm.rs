//! Matrix products for many tokens at once (prefill, batched decode) with AVX-512 VNNI.
//!
//! Each weight row is expanded once into unsigned bytes plus, per 16 weights, a scale and an
//! offset (w = a·q + c) — one shape for every quantised format. Activations are quantised to
//! int8 per 32 and packed so that one 512-bit register holds 4 consecutive values of 16
//! tokens; the kernel broadcasts 4 weight bytes against it (`vpdpbusd`), so every multiply-add
//! lane does useful work and the tokens' results come out side by side.

use hearth_formats::gguf::GgmlType;

use crate::act::Q8Block;
use crate::qdot::scalar::{q5k_value, q6k_value, scale_min_k4};
use crate::RowFormat;

/// Tokens per packed tile (the lanes of a 512-bit register of i32).
pub const TILE: usize = 16;

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Whether [`expand_row`] handles the format (float weights do not need it).
pub fn supported(format: RowFormat) -> bool {
    match format {
        RowFormat::Ggml(t) => matches!(
            t,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4K
                | GgmlType::Q5K
                | GgmlType::Q6K
        ),
        RowFormat::MlxAffine { bits, group_size, .. } => matches!(bits, 2 | 4 | 8) && group_size % 16 == 0,
        RowFormat::Float(_) => false,
    }
}

/// Expands one row into `q` (`cols` bytes) and per-16 `a` and `c` (`cols / 16` each).
pub fn expand_row(format: RowFormat, row: &[u8], scales: &[u8], biases: &[u8], q: &mut [u8], a: &mut [f32], c: &mut [f32]) {
    let subs = q.len() / 16;
    let mut set = |sub: usize, values: [u8; 16], scale: f32, offset: f32| {
        q[sub * 16..sub * 16 + 16].copy_from_slice(&values);
        a[sub] = scale;
        c[sub] = offset;
    };
    match format {
        RowFormat::Ggml(t @ (GgmlType::Q4_0 | GgmlType::Q4_1)) => {
            for (blk, b) in row.chunks_exact(t.block_bytes()).enumerate() {
                let d = f16_at(b, 0);
                let (off, qs) = if t == GgmlType::Q4_0 { (-8.0 * d, &b[2..18]) } else { (f16_at(b, 2), &b[4..20]) };
                set(2 * blk, std::array::from_fn(|i| qs[i] & 0xF), d, off);
                set(2 * blk + 1, std::array::from_fn(|i| qs[i] >> 4), d, off);
            }
        }
        RowFormat::Ggml(t @ (GgmlType::Q5_0 | GgmlType::Q5_1)) => {
            for (blk, b) in row.chunks_exact(t.block_bytes()).enumerate() {
                let d = f16_at(b, 0);
                let (off, hb, qs) =
                    if t == GgmlType::Q5_0 { (-16.0 * d, &b[2..6], &b[6..22]) } else { (f16_at(b, 2), &b[4..8], &b[8..24]) };
                let qh = u32::from_le_bytes(hb.try_into().unwrap());
                let v = |j: usize| {
                    let low = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 };
                    low | ((((qh >> j) & 1) as u8) << 4)
                };
                set(2 * blk, std::array::from_fn(v), d, off);
                set(2 * blk + 1, std::array::from_fn(|i| v(16 + i)), d, off);
            }
        }
        RowFormat::Ggml(GgmlType::Q8_0) => {
            for (blk, b) in row.chunks_exact(34).enumerate() {
                let d = f16_at(b, 0);
                for h in 0..2 {
                    set(2 * blk + h, std::array::from_fn(|i| b[2 + 16 * h + i] ^ 0x80), d, -128.0 * d);
                }
            }
        }
        RowFormat::Ggml(GgmlType::Q4K) => {
            // Sub-block j's 32 values are the low (j even) or high nibbles of bytes
            // 32·(j/2)..+32 — read directly rather than value by value (4× faster prefill).
            for (blk, b) in row.chunks_exact(144).enumerate() {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &b[4..16]);
                    let (src, shift) = (&b[16 + (j / 2) * 32..16 + (j / 2) * 32 + 32], 4 * (j % 2));
                    for h in 0..2 {
                        set(
                            blk * 16 + 2 * j + h,
                            std::array::from_fn(|i| (src[h * 16 + i] >> shift) & 0xF),
                            d * sc as f32,
                            -dmin * m as f32,
                        );
                    }
                }
            }
        }
        RowFormat::Ggml(GgmlType::Q5K) => {
            for (blk, b) in row.chunks_exact(176).enumerate() {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &b[4..16]);
                    for h in 0..2 {
                        let base = j * 32 + h * 16;
                        set(blk * 16 + 2 * j + h, std::array::from_fn(|i| q5k_value(b, base + i) as u8), d * sc as f32, -dmin * m as f32);
                    }
                }
            }
        }
        RowFormat::Ggml(GgmlType::Q6K) => {
            for (blk, b) in row.chunks_exact(210).enumerate() {
                let d = f16_at(b, 208);
                for j in 0..16 {
                    let s = d * b[192 + j] as i8 as f32;
                    set(blk * 16 + j, std::array::from_fn(|i| q6k_value(b, j * 16 + i) as u8), s, -32.0 * s);
                }
            }
        }
        RowFormat::MlxAffine { bits, group_size, params } => {
            let per_word = (32 / bits) as usize;
            let mask = (1u32 << bits) - 1;
            for sub in 0..subs {
                let g = sub * 16 / group_size;
                let value = |i: usize| {
                    let word = u32::from_le_bytes(row[4 * (i / per_word)..][..4].try_into().unwrap());
                    ((word >> ((i % per_word) as u32 * bits)) & mask) as u8
                };
                set(sub, std::array::from_fn(|i| value(sub * 16 + i)), params.read(scales, g), params.read(biases, g));
            }
        }
        other => unreachable!("{other:?} is not expanded (see `supported`)"),
    }
}

/// Activations of `tiles · 16` tokens packed for the kernel (tokens past the real count are 0).
#[derive(Default)]
pub struct PackedActs {
    /// Per tile, per 32-block, per 4-value group: 16 tokens × 4 bytes.
    pub qs: Vec<i8>,
    /// Per tile, per 32-block: 16 tokens' scales, and their sums over each 16-value half
    /// (scaled, for the offsets).
    pub d: Vec<f32>,
    pub sum_lo: Vec<f32>,
    pub sum_hi: Vec<f32>,
    pub tiles: usize,
    pub blocks: usize,
}

impl PackedActs {
    fn reset(&mut self, tokens: usize, blocks: usize) {
        let tiles = tokens.div_ceil(TILE);
        self.tiles = tiles;
        self.blocks = blocks;
        self.qs.clear();
        self.qs.resize(tiles * blocks * 32 * TILE, 0);
        for v in [&mut self.d, &mut self.sum_lo, &mut self.sum_hi] {
            v.clear();
            v.resize(tiles * blocks * TILE, 0.0);
        }
    }

    /// Stores token `t`'s quantised block `b`.
    fn put(&mut self, t: usize, b: usize, blk: &Q8Block) {
        let (tile, lane) = (t / TILE, t % TILE);
        let base = (tile * self.blocks + b) * 32 * TILE;
        for g in 0..8 {
            let dst = base + g * 4 * TILE + lane * 4;
            self.qs[dst..dst + 4].copy_from_slice(&blk.qs[g * 4..g * 4 + 4]);
        }
        let at = (tile * self.blocks + b) * TILE + lane;
        let lo: i32 = blk.qs[..16].iter().map(|&v| v as i32).sum();
        let hi: i32 = blk.qs[16..].iter().map(|&v| v as i32).sum();
        self.d[at] = blk.d;
        self.sum_lo[at] = blk.d * lo as f32;
        self.sum_hi[at] = blk.d * hi as f32;
    }

    /// Packs `tokens` rows of `blocks` quantised 32-blocks each.
    pub fn pack(&mut self, q: &[Q8Block], tokens: usize, blocks: usize) {
        self.reset(tokens, blocks);
        for t in 0..tokens {
            for b in 0..blocks {
                self.put(t, b, &q[t * blocks + b]);
            }
        }
    }

    /// Quantises and packs `tokens` rows of float activations (`blocks` · 32 each), one tile
    /// per task on the thread pool.
    pub fn quantize_and_pack(&mut self, x: &[f32], tokens: usize, blocks: usize) {
        self.reset(tokens, blocks);
        let cols = blocks * 32;
        let this = crate::pool::SharedPtr(self as *mut PackedActs);
        crate::pool::global().run(self.tiles, &|tile| {
            // SAFETY: each task writes only its own tile's region of the buffers, whose sizes
            // `reset` fixed before the parallel section.
            let packed = unsafe { &mut *this.get() };
            let mut blk = [Q8Block::default()];
            for t in tile * TILE..((tile + 1) * TILE).min(tokens) {
                for b in 0..blocks {
                    crate::act::quantize_q8(&x[t * cols + b * 32..t * cols + (b + 1) * 32], &mut blk);
                    packed.put(t, b, &blk[0]);
                }
            }
        });
    }
}

/// Float activations of `tiles · 16` tokens, packed `[tile][column][16 tokens]` for the float
/// kernel (tokens past the real count are 0).
#[derive(Default)]
pub struct PackedF32 {
    pub x: Vec<f32>,
    pub tiles: usize,
    pub cols: usize,
}

impl PackedF32 {
    /// Packs `tokens` rows of `x`, a tile per pool task (a serial pack left the other threads
    /// idle for 4% of an encoder's time).
    pub fn pack(&mut self, x: &[f32], tokens: usize, cols: usize) {
        self.tiles = tokens.div_ceil(TILE);
        self.cols = cols;
        self.x.clear();
        self.x.resize(self.tiles * cols * TILE, 0.0);
        let out = crate::pool::SharedPtr(self.x.as_mut_ptr());
        crate::pool::global().run(self.tiles, &|tile| {
            // SAFETY: each task writes only its own tile, inside the buffer sized above.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(tile * cols * TILE), cols * TILE) };
            for lane in 0..TILE.min(tokens - tile * TILE) {
                let t = tile * TILE + lane;
                for (k, &v) in x[t * cols..(t + 1) * cols].iter().enumerate() {
                    dst[k * TILE + lane] = v;
                }
            }
        });
    }
}

impl PackedF32 {
    /// Tile `t`: `[cols][16 tokens]`.
    pub fn tile(&self, t: usize) -> &[f32] {
        &self.x[t * self.cols * TILE..(t + 1) * self.cols * TILE]
    }
}

/// Float rows against one packed tile `x` (`[cols][16]`): `out[r][lane]`. Portable reference
/// for the SIMD version.
pub fn tile_f32_scalar(rows: &[&[f32]], x: &[f32], out: &mut [[f32; TILE]]) {
    for (w, o) in rows.iter().zip(out.iter_mut()) {
        o.fill(0.0);
        for (k, &wk) in w.iter().enumerate() {
            for lane in 0..TILE {
                o[lane] += wk * x[k * TILE + lane];
            }
        }
    }
}

/// `out[r · out_stride + c] = Σ_k rows[r · stride + k] · x[k · x_stride + c]` for `count` rows,
/// `k < depth` and `c < width` (a multiple of 16). Each sum runs over `k` in order — where the
/// CPU has FMA as two fused chains (even and odd `k`) added at the end, elsewhere as one chain
/// of products and sums — so an element depends neither on the other rows or columns of the
/// call nor on how they are grouped: attention relies on it (see `attend`).
#[allow(clippy::too_many_arguments)]
pub fn rows_times_tile(
    rows: &[f32],
    stride: usize,
    count: usize,
    x: &[f32],
    x_stride: usize,
    width: usize,
    depth: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if count == 0 || width == 0 {
        return;
    }
    assert!(
        depth > 0
            && width.is_multiple_of(TILE)
            && rows.len() >= (count - 1) * stride + depth
            && x.len() >= (depth - 1) * x_stride + width
            && out.len() >= (count - 1) * out_stride + width,
        "rows_times_tile shapes"
    );
    #[cfg(target_arch = "x86_64")]
    use fma::{avx2, avx512};
    let row = |r: usize| &rows[r * stride..r * stride + depth];
    let base = out.as_mut_ptr();
    let kind = crate::qdot::isa().kind;
    // Columns and rows per kernel call: as many accumulators as the registers hold.
    let (cols_per_call, rows_per_call) = match kind {
        #[cfg(target_arch = "x86_64")]
        crate::qdot::IsaKind::Avx512Vnni => (4 * TILE, 3),
        #[cfg(target_arch = "x86_64")]
        crate::qdot::IsaKind::Avx2 | crate::qdot::IsaKind::AvxVnni => (TILE, 3),
        _ => (TILE, 4),
    };
    for c0 in (0..width).step_by(cols_per_call) {
        let tiles = (width - c0).min(cols_per_call) / TILE;
        for r0 in (0..count).step_by(rows_per_call) {
            let n = rows_per_call.min(count - r0);
            let x = &x[c0..];
            // SAFETY: inside `out` (checked above).
            let o = |i: usize| unsafe { base.add((r0 + i) * out_stride + c0) };
            // SAFETY (all): the instruction set was detected, the shapes checked above; each
            // call writes `tiles` · 16 values of its own rows.
            macro_rules! call {
                ($kernel:ident; $(($r:literal, $t:literal))*) => {
                    match (n, tiles) {
                        $(($r, $t) => unsafe { $kernel::<$r, $t>(std::array::from_fn(|i| row(r0 + i)), x, x_stride, std::array::from_fn(|i| o(i))) },)*
                        _ => unreachable!("rows or tiles per call"),
                    }
                };
            }
            match kind {
                #[cfg(target_arch = "x86_64")]
                crate::qdot::IsaKind::Avx512Vnni => {
                    call!(avx512; (1, 1) (1, 2) (1, 3) (1, 4) (2, 1) (2, 2) (2, 3) (2, 4) (3, 1) (3, 2) (3, 3) (3, 4))
                }
                #[cfg(target_arch = "x86_64")]
                crate::qdot::IsaKind::Avx2 | crate::qdot::IsaKind::AvxVnni => call!(avx2; (1, 1) (2, 1) (3, 1)),
                _ => call!(plain; (1, 1) (2, 1) (3, 1) (4, 1)),
            }
        }
    }
}

/// [`rows_times_tile`]'s one-chain sums: `R` rows against `16 · T` columns.
///
/// # Safety
/// `x` holds `depth` rows of `x_stride` ≥ `16 · T` values; each `out[r]` has room for `16 · T`.
unsafe fn plain<const R: usize, const T: usize>(rows: [&[f32]; R], x: &[f32], x_stride: usize, out: [*mut f32; R]) {
    for (w, o) in rows.iter().zip(out) {
        let mut acc = [0f32; TILE];
        for (k, &wk) in w.iter().enumerate() {
            for (a, &xk) in acc.iter_mut().zip(&x[k * x_stride..][..TILE]) {
                *a += wk * xk;
            }
        }
        std::ptr::copy_nonoverlapping(acc.as_ptr(), o, TILE);
    }
}

/// [`rows_times_tile`]'s two-chain fused sums, on 512-bit and on 256-bit registers: the same
/// operations lane by lane, so both give the same bits.
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// `R` rows against `16 · T` columns.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `x` holds `depth` rows of `x_stride` ≥ `16 · T` values;
    /// each `out[r]` has room for `16 · T`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const R: usize, const T: usize>(rows: [&[f32]; R], x: &[f32], x_stride: usize, out: [*mut f32; R]) {
        let (depth, x) = (rows[0].len(), x.as_ptr());
        let mut even = [[_mm512_setzero_ps(); T]; R];
        let mut odd = [[_mm512_setzero_ps(); T]; R];
        for k in (0..depth).step_by(2) {
            let x0: [__m512; T] = std::array::from_fn(|t| _mm512_loadu_ps(x.add(k * x_stride + 16 * t)));
            for r in 0..R {
                let w = _mm512_set1_ps(*rows[r].get_unchecked(k));
                for t in 0..T {
                    even[r][t] = _mm512_fmadd_ps(w, x0[t], even[r][t]);
                }
            }
            if k + 1 < depth {
                let x1: [__m512; T] = std::array::from_fn(|t| _mm512_loadu_ps(x.add((k + 1) * x_stride + 16 * t)));
                for r in 0..R {
                    let w = _mm512_set1_ps(*rows[r].get_unchecked(k + 1));
                    for t in 0..T {
                        odd[r][t] = _mm512_fmadd_ps(w, x1[t], odd[r][t]);
                    }
                }
            }
        }
        for r in 0..R {
            for t in 0..T {
                _mm512_storeu_ps(out[r].add(16 * t), _mm512_add_ps(even[r][t], odd[r][t]));
            }
        }
    }

    /// `R` rows against 16 columns (`T` is 1: two halves of eight).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; as above otherwise.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const R: usize, const T: usize>(rows: [&[f32]; R], x: &[f32], x_stride: usize, out: [*mut f32; R]) {
        let (depth, x) = (rows[0].len(), x.as_ptr());
        let mut even = [[_mm256_setzero_ps(); 2]; R];
        let mut odd = [[_mm256_setzero_ps(); 2]; R];
        for k in (0..depth).step_by(2) {
            let x0 = [_mm256_loadu_ps(x.add(k * x_stride)), _mm256_loadu_ps(x.add(k * x_stride + 8))];
            for r in 0..R {
                let w = _mm256_set1_ps(*rows[r].get_unchecked(k));
                even[r] = [_mm256_fmadd_ps(w, x0[0], even[r][0]), _mm256_fmadd_ps(w, x0[1], even[r][1])];
            }
            if k + 1 < depth {
                let x1 = [_mm256_loadu_ps(x.add((k + 1) * x_stride)), _mm256_loadu_ps(x.add((k + 1) * x_stride + 8))];
                for r in 0..R {
                    let w = _mm256_set1_ps(*rows[r].get_unchecked(k + 1));
                    odd[r] = [_mm256_fmadd_ps(w, x1[0], odd[r][0]), _mm256_fmadd_ps(w, x1[1], odd[r][1])];
                }
            }
        }
        for r in 0..R {
            _mm256_storeu_ps(out[r], _mm256_add_ps(even[r][0], odd[r][0]));
            _mm256_storeu_ps(out[r].add(8), _mm256_add_ps(even[r][1], odd[r][1]));
        }
    }
}

/// Whether the float tile kernels of many-token products run here: the AVX-512 instruction set
/// is in use (not forced to a weaker one).
pub(crate) fn float_tiles_ok() -> bool {
    cfg!(target_arch = "x86_64") && crate::qdot::isa().kind == crate::qdot::IsaKind::Avx512Vnni
}

/// One expanded row against one tile: `out[lane]` for the tile's 16 tokens. Portable version,
/// the reference for the SIMD one.
pub fn tile_scalar(q: &[u8], a: &[f32], c: &[f32], acts: &PackedActs, tile: usize, out: &mut [f32; TILE]) {
    out.fill(0.0);
    for b in 0..acts.blocks {
        let base = (tile * acts.blocks + b) * 32 * TILE;
        let sb = (tile * acts.blocks + b) * TILE;
        for (lane, o) in out.iter_mut().enumerate() {
            let mut isum = [0i32; 2];
            for g in 0..8 {
                for k in 0..4 {
                    isum[g / 4] += q[b * 32 + g * 4 + k] as i32 * acts.qs[base + g * 4 * TILE + lane * 4 + k] as i32;
                }
            }
            *o += acts.d[sb + lane] * (a[2 * b] * isum[0] as f32 + a[2 * b + 1] * isum[1] as f32)
                + c[2 * b] * acts.sum_lo[sb + lane]
                + c[2 * b + 1] * acts.sum_hi[sb + lane];
        }
    }
}

/// Elsewhere than x86-64 the tile kernels never run ([`float_tiles_ok`] and
/// `MatrixRef::gemm_ok` are false there, so the decode kernels serve every shape); these keep
/// the callers one code path on every architecture.
#[cfg(not(target_arch = "x86_64"))]
pub mod avx512 {
    use super::{PackedActs, TILE};

    /// # Safety
    /// Never called: see the module.
    pub unsafe fn tile8x2_f32(_rows: [&[f32]; 8], _x0: &[f32], _x1: &[f32], _out: &mut [[f32; TILE]; 16]) {
        unreachable!("the float tile kernels need AVX-512")
    }

    /// # Safety
    /// Never called: see the module.
    pub unsafe fn tile<const R: usize>(_rows: [(&[u8], &[f32], &[f32]); R], _acts: &PackedActs, _tile: usize, _out: &mut [[f32; TILE]; R]) {
        unreachable!("the integer tile kernels need AVX-512 VNNI")
    }
}

#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::{PackedActs, TILE};

    /// Eight float rows against two tiles (32 tokens): `out[r][lane]` for tile `x0`,
    /// `out[8 + r][lane]` for `x1`. Sixteen accumulators keep both FMA pipes busy, and each
    /// activation load feeds eight FMAs (the weights are broadcast from L1).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `x0` and `x1` are packed tiles of `cols` columns and
    /// every row is at least `cols` long.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile8x2_f32(rows: [&[f32]; 8], x0: &[f32], x1: &[f32], out: &mut [[f32; TILE]; 16]) {
        let cols = x0.len() / TILE;
        let (x0, x1) = (x0.as_ptr(), x1.as_ptr());
        let w: [*const f32; 8] = std::array::from_fn(|r| rows[r].as_ptr());
        let mut a = [_mm512_setzero_ps(); 8];
        let mut b = [_mm512_setzero_ps(); 8];
        for k in 0..cols {
            let v0 = _mm512_loadu_ps(x0.add(k * TILE));
            let v1 = _mm512_loadu_ps(x1.add(k * TILE));
            for r in 0..8 {
                let wk = _mm512_set1_ps(*w[r].add(k));
                a[r] = _mm512_fmadd_ps(wk, v0, a[r]);
                b[r] = _mm512_fmadd_ps(wk, v1, b[r]);
            }
        }
        for r in 0..8 {
            _mm512_storeu_ps(out[r].as_mut_ptr(), a[r]);
            _mm512_storeu_ps(out[8 + r].as_mut_ptr(), b[r]);
        }
    }

    /// Expanded rows against one tile, `out[r][lane]`: `R` rows share every activation load
    /// and give the dot-product chains room to overlap.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VNNI; slices must match `acts`' shape.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn tile<const R: usize>(rows: [(&[u8], &[f32], &[f32]); R], acts: &PackedActs, tile: usize, out: &mut [[f32; TILE]; R]) {
        let mut acc = [_mm512_setzero_ps(); R];
        for b in 0..acts.blocks {
            let base = acts.qs.as_ptr().add((tile * acts.blocks + b) * 32 * TILE);
            let sb = (tile * acts.blocks + b) * TILE;
            let d = _mm512_loadu_ps(acts.d.as_ptr().add(sb));
            let slo = _mm512_loadu_ps(acts.sum_lo.as_ptr().add(sb));
            let shi = _mm512_loadu_ps(acts.sum_hi.as_ptr().add(sb));
            let mut lo = [_mm512_setzero_si512(); R];
            let mut hi = [_mm512_setzero_si512(); R];
            for g in 0..4 {
                let x_lo = _mm512_loadu_si512(base.add(g * 4 * TILE) as *const __m512i);
                let x_hi = _mm512_loadu_si512(base.add((g + 4) * 4 * TILE) as *const __m512i);
                for r in 0..R {
                    let w = rows[r].0.as_ptr().add(b * 32 + g * 4);
                    let w_lo = _mm512_set1_epi32((w as *const i32).read_unaligned());
                    let w_hi = _mm512_set1_epi32((w.add(16) as *const i32).read_unaligned());
                    lo[r] = _mm512_dpbusd_epi32(lo[r], w_lo, x_lo);
                    hi[r] = _mm512_dpbusd_epi32(hi[r], w_hi, x_hi);
                }
            }
            for r in 0..R {
                let (_, a, c) = rows[r];
                let scaled = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_set1_ps(a[2 * b]), _mm512_cvtepi32_ps(lo[r])),
                    _mm512_mul_ps(_mm512_set1_ps(a[2 * b + 1]), _mm512_cvtepi32_ps(hi[r])),
                );
                acc[r] = _mm512_fmadd_ps(d, scaled, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(c[2 * b]), slo, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(c[2 * b + 1]), shi, acc[r]);
            }
        }
        for r in 0..R {
            _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
        }
    }
}
