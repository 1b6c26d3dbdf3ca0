//! The window: an intent head that also reads a convolution over the prompt's token rows, whose
//! probabilities the model pools with its intent (`--window-filters`, on by default).
//!
//! The heads and the bags read a prompt as pooled token vectors and per-token tables, so they
//! never see two tokens side by side ("sum up this", "a basic will"). The window's filters each
//! read three neighbouring tokens' rows and fire wherever their three tokens appear; the
//! strongest firing of each over the prompt joins the heads' own inputs. The rows are frozen, so
//! a filter's response to a token at each of its three places is a table (tokens × filters, int8
//! with a scale per token) that training computes once: reading a prompt is three lookups and
//! adds per token and filter, as the lexicons are. `eval/router-development.md` has the
//! prototype that found it and the measurements of the build.

use super::{kernel::Halves, Head, QuantRows};

/// Filters read this many neighbouring tokens: the one before, the token itself, the one after.
pub const TAPS: usize = 3;

#[derive(Debug, Clone)]
pub struct Window {
    pub filters: usize,
    /// `[vocab, TAPS · filters]`, int8: for each token, its response in each filter as the
    /// token before the centre, as the centre (the filter's bias folded in), and as the token
    /// after.
    pub taps: QuantRows,
    /// One per token.
    pub scales: Vec<f32>,
    /// Reads the heads' inputs, then [`Window::max_pool`].
    pub head: Head,
}

impl Window {
    /// Each filter's strongest response over the prompt, after a ReLU (0 when it never fires).
    /// A token outside the table adds nothing, as the edge's missing neighbour does.
    pub fn max_pool(&self, ids: &[u32]) -> Vec<f32> {
        let f = self.filters;
        let mut best = vec![0f32; f];
        let mut h = vec![0f32; f];
        for (i, &id) in ids.iter().enumerate() {
            h.fill(0.0);
            if i > 0 {
                self.add_tap(ids[i - 1], 0, &mut h);
            }
            self.add_tap(id, 1, &mut h);
            if let Some(&next) = ids.get(i + 1) {
                self.add_tap(next, 2, &mut h);
            }
            for (b, x) in best.iter_mut().zip(&h) {
                *b = b.max(*x);
            }
        }
        best
    }

    /// Adds token `id`'s response at place `tap` into `out` (`filters` long).
    fn add_tap(&self, id: u32, tap: usize, out: &mut [f32]) {
        let f = self.filters;
        let (Some(bytes), Some(&scale)) = (
            self.taps.row_file_bytes(id as usize),
            self.scales.get(id as usize),
        ) else {
            return;
        };
        let Some(bytes) = bytes.get(tap * f..(tap + 1) * f) else {
            return;
        };
        for (o, &b) in out.iter_mut().zip(bytes) {
            *o += scale * f32::from(b as i8);
        }
    }

    /// The intent probabilities of a prompt whose heads' inputs are `inputs` and whose tokens
    /// are `ids`. `split`, the heads' own split of `inputs` when there is one, is reused: the
    /// window's input is `inputs` and then the filters, so where `inputs` fills whole words
    /// the filters' split follows it.
    pub fn probs(&self, inputs: &[f32], split: Option<&Halves>, ids: &[u32]) -> Vec<f32> {
        let pool = self.max_pool(ids);
        let x = match split {
            Some(s) if s.values() == inputs.len() => s.then(&pool),
            _ => self.head.halves(&[inputs, &pool].concat()),
        };
        let mut hidden = Vec::with_capacity(self.head.hidden);
        let mut out = Vec::with_capacity(self.head.outputs);
        self.head.forward_halves(&x, &mut hidden, &mut out);
        super::softmax(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of two filters over a vocabulary of three tokens, whose taps are given as
    /// `[token][tap][filter]`.
    fn window(taps: [[[i8; 2]; 3]; 3], scales: [f32; 3]) -> Window {
        let values: Vec<i8> = taps.iter().flatten().flatten().copied().collect();
        Window {
            filters: 2,
            taps: QuantRows::new(6, &values, 8),
            scales: scales.to_vec(),
            head: Head {
                w1: crate::classifier::Packed::default(),
                b1: vec![],
                w2: vec![],
                b2: vec![],
                inputs: 0,
                hidden: 0,
                outputs: 0,
            },
        }
    }

    #[test]
    fn each_filter_keeps_its_strongest_window_of_three() {
        // Token 0: [before, centre, after] = [[1, 0], [2, -1], [0, 3]].
        let w = window(
            [
                [[1, 0], [2, -1], [0, 3]],
                [[0, 1], [1, 1], [-2, 0]],
                [[4, -4], [0, 0], [1, 1]],
            ],
            [1.0, 1.0, 0.5],
        );
        // One token: its centre alone, ReLU'd: [2, 0].
        assert_eq!(w.max_pool(&[0]), vec![2.0, 0.0]);
        // [0, 1]: at 0, centre(0) + after(1) = [2 − 2, −1 + 0] = [0, −1]; at 1, before(0) +
        // centre(1) = [1 + 1, 0 + 1] = [2, 1].
        assert_eq!(w.max_pool(&[0, 1]), vec![2.0, 1.0]);
        // [2, 0, 2]: token 2 at half scale. At 0: centre(2) + after(0) = [0 + 0, 0 + 3] = [0, 3];
        // at 1: before(2) + centre(0) + after(2) = [2 + 2 + 0.5, −2 − 1 + 0.5] = [4.5, −2.5];
        // at 2: before(0) + centre(2) = [1, 0].
        assert_eq!(w.max_pool(&[2, 0, 2]), vec![4.5, 3.0]);
        // A token outside the table adds nothing where it stands: [7, 0, 7] reads after(0) =
        // [0, 3] at 0, centre(0) = [2, −1] at 1 and before(0) = [1, 0] at 2. No tokens: no firing.
        assert_eq!(w.max_pool(&[7, 0, 7]), vec![2.0, 3.0]);
        assert_eq!(w.max_pool(&[]), vec![0.0, 0.0]);
    }
}
