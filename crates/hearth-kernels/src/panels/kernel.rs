//! The panel kernel, written once over [`Lanes`]: each instruction set supplies its vector
//! operations, and the arithmetic — which sums are taken in which order — is this file's on
//! every one of them. A backend sees a 16-row panel as `SUBS` vectors of `LANES` rows (one
//! 512-bit register, two 256-bit ones, four 128-bit ones), so the layout is the same for all.

use std::ops::Range;

use super::{five_bits, has_min, is_q5, lines_per_block, Line, MLX4_BF16, Q4_K, Q5_0, Q5_K, Q6_K, Q8_0};
use crate::act::Q8Block;

/// Sub-panels per panel at most (four 128-bit registers).
pub(super) const MAX_SUBS: usize = 4;
/// How far ahead lines are prefetched (9 KB; past the end is harmless): the hardware
/// prefetchers alone left decode waiting on memory.
const PREFETCH_AHEAD: usize = 144;

/// One instruction set's vector operations for the panel kernel. `I` holds a sub-panel's four
/// bytes per row (lines) or one i32 per row (sums); `F` one f32 per row.
///
/// # Safety
/// Every method needs the CPU features the implementation is compiled for; callers check them.
pub(super) trait Lanes {
    /// Panel rows per vector, and vectors per 16-row panel.
    const LANES: usize;
    const SUBS: usize;
    /// Tokens per kernel call whose accumulators still fit the registers.
    const TOKENS: usize;
    /// What [`Lanes::q8_weights`] offsets Q8_0's signed weights by (0, or −128 where they are
    /// made unsigned for an unsigned × signed product).
    const Q8_OFFSET: f32;
    type I: Copy;
    type F: Copy;

