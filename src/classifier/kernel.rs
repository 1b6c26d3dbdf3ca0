//! The heads' first layers in the widest SIMD the CPU has, chosen at run time through `pulp`
//! (AVX2 with FMA on x86-64, NEON on aarch64, plain code elsewhere). A release build targets
//! baseline x86-64 unless told otherwise, so plain loops compile to 4-lane SSE2; six heads over
//! 1,300 inputs were most of a classification's time that way.
//!
//! The heads' first layers are read as bf16 ([`pack_bf16`], [`affine_bf16`]): the six intent
//! and domain heads (64 × 1,316 each) and the window's (64 × 1,380) are 2.4 MB of f32, more than
//! this machine's 2 MB of L2 cache per core, so every classification read them again from L3; as
//! bf16 they are 1.2 MB and stay in L2. A bf16 value is the top half of an f32's bits, so widening
//! one is a shift or a mask, which `pulp`'s portable integer operations do without F16C.
//! Little-endian bf16 rows of even width are already the packed words, so a model file's first
//! layers are read where they lie ([`bf16_words_in_place`]) when its bytes sit on a 4-byte
//! boundary, as the embedded model's and a loaded folder's do.

use pulp::{Arch, Simd, WithSimd};

/// Rows read together: each load of `x` serves this many rows of `w`.
const BLOCK: usize = 4;

/// `out[r] = bias[r] + w[r] · x` for every row `r` of the row-major `w`, which holds
/// `out.len()` rows of equal width. When `x` and the rows differ in length, the shorter one
/// decides (a missing value reads as zero).
pub fn affine(w: &[f32], bias: &[f32], x: &[f32], out: &mut [f32]) {
    Arch::new().dispatch(Affine {
        rows: Rows::F32 { w, x },
        bias,
        out,
    });
}

/// `out = bias + W · x` for one of the two kinds of rows, in the SIMD `pulp` chose.
struct Affine<'a> {
    rows: Rows<'a>,
    bias: &'a [f32],
    out: &'a mut [f32],
}

enum Rows<'a> {
    /// f32 rows and `x` ([`affine`]).
    F32 { w: &'a [f32], x: &'a [f32] },
    /// Rows of `words` words packed by [`pack_bf16`], and the values of `x` that meet the low and
    /// high halves of their first words ([`affine_bf16`]), no more than a row has.
    Bf16 {
        w: &'a [u32],
        words: usize,
        even: &'a [f32],
        odd: &'a [f32],
    },
}

impl WithSimd for Affine<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Affine { rows, bias, out } = self;
        match rows {
            Rows::F32 { w, x } => {
                let width = w.len() / out.len().max(1);
                let n = width.min(x.len());
                let (xv, xt) = S::as_simd_f32s(&x[..n]);
                // A width of 0 reads rows of one value each, none of it (`n` is 0).
                let rows = w.chunks_exact(width.max(1)).map(|row| &row[..n]);
                add_dots(
                    bias,
                    out,
                    rows,
                    |rows| dots::<S, BLOCK>(simd, rows, xv, xt),
                    |row| dots::<S, 1>(simd, [row], xv, xt)[0],
                );
            }
            Rows::Bf16 {
                w,
                words,
                even,
                odd,
            } => {
                let x = (S::as_simd_f32s(even), S::as_simd_f32s(odd));
                let n = even.len();
                add_dots(
                    bias,
                    out,
                    w.chunks_exact(words.max(1)).map(|row| &row[..n]),
                    |rows| bf16_dots::<S, BLOCK>(simd, rows, x),
                    |row| bf16_dots::<S, 1>(simd, [row], x)[0],
                );
            }
        }
    }
}

