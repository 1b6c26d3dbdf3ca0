//! Bags: multinomial logistic regressions over a prompt's TF-IDF bag of tokens, whose
//! probabilities the model pools with its heads' (`--intent-bag` for the intent, on by default;
//! `--domain-bag` for the domain).
//!
//! The heads read pooled embeddings and lexicon summaries, which blur the one or two words
//! that say what a prompt asks for ("tl;dr", "which of these", "pull out"), and the naive-Bayes
//! intent lexicon counts every token as independent evidence. A discriminative linear model
//! over the tokens weighs them against each other instead, and it errs on other prompts than the
//! heads do: on everyday prompts their mixture beats either alone (`eval/router-development.md`).

use super::{softmax, Values};

/// A multinomial logistic regression over a prompt's TF-IDF bag of tokens
/// ([`super::ComplexityLexicon::bag`], with the model's `token_idf`, which the complexity lexicon
/// reads too).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BagModel {
    pub labels: usize,
    /// `[vocab, labels]`, row-major.
    pub rows: Values,
    /// One per label.
    pub bias: Vec<f32>,
}

impl BagModel {
    /// The probability of each label for a prompt whose TF-IDF bag of tokens is `tfidf`; a
    /// token outside the vocabulary counts for nothing.
    pub fn probs(&self, tfidf: &[(u32, f32)]) -> Vec<f32> {
        let n = self.labels;
        let mut z = self.bias.clone();
        z.resize(n, 0.0);
        let mut buf = Vec::with_capacity(n);
        for &(t, v) in tfidf {
            let at = t as usize * n;
            if let Some(row) = self.rows.row_in(at, n, &mut buf) {
                for (zz, w) in z.iter_mut().zip(row) {
                    *zz += v * w;
                }
            }
        }
        softmax(&mut z);
        z
    }
}

/// One training prompt of [`fit`]: its TF-IDF bag, label and loss weight.
pub struct BagExample<'a> {
    pub bag: &'a [(u32, f32)],
    pub label: usize,
    pub weight: f64,
}

/// How [`fit`] stops: at most `max_iter` L-BFGS steps, or when the largest gradient entry is
/// below `tolerance`.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// The L2 penalty of the token weights (not of the biases), against the weighted mean loss.
    pub l2: f64,
    pub max_iter: usize,
    pub tolerance: f64,
}

