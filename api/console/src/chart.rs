//! Time-series charts drawn server-side as SVG: the series is already down-sampled by the
//! analytics reader, so the browser gets a few hundred points as a polyline (no chart
//! library, no script needed to see it). The script only adds a read-out and drag-to-zoom,
//! which re-queries the server for the new range.

use maud::{Markup, html};

use prognos_analytics::telemetry::Series;

const W: f64 = 900.0;
const H: f64 = 200.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// An alert drawn as a vertical marker.
pub struct Marker {
    pub at_ms: i64,
    pub label: String,
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_time(ms: i64, span_ms: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return String::new();
    };
    if span_ms > 3 * 86_400_000 {
        t.format("%m-%d").to_string()
    } else {
        t.format("%m-%d %H:%M").to_string()
    }
}

/// One metric of one device over `[from_ms, to_ms)`.
pub fn chart(
    s: &Series,
    unit: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    markers: &[Marker],
) -> Markup {
    let n = s.ts_us.len().min(s.value.len());
    let span = (to_ms - from_ms).max(1);
    let (x0, x1) = (LEFT, W - RIGHT);
    let (y0, y1) = (TOP, H - BOTTOM);
    let x = |ms: i64| x0 + (ms - from_ms) as f64 / span as f64 * (x1 - x0);
    let lows = s.min.as_deref().unwrap_or(&s.value[..n]);
    let highs = s.max.as_deref().unwrap_or(&s.value[..n]);
    let finite = |v: &&f64| v.is_finite();
    let lo = lows
        .iter()
        .filter(finite)
        .fold(f64::INFINITY, |a, &b| a.min(b));
    let hi = highs
        .iter()
        .filter(finite)
        .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        if hi - lo < 1e-9 {
            (lo - 1.0, hi + 1.0)
        } else {
            (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
        }
    } else {
        (0.0, 1.0)
    };
    let y = |v: f64| y1 - (v - lo) / (hi - lo) * (y1 - y0);
    let mut line = String::with_capacity(n * 14);
    let mut kept = 0usize;
    for i in 0..n {
        let v = s.value[i];
        if !v.is_finite() {
            continue;
        }
        if kept > 0 {
            line.push(' ');
        }
        line.push_str(&format!("{:.1},{:.1}", x(s.ts_us[i] / 1000), y(v)));
        kept += 1;
    }
    let band = match (&s.min, &s.max) {
        (Some(mn), Some(mx)) if n > 1 => {
            let upper = s.ts_us.iter().zip(mx).take(n);
            let lower = s.ts_us.iter().zip(mn).take(n).collect::<Vec<_>>();
            let pts: Vec<String> = upper
                .chain(lower.into_iter().rev())
                .map(|(t, v)| format!("{:.1},{:.1}", x(t / 1000), y(*v)))
                .collect();
            Some(pts.join(" "))
        }
        _ => None,
    };
    let yticks: Vec<f64> = (0..=4).map(|k| lo + (hi - lo) * k as f64 / 4.0).collect();
    let xticks: Vec<i64> = (0..=4).map(|k| from_ms + span * k / 4).collect();
    html! {
        svg.chart viewBox={"0 0 " (W) " " (H)} role="img"
            aria-label={(s.metric) " " (s.device_id)}
            data-metric=(s.metric) data-points=(kept) data-from=(from_ms) data-to=(to_ms)
            data-x0=(x0) data-x1=(x1) {
            @for v in &yticks {
                line.grid x1=(x0) x2=(x1) y1={(format!("{:.1}", y(*v)))} y2={(format!("{:.1}", y(*v)))} {}
                text x=(x0 - 4.0) y={(format!("{:.1}", y(*v) + 4.0))} text-anchor="end" { (fmt_num(*v)) }
            }
            @for t in &xticks {
                text x={(format!("{:.1}", x(*t)))} y=(H - 6.0) text-anchor="middle" { (fmt_time(*t, span)) }
            }
            line.axis x1=(x0) x2=(x0) y1=(y0) y2=(y1) {}
            line.axis x1=(x0) x2=(x1) y1=(y1) y2=(y1) {}
            @if let Some(b) = &band { polygon.band points=(b) {} }
            polyline.line points=(line) {}
            @for m in markers.iter().filter(|m| m.at_ms >= from_ms && m.at_ms < to_ms) {
                line.marker x1={(format!("{:.1}", x(m.at_ms)))} x2={(format!("{:.1}", x(m.at_ms)))} y1=(y0) y2=(y1) {
                    title { (m.label) }
                }
            }
            @if let Some(u) = unit { text x=(x0 + 4.0) y=(y0 + 10.0) { (u) } }
        }
    }
}