/// Sets `out` to `bias` (zero past its end), then adds each row's dot product: `BLOCK` rows at a
/// time through `block`, the rest one by one through `one`.
#[inline(always)]
fn add_dots<'w, T: 'w>(
    bias: &[f32],
    out: &mut [f32],
    mut rows: impl Iterator<Item = &'w [T]>,
    block: impl Fn([&'w [T]; BLOCK]) -> [f32; BLOCK],
    one: impl Fn(&'w [T]) -> f32,
) {
    for (o, b) in out
        .iter_mut()
        .zip(bias.iter().chain(std::iter::repeat(&0.0)))
    {
        *o = *b;
    }
    let mut blocks = out.chunks_exact_mut(BLOCK);
    for o in blocks.by_ref() {
        let rows: [&[T]; BLOCK] = std::array::from_fn(|_| rows.next().unwrap_or(&[]));
        for (o, s) in o.iter_mut().zip(block(rows)) {
            *o += s;
        }
    }
    for (o, row) in blocks.into_remainder().iter_mut().zip(rows) {
        *o += one(row);
    }
}

/// The dot products of `R` rows with `x` (split as `xv`, its whole vectors, and `xt`, the rest),
/// each row in two accumulators so consecutive fused multiply-adds do not wait on each other.
#[inline(always)]
fn dots<S: Simd, const R: usize>(
    simd: S,
    rows: [&[f32]; R],
    xv: &[S::f32s],
    xt: &[f32],
) -> [f32; R] {
    let split: [(&[S::f32s], &[f32]); R] = rows.map(S::as_simd_f32s);
    let zero = simd.splat_f32s(0.0);
    let mut even = [zero; R];
    let mut odd = [zero; R];
    let pairs = xv.len() / 2;
    for k in 0..pairs {
        let (a, b) = (xv[2 * k], xv[2 * k + 1]);
        for i in 0..R {
            even[i] = simd.mul_add_f32s(split[i].0[2 * k], a, even[i]);
            odd[i] = simd.mul_add_f32s(split[i].0[2 * k + 1], b, odd[i]);
        }
    }
    if xv.len() % 2 == 1 {
        let a = xv[xv.len() - 1];
        for i in 0..R {
            even[i] = simd.mul_add_f32s(split[i].0[xv.len() - 1], a, even[i]);
        }
    }
    std::array::from_fn(|i| {
        let tail: f32 = split[i].1.iter().zip(xt).map(|(w, x)| w * x).sum();
        simd.reduce_sum_f32s(simd.add_f32s(even[i], odd[i])) + tail
    })
}

/// `x` rounded to the nearest bf16 (ties to even), as the top half of its f32 bits.
fn bf16_bits(x: f32) -> u32 {
    u32::from(half::bf16::from_f32(x).to_bits())
}

/// The f32 that the bf16 in the low half of `bits` stands for.
pub fn bf16_value(bits: u32) -> f32 {
    f32::from_bits(bits << 16)
}

/// The rows of the row-major `w` (`width` values each) as bf16, two to a `u32`: value `2j` of a
/// row in the low half of its `j`th word and value `2j + 1` in the high half (an odd row ends in
/// a zero). [`affine_bf16`] reads them.
pub fn pack_bf16(w: &[f32], width: usize) -> Vec<u32> {
    if width == 0 {
        return Vec::new();
    }
    w.chunks(width)
        .flat_map(|row| {
            row.chunks(2).map(|p| {
                let lo = bf16_bits(p[0]);
                let hi = p.get(1).map_or(0, |&v| bf16_bits(v));
                lo | hi << 16
            })
        })
        .collect()
}

/// The words of bf16 rows in a model file's own bytes, as [`pack_bf16`] would pack them, when they
/// can be read in place: a row of `width` values, `width` even, is `width / 2` words whose low
/// half is the value at the even place, which is how little-endian bf16 lies in memory. `None`
/// when the bytes are not on a 4-byte boundary, the width is odd (a row would end mid-word) or
/// the machine is big-endian; the caller then packs a copy.
pub fn bf16_words_in_place(bytes: &[u8], width: usize) -> Option<&[u32]> {
    if cfg!(target_endian = "big") || width % 2 == 1 {
        return None;
    }
    bytemuck::try_cast_slice(bytes).ok()
}

/// An input as [`affine_bf16`] reads it: its values at even places, which meet the low halves of
/// a packed row's words, and at odd places, which meet the high halves. Heads that read the same
/// input share one.
#[derive(Debug, Clone)]
pub struct Halves {
    even: Vec<f32>,
    odd: Vec<f32>,
}

impl Halves {
    /// `x` for rows of `words` words: `words` values of each kind, zero past `x`'s end.
    pub fn of(x: &[f32], words: usize) -> Halves {
        let mut even = vec![0f32; words];
        let mut odd = vec![0f32; words];
        for (j, pair) in x.chunks(2).take(words).enumerate() {
            even[j] = pair[0];
            odd[j] = pair.get(1).copied().unwrap_or(0.0);
        }
        Halves { even, odd }
    }

    /// How many values this split holds: twice its words.
    pub fn values(&self) -> usize {
        2 * self.even.len()
    }

    /// This input followed by `more`: what [`Halves::of`] gives for the two joined, for rows as
    /// long as both together, since this split ends on a whole word.
    pub fn then(&self, more: &[f32]) -> Halves {
        let tail = Halves::of(more, more.len().div_ceil(2));
        let mut h = self.clone();
        h.even.extend(tail.even);
        h.odd.extend(tail.odd);
        h
    }
}

/// [`affine`] over rows packed by [`pack_bf16`]: `out[r] = bias[r] + w[r] · x`, each row
/// `w.len() / out.len()` words (twice as many values). When `x` and the rows differ in length,
/// the shorter one decides (a missing value reads as zero).
pub fn affine_bf16(w: &[u32], bias: &[f32], x: &Halves, out: &mut [f32]) {
    let words = w.len() / out.len().max(1);
    let n = words.min(x.even.len());
    Arch::new().dispatch(Affine {
        rows: Rows::Bf16 {
            w,
            words,
            even: &x.even[..n],
            odd: &x.odd[..n],
        },
        bias,
        out,
    });
}

/// A slice of f32 as its whole vectors and the rest.
type Split<'a, S> = (&'a [<S as Simd>::f32s], &'a [f32]);

/// The dot products of `R` packed rows with `x`, given as the values that meet the words' low
/// halves and high halves, each split into whole vectors and the rest.
#[inline(always)]
fn bf16_dots<S: Simd, const R: usize>(
    simd: S,
    rows: [&[u32]; R],
    ((ev, et), (ov, ot)): (Split<'_, S>, Split<'_, S>),
) -> [f32; R] {
    let split: [(&[S::u32s], &[u32]); R] = rows.map(S::as_simd_u32s);
    let zero = simd.splat_f32s(0.0);
    let high = simd.splat_u32s(0xffff_0000);
    let sixteen = simd.splat_u32s(16);
    let mut lo = [zero; R];
    let mut hi = [zero; R];
    for (k, (&e, &o)) in ev.iter().zip(ov).enumerate() {
        for i in 0..R {
            let v = split[i].0[k];
            let l = simd.transmute_f32s_u32s(simd.wrapping_dyn_shl_u32s(v, sixteen));
            let h = simd.transmute_f32s_u32s(simd.and_u32s(v, high));
            lo[i] = simd.mul_add_f32s(l, e, lo[i]);
            hi[i] = simd.mul_add_f32s(h, o, hi[i]);
        }
    }
    std::array::from_fn(|i| {
        let tail: f32 = split[i]
            .1
            .iter()
            .zip(et.iter().zip(ot))
            .map(|(&v, (&e, &o))| bf16_value(v & 0xffff) * e + bf16_value(v >> 16) * o)
            .sum();
        simd.reduce_sum_f32s(simd.add_f32s(lo[i], hi[i])) + tail
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row count around the block and every length around the vector width, against a
    /// plain f64 sum.
    #[test]
    fn affine_matches_a_plain_sum_for_every_shape() {
        let mut rng = fastrand::Rng::with_seed(5);
        for rows in [1, 3, 4, 5, 8, 13] {
            for n in [0, 1, 7, 8, 9, 15, 16, 17, 33, 100] {
                let w: Vec<f32> = (0..rows * n).map(|_| rng.f32() - 0.5).collect();
                let x: Vec<f32> = (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect();
                let bias: Vec<f32> = (0..rows).map(|_| rng.f32()).collect();
                let mut out = vec![f32::NAN; rows];
                affine(&w, &bias, &x, &mut out);
                for r in 0..rows {
                    let want = f64::from(bias[r])
                        + (0..n)
                            .map(|k| f64::from(w[r * n + k]) * f64::from(x[k]))
                            .sum::<f64>();
                    assert!(
                        (f64::from(out[r]) - want).abs() < 1e-5,
                        "rows {rows}, n {n}, row {r}: {} against {want}",
                        out[r]
                    );
                }
            }
        }
    }

    /// Little-endian bf16 bytes read in place are the words [`pack_bf16`] makes of the same
    /// values; an odd width or bytes off a 4-byte boundary are not read in place.
    #[test]
    fn bf16_bytes_in_place_are_the_packed_words() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (rows, width) = (3, 10);
        let w: Vec<f32> = (0..rows * width).map(|_| rng.f32() - 0.5).collect();
        let le: Vec<u8> = w
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        // Words own 4-byte-aligned memory; their bytes, and the same bytes one byte along.
        let mut words = vec![0u32; le.len() / 4 + 1];
        let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
        buf[..le.len()].copy_from_slice(&le);
        assert_eq!(
            bf16_words_in_place(&buf[..le.len()], width),
            Some(&pack_bf16(&w, width)[..])
        );
        assert_eq!(bf16_words_in_place(&buf[..le.len()], width - 1), None);
        buf.copy_within(..le.len(), 1);
        assert_eq!(bf16_words_in_place(&buf[1..=le.len()], width), None);
    }

    /// A split followed by more values is the split of the two joined.
    #[test]
    fn a_split_then_more_is_the_split_of_both() {
        let x: Vec<f32> = (0..9).map(|i| i as f32).collect();
        for more in [&x[4..4], &x[4..7], &x[4..9]] {
            let joined = [&x[..4], more].concat();
            let a = Halves::of(&x[..4], 2).then(more);
            let b = Halves::of(&joined, joined.len().div_ceil(2));
            assert_eq!((a.even, a.odd), (b.even, b.odd));
        }
        assert_eq!(Halves::of(&x, 3).values(), 6);
    }

    /// Every row count around the block, and every width and `x` length around the vector
    /// width, against a plain f64 sum over the weights rounded to bf16.
    #[test]
    fn affine_bf16_matches_a_plain_sum_of_the_rounded_weights() {
        let mut rng = fastrand::Rng::with_seed(6);
        for rows in [1, 3, 4, 5, 8, 13] {
            for width in [0usize, 1, 2, 7, 15, 16, 17, 33, 34, 100] {
                for n in [width, width.saturating_sub(3), width + 5] {
                    let w: Vec<f32> = (0..rows * width).map(|_| rng.f32() - 0.5).collect();
                    let x: Vec<f32> = (0..n).map(|_| rng.f32() * 4.0 - 2.0).collect();
                    let bias: Vec<f32> = (0..rows).map(|_| rng.f32()).collect();
                    let packed = pack_bf16(&w, width);
                    assert_eq!(packed.len(), rows * width.div_ceil(2));
                    let mut out = vec![f32::NAN; rows];
                    affine_bf16(&packed, &bias, &Halves::of(&x, width.div_ceil(2)), &mut out);
                    for r in 0..rows {
                        let want = f64::from(bias[r])
                            + (0..width.min(n))
                                .map(|k| {
                                    let v = half::bf16::from_f32(w[r * width + k]).to_f32();
                                    f64::from(v) * f64::from(x[k])
                                })
                                .sum::<f64>();
                        assert!(
                            (f64::from(out[r]) - want).abs() < 1e-5,
                            "rows {rows}, width {width}, n {n}, row {r}: {} against {want}",
                            out[r]
                        );
                    }
                }
            }
        }
    }
}