    /// Sub-panel `s` of line `p`.
    unsafe fn line(p: *const Line, s: usize) -> Self::I;
    unsafe fn low_nibbles(v: Self::I) -> Self::I;
    unsafe fn high_nibbles(v: Self::I) -> Self::I;
    /// Sub-panel `s` of a Q8_0 line, ready for [`Lanes::dot_q8`].
    unsafe fn q8_weights(p: *const Line, s: usize) -> Self::I;
    /// Per row, Σᵢ of `wq[i]`'s four bytes (values 0 to 15) times the signed bytes
    /// `4i..4i + 4` of `x`.
    unsafe fn dot_nibbles(wq: &[Self::I; 8], x: *const i32) -> Self::I;
    /// The same for weights from [`Lanes::q8_weights`].
    unsafe fn dot_q8(wq: &[Self::I; 8], x: *const i32) -> Self::I;
    /// As [`Lanes::dot_nibbles`], for five-bit weights (values 0 to 31).
    unsafe fn dot_q5(wq: &[Self::I; 8], x: *const i32) -> Self::I {
        Self::dot_nibbles(wq, x)
    }
    /// For signed weights (−32 to 31), the sums of `wq[0..4]` and of `wq[4..8]` apart.
    unsafe fn dot_q6(wq: &[Self::I; 8], x: *const i32) -> [Self::I; 2];
    /// `LANES` f16 values at `p`.
    unsafe fn f16s(p: *const u16) -> Self::F;
    /// `LANES` bf16 values at `p`.
    unsafe fn bf16s(p: *const u16) -> Self::F;
    /// The f16 in each lane's low (high) half.
    unsafe fn f16_low(v: Self::I) -> Self::F;
    unsafe fn f16_high(v: Self::I) -> Self::F;
    unsafe fn to_f32(v: Self::I) -> Self::F;
    /// Logical right and left shifts of each lane's u32.
    unsafe fn srl(v: Self::I, bits: i32) -> Self::I;
    unsafe fn sll(v: Self::I, bits: i32) -> Self::I;
    /// Arithmetic right shift of each lane's i32.
    unsafe fn sra(v: Self::I, bits: i32) -> Self::I;
    /// Byte-wise `a - b`, wrapping.
    unsafe fn sub_bytes(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn and(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn or(a: Self::I, b: Self::I) -> Self::I;
    unsafe fn splat_i(v: i32) -> Self::I;
    unsafe fn zero() -> Self::F;
    unsafe fn splat(v: f32) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    /// `a · b + c` (fused where the instruction set has it).
    unsafe fn fmadd(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// Stores the first `n` lanes (all if `n ≥ LANES`).
    unsafe fn store(p: *mut f32, v: Self::F, n: usize);
    unsafe fn prefetch(p: *const Line);
}

pub(super) struct Panel {
    pub q: *const Line,
    /// Null where the format keeps them in its lines.
    pub d: *const u16,
    /// Null for formats without a separate minimum.
    pub m: *const u16,
    pub blocks: usize,
    /// The panel's real rows.
    pub rows: usize,
}

/// One panel against `T` tokens: `out[t][row] = Σ_blocks` of the block's weights times token
/// `t`'s activations. Every (row, token) sum is taken in the same order whatever `T` is.
///
/// # Safety
/// The CPU must have `L`'s features; `w` points at a whole panel of format `F`, each `x[t]` at
/// the row's length in 32-blocks, each `out[t]` at room for the panel's real rows.
#[inline(always)]
pub(super) unsafe fn panel<L: Lanes, const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
    let mut acc = [[L::zero(); T]; MAX_SUBS];
    for b in 0..w.blocks {
        let q = w.q.add(b * lines_per_block(F));
        for (s, acc) in acc.iter_mut().enumerate().take(L::SUBS) {
            if F == Q4_K || F == Q5_K {
                // Each lane holds its row's d and dmin.
                let f16s = L::line(q, s);
                let d = L::f16_low(f16s);
                let neg_dmin = L::sub(L::zero(), L::f16_high(f16s));
                let packed: [L::I; 3] = std::array::from_fn(|u| L::line(q.add(1 + u), s));
                // The block's lines ahead an eighth per sub-block: in one burst, the prefetches
                // held up the loads (1B model decode: 65 against 110 tok/s).
                let eighth = |j: usize| j * lines_per_block(F) / 8;
                for j in 0..8 {
                    if s == 0 {
                        prefetch_ahead::<L>(q, eighth(j)..eighth(j + 1));
                    }
                    let (scale, min) = k_scale_min::<L>(&packed, j);
                    // Sub-block j: the low (j even) or high nibbles of eight lines; Q5_K's fifth
                    // bits are bit j of the eight lines before them.
                    let nibbles_at = if F == Q5_K { 12 } else { 4 };
                    let mut wq = [L::splat_i(0); 8];
                    for (i, wq) in wq.iter_mut().enumerate() {
                        let line = L::line(q.add(nibbles_at + 8 * (j / 2) + i), s);
                        *wq = if j % 2 == 0 { L::low_nibbles(line) } else { L::high_nibbles(line) };
                        if F == Q5_K {
                            *wq = L::or(*wq, fifth_bits::<L>(L::line(q.add(4 + i), s), j));
                        }
                    }
                    let (d, m) = (L::mul(d, L::to_f32(scale)), L::mul(neg_dmin, L::to_f32(min)));
                    block32::<L, T, F>(&wq, d, m, &x, 8 * b + j, acc);
                }
            } else if F == Q6_K {
                q6k_block::<L, T>(w, q, b, s, &x, acc);
            } else {
                if s == 0 {
                    prefetch_ahead::<L>(q, 0..lines_per_block(F));
                }
                let at = b * 16 + s * L::LANES;
                let d = if F == MLX4_BF16 { L::bf16s(w.d.add(at)) } else { L::f16s(w.d.add(at)) };
                let m = match F {
                    MLX4_BF16 => L::bf16s(w.m.add(at)),
                    _ if has_min(F) => L::f16s(w.m.add(at)),
                    _ => d,
                };
                // wq[j]: the rows' weights 4j..4j + 4, against the activations' bytes 4j..4j + 4.
                let wq: [L::I; 8] = if F == Q8_0 {
                    std::array::from_fn(|j| L::q8_weights(q.add(j), s))
                } else if is_q5(F) {
                    let (fifth, lines): (L::I, [L::I; 4]) = (L::line(q, s), std::array::from_fn(|i| L::line(q.add(1 + i), s)));
                    std::array::from_fn(|j| L::or(nibbles::<L>(&lines, j), fifth_bits::<L>(fifth, j)))
                } else {
                    let lines: [L::I; 4] = std::array::from_fn(|i| L::line(q.add(i), s));
                    std::array::from_fn(|j| nibbles::<L>(&lines, j))
                };
                block32::<L, T, F>(&wq, d, m, &x, b, acc);
            }
        }
    }
    for (s, acc) in acc.iter().enumerate().take(L::SUBS) {
        let rows = w.rows.saturating_sub(s * L::LANES);
        if rows > 0 {
            for t in 0..T {
                L::store(out[t].add(s * L::LANES), acc[t], rows);
            }
        }
    }
}

/// Sub-panel `s` of Q6_K block `b` (its lines at `q`) against every token: per 32-weight
/// sub-block, the two 16-weight halves' signed sums, each times its 8-bit scale, in float.
#[inline(always)]
unsafe fn q6k_block<L: Lanes, const T: usize>(w: &Panel, q: *const Line, b: usize, s: usize, x: &[*const Q8Block; T], acc: &mut [L::F; T]) {
    let d = L::f16s(w.d.add(b * 16 + s * L::LANES));
    let eighth = |j: usize| j * lines_per_block(Q6_K) / 8;
    for j in 0..8 {
        if s == 0 {
            prefetch_ahead::<L>(q, eighth(j)..eighth(j + 1));
        }
        // Sub-block j: its low four bits in the low (j % 4 < 2) or high nibbles of eight of the
        // first 32 lines, its top two in bits 2·(j % 4) of eight of the next 16; its halves'
        // scales are bytes 2j and 2j + 1 of the last four lines.
        let (half, quarter) = (j / 4, j % 4);
        // Each scale byte sign-extended: shifted to the top, then arithmetically back.
        let scales = L::line(q.add(48 + j / 2), s);
        let k = 16 * (j as i32 % 2);
        let ds = [L::mul(d, L::to_f32(L::sra(L::sll(scales, 24 - k), 24))), L::mul(d, L::to_f32(L::sra(L::sll(scales, 16 - k), 24)))];
        // A plain loop, not `array::from_fn`: a closure the compiler declined to inline ran
        // every intrinsic as a call (a third of the speed).
        let mut wq = [L::splat_i(0); 8];
        for (i, wq) in wq.iter_mut().enumerate() {
            let low = L::line(q.add(16 * half + 8 * (quarter % 2) + i), s);
            let low = if quarter < 2 { L::low_nibbles(low) } else { L::high_nibbles(low) };
            let high = L::line(q.add(32 + 8 * half + i), s);
            let high = match quarter {
                0 => L::sll(high, 4),
                1 => L::sll(high, 2),
                2 => high,
                _ => L::srl(high, 2),
            };
            let unsigned = L::or(low, L::and(high, L::splat_i(0x3030_3030)));
            *wq = L::sub_bytes(unsigned, L::splat_i(0x2020_2020));
        }
        for t in 0..T {
            let a = &*x[t].add(8 * b + j);
            let [h0, h1] = L::dot_q6(&wq, a.qs.as_ptr().cast::<i32>());
            let sum = L::fmadd(L::to_f32(h1), ds[1], L::mul(L::to_f32(h0), ds[0]));
            acc[t] = L::fmadd(L::splat(a.d), sum, acc[t]);
        }
    }
}

/// Weights `4j..4j + 4` of a Q4 block's four lines: low nibbles, then high ones.
#[inline(always)]
unsafe fn nibbles<L: Lanes>(lines: &[L::I; 4], j: usize) -> L::I {
    match j {
        0..4 => L::low_nibbles(lines[j]),
        _ => L::high_nibbles(lines[j - 4]),
    }
}

/// The fifth bits of weights `4j..4j + 4`, each at bit 4 of its byte, from a line holding them
/// in bit `j` of every byte (Q5_0's and Q5_1's by `spread_fifth_bits`, Q5_K's as stored).
#[inline(always)]
unsafe fn fifth_bits<L: Lanes>(spread: L::I, j: usize) -> L::I {
    let moved = match j {
        0..4 => L::sll(spread, 4 - j as i32),
        4 => spread,
        _ => L::srl(spread, j as i32 - 4),
    };
    L::and(moved, L::splat_i(0x1010_1010))
}

/// Prefetches lines `lines` of the block [`PREFETCH_AHEAD`] lines after `q`.
#[inline(always)]
unsafe fn prefetch_ahead<L: Lanes>(q: *const Line, lines: Range<usize>) {
    for l in lines {
        L::prefetch(q.wrapping_add(PREFETCH_AHEAD + l));
    }
}

/// 32 weights of a sub-panel's rows (`wq[j]`: weights 4j..4j + 4) with scale `d` and minimum
/// `m` against each token's activation block `at`, added to `acc`.
#[inline(always)]
unsafe fn block32<L: Lanes, const T: usize, const F: u8>(
    wq: &[L::I; 8],
    d: L::F,
    m: L::F,
    x: &[*const Q8Block; T],
    at: usize,
    acc: &mut [L::F; T],
) {
    // Q4_0 and Q5_0 store unsigned values offset by 8 and 16; Q8_0's offset is the backend's.
    let offset = match F {
        Q8_0 => L::Q8_OFFSET,
        Q5_0 => -16.0,
        _ => -8.0,
    };
    for t in 0..T {
        let a = &*x[t].add(at);
        let qs = a.qs.as_ptr().cast::<i32>();
        let isum = L::to_f32(match F {
            Q8_0 => L::dot_q8(wq, qs),
            _ if five_bits(F) => L::dot_q5(wq, qs),
            _ => L::dot_nibbles(wq, qs),
        });
        acc[t] = if has_min(F) {
            // d·dx·Σq·qx + m·dx·Σqx
            L::fmadd(m, L::splat(a.sum), L::fmadd(L::mul(d, L::splat(a.d)), isum, acc[t]))
        } else {
            // d·(dx·Σq·qx + offset·dx·Σqx)
            L::fmadd(d, L::fmadd(L::splat(a.d), isum, L::splat(offset * a.sum)), acc[t])
        };
    }
}

/// Sub-block `j`'s 6-bit scale and minimum in each lane, from the lanes' 12 packed bytes held
/// as three dwords (`scale_min_k4` for all the lanes at once).
#[inline(always)]
unsafe fn k_scale_min<L: Lanes>(packed: &[L::I; 3], j: usize) -> (L::I, L::I) {
    let six = L::splat_i(0x3F);
    if j < 4 {
        let k = 8 * j as i32;
        return (L::and(L::srl(packed[0], k), six), L::and(L::srl(packed[1], k), six));
    }
    // Low four bits from the third dword's byte, the top two from bits 6-7 of the first's
    // (scale) or second's (minimum).
    let (k, low4, top2) = (8 * (j as i32 - 4), L::splat_i(0x0F), L::splat_i(0x30));
    let joined = |low: L::I, high: L::I| L::or(L::and(low, low4), L::and(L::srl(high, k + 2), top2));
    (joined(L::srl(packed[2], k), packed[0]), joined(L::srl(packed[2], k + 4), packed[1]))
}
