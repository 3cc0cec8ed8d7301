//! The report's charts as inline SVG, drawn with plotters: lines over steps, and the
//! precision-recall curve.

use plotters::prelude::*;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn range(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A line chart of one or more series as an SVG string.
pub(super) fn line_chart(
    id: &str,
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    y_label: &str,
    y_range: Option<(f64, f64)>,
) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (500, 300)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).collect::<Vec<_>>();
        let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y)).collect::<Vec<_>>();
        let (x0, x1) = range(xs.iter().copied());
        let (y0, y1) = y_range.unwrap_or_else(|| range(ys.iter().copied()));
        let chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(x0.max(0.0)..x1, y0..y1);
        let Ok(mut chart) = chart else { return String::new() };
        // No more x labels than whole steps in the range, so that short runs repeat none.
        let x_labels = ((x1 - x0.max(0.0)).ceil() as usize + 1).clamp(2, 10);
        let _ = chart
            .configure_mesh()
            .x_labels(x_labels)
            .x_desc(x_label)
            .y_desc(y_label)
            .y_label_formatter(&|v| format_tick(*v))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(RGBColor(235, 235, 235))
            .draw();
        for (i, (name, points)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if let Ok(drawn) =
                chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            {
                drawn.label(name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
            if points.len() <= 60 {
                let _ =
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())));
            }
            // A lone point (one evaluation, the one log point of a short run) says its value,
            // which a line would have shown, beside the dot rather than on it.
            if let [(x, y)] = points.as_slice() {
                let text = format!("{} at step {x:.0}", format_tick(*y));
                let style = ("sans-serif", 13).into_font().color(&color);
                let _ = chart.draw_series(std::iter::once(
                    EmptyElement::at((*x, *y)) + Text::new(text, (7, -15), style),
                ));
            }
        }
        if series.len() > 1 || id == "metrics" {
            let _ = chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .position(SeriesLabelPosition::LowerRight)
                .draw();
        }
        let _ = root.present();
    }
    svg
}

fn format_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() < 1e-2 || v.abs() >= 1e4 {
        format!("{v:.1e}")
    } else {
        format!("{v:.3}")
    }
}

/// The precision-recall curve `(recall, precision, _)` from the highest score down, with the
/// operating point `((recall, precision), threshold)` marked when there is one.
pub(super) fn pr_chart(curve: &[(f64, f64, f64)], operating: Option<((f64, f64), f64)>) -> String {
    let points: Vec<(f64, f64)> = std::iter::once((0.0, curve.first().map_or(1.0, |c| c.1)))
        .chain(curve.iter().map(|&(r, p, _)| (r, p)))
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (500, 300)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(mut chart) = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
        else {
            return String::new();
        };
        let _ = chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .light_line_style(RGBColor(235, 235, 235))
            .draw();
        let _ = chart.draw_series(LineSeries::new(points, PALETTE[0].stroke_width(2)));
        if let Some((point, threshold)) = operating {
            if let Ok(drawn) =
                chart.draw_series(std::iter::once(Circle::new(point, 5, PALETTE[3].filled())))
            {
                drawn
                    .label(format!("threshold {threshold:.3}"))
                    .legend(|(x, y)| Circle::new((x + 8, y), 4, PALETTE[3].filled()));
            }
            let _ = chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .position(SeriesLabelPosition::LowerLeft)
                .draw();
        }
        let _ = root.present();
    }
    svg
}
