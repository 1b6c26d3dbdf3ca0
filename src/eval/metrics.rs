//! The metrics the reports use, each small enough to check by hand.

/// Spearman rank correlation (ties get their average rank). `None` with fewer than 3 points or
/// no variance.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let rx = ranks(x);
    let ry = ranks(y);
    pearson(&rx, &ry)
}

fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            r[idx[k]] = avg;
        }
        i = j + 1;
    }
    r
}

pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// The quality curve of routing by `score` (higher goes strong first): for k = 0..=n prompts
/// sent to the strong model, the mean quality. Ties are broken by index, so it is deterministic.
pub fn routing_curve(score: &[f64], weak: &[f64], strong: &[f64]) -> Vec<f64> {
    let n = score.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
    let mut q: f64 = weak.iter().sum();
    let mut out = Vec::with_capacity(n + 1);
    out.push(q / n as f64);
    for &i in &order {
        q += strong[i] - weak[i];
        out.push(q / n as f64);
    }
    out
}

/// Average performance gap recovered: the area under PGR(k) = (q(k) − q_weak) / (q_strong −
/// q_weak) as the strong share k/n goes from 0 to 1 (trapezoids over the n + 1 points).
pub fn apgr(curve: &[f64]) -> Option<f64> {
    let (first, last) = (*curve.first()?, *curve.last()?);
    let gap = last - first;
    if curve.len() < 2 || gap.abs() < 1e-12 {
        return None;
    }
    let pgr: Vec<f64> = curve.iter().map(|q| (q - first) / gap).collect();
    let steps = (pgr.len() - 1) as f64;
    Some(pgr.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / steps)
}

/// The mean APGR of random routing over `seeds` shuffles.
pub fn random_apgr(weak: &[f64], strong: &[f64], seeds: u64) -> Option<f64> {
    let mut total = 0.0;
    for s in 0..seeds {
        let mut rng = fastrand::Rng::with_seed(s);
        let score: Vec<f64> = (0..weak.len()).map(|_| rng.f64()).collect();
        total += apgr(&routing_curve(&score, weak, strong))?;
    }
    Some(total / seeds as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_by_hand() {
        assert!(
            (spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]).unwrap() - 1.0).abs()
                < 1e-12
        );
        assert!(
            (spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12
        );
        // ranks x: 1,2,3,4; y: 1,3,2,4 → d² = 0+1+1+0 = 2 → 1 − 6·2/(4·15) = 0.8
        assert!(
            (spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap() - 0.8).abs() < 1e-12
        );
    }

    #[test]
    fn apgr_of_a_four_prompt_dataset_by_hand() {
        // weak right on 0 and 1; strong right on 0, 2 and 3. q_weak = 0.5, q_strong = 0.75.
        let weak = [1.0, 1.0, 0.0, 0.0];
        let strong = [1.0, 0.0, 1.0, 1.0];
        // A router that sends 2, 3, 0, 1 in that order: q = 0.5, 0.75, 1.0, 1.0, 0.75
        let score = [0.2, 0.1, 0.9, 0.8];
        let curve = routing_curve(&score, &weak, &strong);
        assert_eq!(curve, vec![0.5, 0.75, 1.0, 1.0, 0.75]);
        // PGR = 0, 1, 2, 2, 1; trapezoids: (0+1)/2 + (1+2)/2 + (2+2)/2 + (2+1)/2 = 0.5+1.5+2+1.5 = 5.5; /4 = 1.375
        assert!((apgr(&curve).unwrap() - 1.375).abs() < 1e-12);
        // A bad router sends 1, 0, 3, 2: q = 0.5, 0.25, 0.25, 0.5, 0.75 → PGR 0, −1, −1, 0, 1
        // → trapezoids −0.5 − 1 − 0.5 + 0.5 = −1.5; /4 = −0.375.
        let rev = routing_curve(&[0.8, 0.9, 0.1, 0.2], &weak, &strong);
        assert_eq!(rev, vec![0.5, 0.25, 0.25, 0.5, 0.75]);
        assert!((apgr(&rev).unwrap() + 0.375).abs() < 1e-12);
        let r = random_apgr(&weak, &strong, 200).unwrap();
        // In expectation random routing recovers the gap linearly: APGR 0.5.
        assert!((r - 0.5).abs() < 0.1, "{r}");
    }
}
