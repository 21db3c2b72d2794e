//! The HTML report of a trip run (`--report out.html`): the summary table and two inline SVG
//! charts per second of the run — end-to-end latency p50/p99, and updates sent, accepted
//! and delivered. One self-contained file: no JavaScript, no external assets, so it opens
//! anywhere and can be attached to an issue.
//!
//! Pure string building from a [`TripReport`]; everything taken from the run (targets,
//! file names, error codes) is HTML-escaped.

use std::fmt::Write as _;

use crate::trips::report::TripReport;

const W: f64 = 860.0;
const H: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A round axis maximum at or above `v` (1, 2 or 5 times a power of ten).
pub fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|m| *m >= v).unwrap_or(10.0 * mag)
}

/// One line chart: a title, a unit, and named series of one value per second.
pub fn line_chart(title: &str, unit: &str, series: &[(&str, &str, Vec<f64>)]) -> String {
    let n = series.iter().map(|s| s.2.len()).max().unwrap_or(0);
    let top = nice_max(series.iter().flat_map(|s| s.2.iter().copied()).fold(0.0, f64::max));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |i: usize| LEFT + if n > 1 { pw * i as f64 / (n - 1) as f64 } else { pw / 2.0 };
    let y = |v: f64| TOP + ph - ph * (v / top).clamp(0.0, 1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}">"#,
        t = escape(title)
    );
    let _ = write!(svg, r#"<text x="{LEFT}" y="18" class="title">{}</text>"#, escape(title));
    for k in 0..=4 {
        let v = top * f64::from(k) / 4.0;
        let yy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{} {}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            fmt_num(v),
            escape(unit)
        );
    }
    let step = (n / 10).max(1);
    for i in (0..n).step_by(step) {
        let _ =
            write!(svg, r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{i}s</text>"#, x(i), H - 12.0);
    }
    for (k, (name, color, values)) in series.iter().enumerate() {
        let points: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            points.join(" "),
            c = escape(color)
        );
        let lx = W - RIGHT - 150.0 * (series.len() - k) as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="8" width="12" height="12" fill="{c}"/><text x="{:.1}" y="18" class="tick">{}</text>"#,
            lx + 16.0,
            escape(name),
            c = escape(color)
        );
    }
    if n == 0 {
        let _ = write!(svg, r#"<text x="{:.1}" y="{:.1}" class="tick">no data</text>"#, W / 2.0, H / 2.0);
    }
    svg.push_str("</svg>");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.round() { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// The whole report page.
pub fn render(r: &TripReport) -> String {
    let t = &r.timeline;
    let latency = line_chart(
        "End-to-end latency per second (driver emit to subscriber receive)",
        "ms",
        &[
            ("p50", "#1f77b4", t.iter().map(|s| s.e2e_p50_ms).collect()),
            ("p99", "#d62728", t.iter().map(|s| s.e2e_p99_ms).collect()),
        ],
    );
    let throughput = line_chart(
        "Throughput per second",
        "/s",
        &[
            ("sent", "#7f7f7f", t.iter().map(|s| s.sent as f64).collect()),
            ("accepted", "#2ca02c", t.iter().map(|s| s.accepted as f64).collect()),
            ("delivered", "#ff7f0e", t.iter().map(|s| s.received as f64).collect()),
        ],
    );
    let ratio = r.delivery_ratio.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.6}"));
    let rows: Vec<(&str, String)> = vec![
        ("placement", r.placement.clone()),
        ("source", r.source.clone()),
        ("worker processes", r.workers.to_string()),
        ("drivers ready", format!("{} / {}", r.drivers_ready, r.drivers)),
        ("subscribers ready", format!("{} / {} ({} polling)", r.passengers_ready, r.passengers, r.polling_passengers)),
        ("setup failures", r.setup_failures.to_string()),
        (
            "rate achieved / accepted",
            format!("{:.1} / {:.1} updates/s over {:.1} s", r.achieved_rate, r.accepted_rate, r.send_window_s),
        ),
        ("e2e latency", summary(&r.e2e_ms)),
        ("ack latency", summary(&r.ack_ms)),
        ("retryAfterMs", summary(&r.retry_after_ms)),
        (
            "deliveries",
            format!(
                "{} received for {} expected, ratio {ratio} ({} of unacknowledged updates or repeated), {:.0}/s",
                r.received_deliveries, r.expected_deliveries, r.unexpected_deliveries, r.deliveries_per_s
            ),
        ),
        (
            "subscribers complete",
            format!(
                "{} of {} (lowest ratio {:.6}, missing {})",
                r.subscribers.complete, r.subscribers.count, r.subscribers.min_ratio, r.subscribers.missing
            ),
        ),
        ("ack errors", r.ack_errors.to_string()),
        ("disconnects", r.disconnects.to_string()),
        (
            "out of order / other trips / unparsable",
            format!("{} / {} / {}", r.out_of_order, r.foreign_trip, r.unparsable),
        ),
    ];
    let mut table = String::new();
    for (k, v) in rows {
        let _ = write!(table, "<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(&v));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fleetcast-loadtest {scenario} {run}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 24px; }}
th, td {{ text-align: left; padding: 4px 12px; border-bottom: 1px solid #eee; font-size: 14px; }}
th {{ color: #555; font-weight: 600; }}
svg {{ display: block; margin: 12px 0 24px; }}
.title {{ font-size: 14px; font-weight: 600; }}
.tick {{ font-size: 11px; fill: #555; }}
</style></head><body>
<h1>fleetcast-loadtest: {scenario} run {run}</h1>
<table>{table}</table>
{latency}
{throughput}
</body></html>
"#,
        scenario = escape(&r.scenario),
        run = escape(&r.run_id),
    )
}

fn summary(s: &crate::stats::LatencySummary) -> String {
    format!(
        "p50 {:.3} ms, p90 {:.3}, p99 {:.3}, max {:.3} ({} samples)",
        s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms, s.count
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(48.0), 50.0);
        assert_eq!(nice_max(101.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn charts_plot_every_second_inside_the_frame() {
        let svg = line_chart("lat <ms>", "ms", &[("p99", "red", vec![1.0, 4.0, 2.0])]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("lat &lt;ms&gt;"));
        let poly = svg.split("points=\"").nth(1).and_then(|s| s.split('"').next()).expect("polyline");
        let pts: Vec<(f64, f64)> = poly
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').expect("pair");
                (x.parse().expect("x"), y.parse().expect("y"))
            })
            .collect();
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[0].0, LEFT);
        assert_eq!(pts[2].0, W - RIGHT);
        // 4.0 is the top of a 0..5 axis: 80 % of the plot height above the bottom.
        assert!((pts[1].1 - (TOP + (H - TOP - BOTTOM) * 0.2)).abs() < 0.1);
        assert!(line_chart("empty", "ms", &[]).contains("no data"));
    }
}