/// The weighted mean cross-entropy of the examples plus `l2 / 2 · ‖W‖²`, and its gradient in
/// `grad` (same layout as `theta`: `[vocab, labels]` weights, then the `labels` biases).
fn loss_and_grad(
    examples: &[BagExample],
    labels: usize,
    l2: f64,
    theta: &[f64],
    grad: &mut [f64],
) -> f64 {
    let biases = theta.len() - labels;
    grad.fill(0.0);
    let total: f64 = examples
        .iter()
        .map(|e| e.weight)
        .sum::<f64>()
        .max(f64::MIN_POSITIVE);
    let mut loss = 0.0;
    let mut z = vec![0f64; labels];
    for e in examples {
        z.copy_from_slice(&theta[biases..]);
        for &(t, v) in e.bag {
            let at = t as usize * labels;
            for (zz, w) in z.iter_mut().zip(&theta[at..at + labels]) {
                *zz += f64::from(v) * w;
            }
        }
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = z.iter().map(|x| (x - m).exp()).sum();
        loss += e.weight / total * (m + sum.ln() - z[e.label]);
        // d loss / d z = weight / total · (p − onehot).
        for (k, zz) in z.iter_mut().enumerate() {
            let p = (*zz - m).exp() / sum;
            *zz = e.weight / total * (p - f64::from(u8::from(k == e.label)));
        }
        for &(t, v) in e.bag {
            let at = t as usize * labels;
            for (g, d) in grad[at..at + labels].iter_mut().zip(&z) {
                *g += f64::from(v) * d;
            }
        }
        for (g, d) in grad[biases..].iter_mut().zip(&z) {
            *g += d;
        }
    }
    let mut penalty = 0.0;
    for (g, w) in grad[..biases].iter_mut().zip(&theta[..biases]) {
        *g += l2 * w;
        penalty += w * w;
    }
    loss + l2 / 2.0 * penalty
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fits the regression by L-BFGS (10 corrections, backtracking line search): deterministic, and
/// the loss is convex, so the result is the one minimum up to the tolerance. Every example's bag
/// must index below `vocab`. Returns the weights `[vocab, labels]` and the biases.
pub fn fit(
    examples: &[BagExample],
    vocab: usize,
    labels: usize,
    opts: FitOptions,
) -> (Vec<f64>, Vec<f64>) {
    const MEMORY: usize = 10;
    let size = vocab * labels + labels;
    let mut theta = vec![0f64; size];
    let mut grad = vec![0f64; size];
    let mut loss = loss_and_grad(examples, labels, opts.l2, &theta, &mut grad);
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let mut next = vec![0f64; size];
    let mut next_grad = vec![0f64; size];
    for _ in 0..opts.max_iter {
        if grad.iter().all(|g| g.abs() < opts.tolerance) {
            break;
        }
        // The two-loop recursion: the direction −H·grad.
        let mut d: Vec<f64> = grad.iter().map(|g| -g).collect();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &d);
            for (dd, yy) in d.iter_mut().zip(y) {
                *dd -= a * yy;
            }
            alphas.push(a);
        }
        if let Some((s, y, _)) = history.back() {
            let gamma = dot(s, y) / dot(y, y).max(f64::MIN_POSITIVE);
            for dd in &mut d {
                *dd *= gamma;
            }
        }
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &d);
            for (dd, ss) in d.iter_mut().zip(s) {
                *dd += (a - b) * ss;
            }
        }
        let mut slope = dot(&grad, &d);
        if slope >= 0.0 {
            // Not a descent direction (curvature went wrong): restart from steepest descent.
            history.clear();
            d = grad.iter().map(|g| -g).collect();
            slope = dot(&grad, &d);
        }
        let mut step = if history.is_empty() {
            1.0 / grad.iter().map(|g| g * g).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..30 {
            for ((n, t), dd) in next.iter_mut().zip(&theta).zip(&d) {
                *n = t + step * dd;
            }
            let l = loss_and_grad(examples, labels, opts.l2, &next, &mut next_grad);
            if l <= loss + 1e-4 * step * slope {
                accepted = Some(l);
                break;
            }
            step /= 2.0;
        }
        let Some(new_loss) = accepted else {
            break;
        };
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
        std::mem::swap(&mut theta, &mut next);
        std::mem::swap(&mut grad, &mut next_grad);
        let done = (loss - new_loss).abs() <= 1e-10 * loss.abs().max(1.0);
        loss = new_loss;
        if done {
            break;
        }
    }
    let bias = theta.split_off(vocab * labels);
    (theta, bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FitOptions {
        FitOptions {
            l2: 1e-4,
            max_iter: 200,
            tolerance: 1e-7,
        }
    }

    /// Token 0 says label 0, token 1 label 1, token 2 label 2; token 3 is in every prompt.
    fn toy() -> Vec<(Vec<(u32, f32)>, usize)> {
        let mut rows = Vec::new();
        for k in 0..3u32 {
            for _ in 0..5 {
                rows.push((vec![(k, 0.8), (3, 0.6)], k as usize));
            }
        }
        rows
    }

    #[test]
    fn the_fit_learns_which_token_says_which_label() {
        let rows = toy();
        let examples: Vec<BagExample> = rows
            .iter()
            .map(|(bag, label)| BagExample {
                bag,
                label: *label,
                weight: 1.0,
            })
            .collect();
        let (w, b) = fit(&examples, 4, 3, opts());
        let model = BagModel {
            labels: 3,
            rows: w.iter().map(|x| *x as f32).collect::<Vec<f32>>().into(),
            bias: b.iter().map(|x| *x as f32).collect(),
        };
        for k in 0..3u32 {
            let p = model.probs(&[(k, 0.8), (3, 0.6)]);
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let best = (0..3).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
            assert_eq!(best, k as usize, "{p:?}");
            assert!(p[k as usize] > 0.9, "{p:?}");
        }
        // The shared token carries no label: its weights are equal across labels.
        let shared = &w[9..12];
        assert!(
            shared.iter().all(|x| (x - shared[0]).abs() < 1e-3),
            "{shared:?}"
        );
    }

    #[test]
    fn the_gradient_matches_finite_differences() {
        let rows = toy();
        let examples: Vec<BagExample> = rows
            .iter()
            .enumerate()
            .map(|(i, (bag, label))| BagExample {
                bag,
                label: *label,
                weight: 1.0 + i as f64 % 3.0,
            })
            .collect();
        let labels = 3;
        let theta: Vec<f64> = (0..4 * labels + labels)
            .map(|i| ((i * 7919) % 13) as f64 / 13.0 - 0.5)
            .collect();
        let mut grad = vec![0.0; theta.len()];
        loss_and_grad(&examples, labels, 0.1, &theta, &mut grad);
        let mut scratch = vec![0.0; theta.len()];
        for i in 0..theta.len() {
            let h = 1e-6;
            let (mut up, mut down) = (theta.clone(), theta.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (loss_and_grad(&examples, labels, 0.1, &up, &mut scratch)
                - loss_and_grad(&examples, labels, 0.1, &down, &mut scratch))
                / (2.0 * h);
            assert!(
                (numeric - grad[i]).abs() < 1e-6,
                "{i}: {numeric} vs {}",
                grad[i]
            );
        }
    }

    #[test]
    fn a_weight_moves_the_fit_towards_its_example() {
        // The same bag with two labels: the heavier example's label wins.
        let bag = vec![(0u32, 1.0f32)];
        let examples = [
            BagExample {
                bag: &bag,
                label: 0,
                weight: 1.0,
            },
            BagExample {
                bag: &bag,
                label: 1,
                weight: 3.0,
            },
        ];
        let (w, b) = fit(&examples, 1, 2, opts());
        let z: Vec<f64> = (0..2).map(|k| w[k] + b[k]).collect();
        let p1 = 1.0 / (1.0 + (z[0] - z[1]).exp());
        assert!((p1 - 0.75).abs() < 0.01, "{p1}");
    }

    #[test]
    fn an_empty_bag_or_unknown_tokens_give_the_biases_alone() {
        let model = BagModel {
            labels: 2,
            rows: vec![5.0, -5.0, 9.0, -9.0].into(),
            bias: vec![0.0, 0.0],
        };
        // Token 1 has no idf, so the TF-IDF bag leaves it out, and token 7 is outside the
        // vocabulary: neither counts.
        let idf = [1.0, 0.0];
        for ids in [&[][..], &[1, 7][..]] {
            let p = model.probs(&super::super::ComplexityLexicon::bag_of_sorted(&idf, ids));
            assert!((p[0] - 0.5).abs() < 1e-6, "{p:?}");
        }
        let token_0 = super::super::ComplexityLexicon::bag_of_sorted(&idf, &[0]);
        assert!(model.probs(&token_0)[0] > 0.99);
    }
}
