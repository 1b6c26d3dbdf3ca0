//! The heads' first layers in the widest SIMD the CPU has, chosen at run time through `pulp`
//! (AVX2 with FMA on x86-64, NEON on aarch64, plain code elsewhere). A release build targets
//! baseline x86-64 unless told otherwise, so plain loops compile to 4-lane SSE2; six heads over
//! 1,300 inputs were most of a classification's time that way.

use pulp::{Arch, Simd, WithSimd};

/// Rows read together: each load of `x` serves this many rows of `w`.
const BLOCK: usize = 4;

/// `out[r] = bias[r] + w[r] · x` for every row `r` of the row-major `w`, which holds
/// `out.len()` rows of equal width. When `x` and the rows differ in length, the shorter one
/// decides (a missing value reads as zero).
pub fn affine(w: &[f32], bias: &[f32], x: &[f32], out: &mut [f32]) {
    Arch::new().dispatch(Affine { w, bias, x, out });
}

struct Affine<'a> {
    w: &'a [f32],
    bias: &'a [f32],
    x: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for Affine<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Affine { w, bias, x, out } = self;
        for (o, b) in out
            .iter_mut()
            .zip(bias.iter().chain(std::iter::repeat(&0.0)))
        {
            *o = *b;
        }
        let width = w.len() / out.len().max(1);
        let n = width.min(x.len());
        if n == 0 {
            return;
        }
        let (xv, xt) = S::as_simd_f32s(&x[..n]);
        let mut rows = w.chunks_exact(width).map(|row| &row[..n]);
        let mut blocks = out.chunks_exact_mut(BLOCK);
        for block in blocks.by_ref() {
            let rows: [&[f32]; BLOCK] = std::array::from_fn(|_| rows.next().unwrap_or(&[]));
            for (o, s) in block.iter_mut().zip(dots::<S, BLOCK>(simd, rows, xv, xt)) {
                *o += s;
            }
        }
        for (o, row) in blocks.into_remainder().iter_mut().zip(rows) {
            let [s] = dots::<S, 1>(simd, [row], xv, xt);
            *o += s;
        }
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
}
