//! The reports' SVG plots, drawn with plotters.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::EvalError;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];
const MARKERS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(188, 189, 34),
];

fn werr(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-9);
    (lo - pad, hi + pad)
}

/// Curves (a line each) and single points (a marker each) on one cost/quality chart.
pub fn curves(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[(String, Vec<(f64, f64)>)],
    points: &[(String, (f64, f64))],
) -> Result<(), EvalError> {
    let xs = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.0))
        .chain(points.iter().map(|p| p.1 .0));
    let ys = lines
        .iter()
        .flat_map(|l| l.1.iter().map(|p| p.1))
        .chain(points.iter().map(|p| p.1 .1));
    let (x0, x1) = span(xs);
    let (y0, y1) = span(ys);
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| werr(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| werr(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| werr(path, e))?;
    for (i, (name, pts)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        // Thousands of points draw the same line as a few hundred.
        let step = (pts.len() / 400).max(1);
        let thinned: Vec<(f64, f64)> = pts
            .iter()
            .copied()
            .enumerate()
            .filter(|(k, _)| k % step == 0 || *k == pts.len() - 1)
            .map(|(_, p)| p)
            .collect();
        chart
            .draw_series(LineSeries::new(thinned, color.stroke_width(2)))
            .map_err(|e| werr(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    for (i, (name, p)) in points.iter().enumerate() {
        let color = MARKERS[i % MARKERS.len()];
        chart
            .draw_series(std::iter::once(Circle::new(*p, 5, color.filled())))
            .map_err(|e| werr(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| werr(path, e))?;
    root.present().map_err(|e| werr(path, e))
}

/// A confusion matrix: rows are the true labels, columns the predictions, shaded by row share.
pub fn confusion(
    path: &Path,
    title: &str,
    labels: &[String],
    m: &[Vec<usize>],
) -> Result<(), EvalError> {
    let k = labels.len() as i32;
    let size = (200 + 100 * k.max(2) as u32, 150 + 36 * k.max(2) as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| werr(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(50)
        .y_label_area_size(120)
        // An integer range's segments include both ends: 0..k − 1 gives k of them.
        .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
        .map_err(|e| werr(path, e))?;
    let name = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if *i >= 0 && *i < k => labels[*i as usize].clone(),
        _ => String::new(),
    };
    // Row i (true label) is drawn from the top.
    let row_name = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if *i >= 0 && *i < k => labels[(k - 1 - *i) as usize].clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k as usize)
        .y_labels(k as usize)
        .x_label_formatter(&name)
        .y_label_formatter(&row_name)
        .x_label_style(("sans-serif", 12))
        .x_desc("predicted")
        .y_desc("true")
        .draw()
        .map_err(|e| werr(path, e))?;
    for (i, row) in m.iter().enumerate() {
        let total: usize = row.iter().sum();
        let y = k - 1 - i as i32;
        for (j, &c) in row.iter().enumerate() {
            let share = if total > 0 {
                c as f64 / total as f64
            } else {
                0.0
            };
            let shade = (255.0 - 200.0 * share) as u8;
            let x = j as i32;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                    ],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(|e| werr(path, e))?;
            if c > 0 {
                chart
                    .draw_series(std::iter::once(Text::new(
                        c.to_string(),
                        (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                        ("sans-serif", 12),
                    )))
                    .map_err(|e| werr(path, e))?;
            }
        }
    }
    root.present().map_err(|e| werr(path, e))
}

/// Per confidence bin: (mean confidence, accuracy, count).
pub type Bins = Vec<(f64, f64, usize)>;

/// A reliability diagram: per confidence bin, the accuracy, against the diagonal.
pub fn reliability(path: &Path, title: &str, heads: &[(String, Bins)]) -> Result<(), EvalError> {
    let root = SVGBackend::new(path, (560, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| werr(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| werr(path, e))?;
    chart
        .configure_mesh()
        .x_desc("confidence (top label's probability)")
        .y_desc("accuracy")
        .draw()
        .map_err(|e| werr(path, e))?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            BLACK.mix(0.4),
        ))
        .map_err(|e| werr(path, e))?
        .label("perfect calibration")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
    for (i, (name, bins)) in heads.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = bins
            .iter()
            .filter(|b| b.2 > 0)
            .map(|b| (b.0, b.1))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| werr(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
            .map_err(|e| werr(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| werr(path, e))?;
    root.present().map_err(|e| werr(path, e))
}
