//! Reliability analytics as pictures for reliability engineers: the Weibull probability plot
//! with its fitted line and intervals, MTBF/MTTR by group, the region × failure-mode heatmap,
//! defective batches with the recall list (CSV), raised surges, provider KPIs down the
//! hierarchy and the models' accuracy. Every figure comes from the same `prognos_analytics`
//! functions the API answers with, called with the signed-in user's principal.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use maud::{Markup, html};

use prognos_analytics::kpi::{ModeAccuracy, ProviderKpis};
use prognos_analytics::reliability::{self, BatchReport, Heatmap, MtbfRow, WeibullGroup};
use prognos_analytics::{AnalyticsError, access};
use prognos_service::history::GroupBy;
use prognos_service::surges::RaisedSurge;

use crate::Console;
use crate::i18n::Lang;
use crate::session::Signed;
use crate::view::{PageError, PageResult, ok, opt, page, param};

type Pairs = Query<Vec<(String, String)>>;

/// Grouping choices offered for MTBF and Weibull.
const GROUPS: [&str; 5] = ["fleet", "model", "region", "batch", "firmware"];

fn fail(u: &Signed, e: AnalyticsError) -> PageError {
    match e {
        AnalyticsError::Service(e) => u.fail(e),
        AnalyticsError::Sql(e) => u.fail(prognos_service::ServiceError::Sql(e)),
        e => PageError::Invalid(u.lang, e.to_string()),
    }
}

fn num(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "—".to_owned(), |x| format!("{x:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or_else(|| "—".to_owned(), |x| format!("{:.0} %", x * 100.0))
}

/// The Weibull probability plot of one group: failures at (ln t, ln(−ln(1 − F))) and the
/// fitted line y = β (ln t − ln η), on axes labelled in days and percent failed.
fn weibull_plot(lang: Lang, g: &WeibullGroup) -> Markup {
    let (w, h, pad) = (560.0f64, 320.0f64, 44.0f64);
    let pts = &g.probability_plot;
    if pts.is_empty() {
        return html! { p.muted { (lang.t("no_failures")) } };
    }
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in pts.iter().filter(|p| p.x.is_finite() && p.y.is_finite()) {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    if !(x0.is_finite() && y0.is_finite()) {
        return html! { p.muted { (lang.t("no_failures")) } };
    }
    let (x0, x1) = (x0 - 0.3, x1 + 0.3);
    let (y0, y1) = (y0 - 0.5, y1 + 0.5);
    let sx = |x: f64| pad + (x - x0) / (x1 - x0) * (w - 2.0 * pad);
    let sy = |y: f64| h - pad - (y - y0) / (y1 - y0) * (h - 2.0 * pad);
    let fit_line = g.fit.as_ref().map(|f| {
        let y = |x: f64| f.beta * (x - f.eta.ln());
        (sx(x0), sy(y(x0)), sx(x1), sy(y(x1)))
    });
    // Gridlines at round percentages failed and decades of days.
    let percents = [1.0, 5.0, 10.0, 25.0, 50.0, 63.2, 90.0, 99.0];
    let days: Vec<f64> = [1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0]
        .into_iter()
        .filter(|d: &f64| d.ln() >= x0 && d.ln() <= x1)
        .collect();
    html! {
        svg.chart.weibull viewBox={"0 0 " (w) " " (h)} data-group=(g.group) data-points=(pts.len())
            data-beta=[g.fit.as_ref().map(|f| format!("{:.4}", f.beta))]
            data-eta=[g.fit.as_ref().map(|f| format!("{:.4}", f.eta))] {
            rect x=(pad) y=(pad) width=(w - 2.0 * pad) height=(h - 2.0 * pad) class="frame" {}
            @for p in percents {
                @let y = (-(1.0 - p / 100.0f64).ln()).ln();
                @if y >= y0 && y <= y1 {
                    line.grid x1=(pad) x2=(w - pad) y1=(format!("{:.1}", sy(y))) y2=(format!("{:.1}", sy(y))) {}
                    text.lbl x=(pad - 4.0) y=(format!("{:.1}", sy(y) + 3.0)) text-anchor="end" { (p) "%" }
                }
            }
            @for d in &days {
                line.grid x1=(format!("{:.1}", sx(d.ln()))) x2=(format!("{:.1}", sx(d.ln()))) y1=(pad) y2=(h - pad) {}
                text.lbl x=(format!("{:.1}", sx(d.ln()))) y=(h - pad + 14.0) text-anchor="middle" { (d) }
            }
            text.lbl x=(w / 2.0) y=(h - 6.0) text-anchor="middle" { (lang.t("life_days")) }
            @if let Some((ax, ay, bx, by)) = fit_line {
                line.fit x1=(format!("{ax:.1}")) y1=(format!("{ay:.1}")) x2=(format!("{bx:.1}")) y2=(format!("{by:.1}")) {}
            }
            @for p in pts.iter().filter(|p| p.x.is_finite() && p.y.is_finite()) {
                circle.pt cx=(format!("{:.1}", sx(p.x))) cy=(format!("{:.1}", sy(p.y))) r="3"
                    data-days=(format!("{:.2}", p.time)) {
                    title { (format!("{:.1} d · {:.1} %", p.time, p.unreliability * 100.0)) }
                }
            }
        }
    }
}

fn weibull_table(lang: Lang, groups: &[WeibullGroup]) -> Markup {
    html! {
        div.scroll { table id="weibull" {
            thead { tr {
                th { (lang.t("group")) } th { (lang.t("devices")) } th { (lang.t("failures")) }
                th { "β" } th { "η (d)" } th { "B10 (d)" } th.wide { (lang.t("mean_life_days")) }
            } }
            tbody {
                @for g in groups {
                    tr data-group=(g.group) {
                        td { (g.group) }
                        td { (g.devices) }
                        td { (g.failures) " / " (g.suspensions) " " span.muted { (lang.t("suspensions")) } }
                        @match &g.fit {
                            Some(f) => {
                                td { (format!("{:.2}", f.beta)) span.muted { (format!(" [{:.2}, {:.2}]", f.beta_ci.0, f.beta_ci.1)) } }
                                td { (format!("{:.0}", f.eta)) span.muted { (format!(" [{:.0}, {:.0}]", f.eta_ci.0, f.eta_ci.1)) } }
                                td { (format!("{:.0}", f.b10)) span.muted { (format!(" [{:.0}, {:.0}]", f.b10_ci.0, f.b10_ci.1)) } }
                                td.wide { (format!("{:.0}", f.mean_life)) }
                            }
                            None => { td colspan="4" { span.muted { (opt(g.error.as_deref())) } } }
                        }
                    }
                }
            }
        } }
    }
}

fn mtbf_table(lang: Lang, rows: &[MtbfRow]) -> Markup {
    html! {
        div.scroll { table id="mtbf" {
            thead { tr {
                th { (lang.t("group")) } th { (lang.t("devices")) } th { (lang.t("failures")) }
                th { "MTBF (d)" } th { "MTTR (h)" } th { (lang.t("availability")) }
                th.wide { (lang.t("failures_per_device_year")) }
            } }
            tbody {
                @for r in rows {
                    tr data-group=(r.group) {
                        td { (r.group) } td { (r.devices) } td { (r.failures) }
                        td { (num(r.mtbf_days, 0)) } td { (num(r.mttr_hours, 1)) }
                        td { (num(r.availability.map(|a| a * 100.0), 2)) "%" }
                        td.wide { (format!("{:.3}", r.failures_per_device_year)) }
                    }
                }
            }
        } }
    }
}

/// Cells shaded by their rate relative to the highest one.
fn heatmap_table(lang: Lang, m: &Heatmap) -> Markup {
    let rate = |r: &str, f: &str| {
        m.cells
            .iter()
            .find(|c| c.region == r && c.failure_mode == f)
            .map_or((0, 0.0), |c| (c.failures, c.per_100_device_years))
    };
    let top = m
        .cells
        .iter()
        .map(|c| c.per_100_device_years)
        .fold(0.0f64, f64::max);
    html! {
        div.scroll { table id="heatmap" {
            thead { tr { th { (lang.t("region")) } @for f in &m.failure_modes { th { (f) } } } }
            tbody {
                @for r in &m.regions {
                    tr data-region=(r) {
                        td { (r) }
                        @for f in &m.failure_modes {
                            @let (n, per) = rate(r, f);
                            @let a = if top > 0.0 { per / top } else { 0.0 };
                            td.heat data-failures=(n) style=(format!("background: rgba(192, 57, 43, {:.2})", 0.08 + 0.72 * a))
                                title=(format!("{per:.1} / 100 device-years")) { (n) }
                        }
                    }
                }
            }
        } }
        p.muted { (lang.t("heatmap_note")) }
    }
}

fn batch_table(lang: Lang, b: &BatchReport) -> Markup {
    html! {
        p.muted { (b.test) }
        div.scroll { table id="batches" {
            thead { tr {
                th { (lang.t("batch")) } th { (lang.t("devices")) } th { (lang.t("failures")) }
                th { (lang.t("failures_per_device_year")) } th { (lang.t("flagged")) }
            } }
            tbody {
                @for r in &b.batches {
                    tr data-batch=(r.batch) data-flagged=(r.flagged) {
                        td { (r.batch) } td { (r.devices) } td { (r.failures) }
                        td { (format!("{:.3}", r.failures_per_device_year)) }
                        td { @if r.flagged { b.bad { (lang.t("flagged")) } " " span.muted { (opt(r.flagged_on.as_deref())) } } }
                    }
                }
            }
        } }
        p { (b.recall.len()) " " (lang.t("recall_devices")) " · "
            a href="/analytics/recall.csv" id="recall-csv" download="recall.csv" { (lang.t("download_csv")) } }
    }
}

fn surge_table(lang: Lang, surges: &[RaisedSurge]) -> Markup {
    html! {
        @if surges.is_empty() { p.muted { (lang.t("no_surges")) } }
        @else {
            div.scroll { table id="surges" {
                thead { tr {
                    th { (lang.t("failure_mode")) } th { (lang.t("week_of")) } th { (lang.t("failures")) }
                    th { (lang.t("baseline_per_week")) } th { "p" } th.wide { (lang.t("batch")) } th.wide { (lang.t("region")) }
                } }
                tbody {
                    @for s in surges {
                        tr data-surge=(s.surge_id) {
                            td { (s.failure_mode) } td { (crate::view::time(&s.window_start)) } td { (s.failures) }
                            td { (format!("{:.2}", s.baseline_per_week)) } td { (format!("{:.1e}", s.p_value)) }
                            td.wide { (opt(s.top_batch.as_deref())) @if s.top_batch.is_some() { span.muted { (format!(" {:.0} %", s.top_batch_share * 100.0)) } } }
                            td.wide { (opt(s.top_region.as_deref())) }
                        }
                    }
                }
            } }
        }
    }
}

fn kpi_table(lang: Lang, kpis: &[ProviderKpis]) -> Markup {
    // Indented by depth in the hierarchy (parents come before their children).
    let depth = |p: &ProviderKpis| {
        let mut d = 0;
        let mut parent = p.parent_id.as_deref();
        while let Some(id) = parent {
            d += 1;
            parent = kpis
                .iter()
                .find(|k| k.provider_id == id)
                .and_then(|k| k.parent_id.as_deref());
            if d > 16 {
                break;
            }
        }
        d
    };
    html! {
        div.scroll { table id="kpis" {
            thead { tr {
                th { (lang.t("provider")) } th { (lang.t("tickets")) } th { (lang.t("first_time_fix")) }
                th { (lang.t("sla_compliance")) } th { "MTTR (h)" } th { (lang.t("satisfaction")) }
                th.wide { (lang.t("parts_turnover")) }
            } }
            tbody {
                @for p in kpis {
                    @let k = &p.subtree;
                    tr data-provider=(p.provider_id) {
                        td style=(format!("padding-left: {}em", 0.5 + 1.2 * depth(p) as f64)) { (p.name) " " span.muted { (p.kind) } }
                        td { (k.tickets) } td { (pct(k.first_time_fix_rate)) } td { (pct(k.sla_compliance)) }
                        td { (num(k.mttr_hours, 1)) } td { (num(k.satisfaction, 2)) }
                        td.wide { (num(k.parts_turnover_per_year, 2)) }
                    }
                }
            }
        } }
    }
}

fn accuracy_table(lang: Lang, rows: &[ModeAccuracy]) -> Markup {
    let q = |x: Option<f64>| num(x, 1);
    html! {
        div.scroll { table id="accuracy" {
            thead { tr {
                th { (lang.t("failure_mode")) } th { (lang.t("predictive_tickets")) } th { (lang.t("precision")) }
                th { (lang.t("recall")) } th { (lang.t("confirmed")) " / " (lang.t("false_alarms")) " / " (lang.t("other_cause")) }
                th.wide { (lang.t("lead_days")) " p10 / p50 / p90" }
            } }
            tbody {
                @for r in rows {
                    tr data-mode=(r.failure_mode) {
                        td { (r.failure_mode) } td { (r.predictive_tickets) }
                        td { (pct(r.precision)) } td { (pct(r.recall)) }
                        td { (r.confirmed) " / " (r.false_alarms) " / " (r.other_cause) }
                        td.wide { (q(r.observed_lead_days.p10)) " / " (q(r.observed_lead_days.p50)) " / " (q(r.observed_lead_days.p90))
                            span.muted { " (n=" (r.observed_lead_days.n) ")" } }
                    }
                }
            }
        } }
    }
}

pub async fn analytics(State(c): State<Console>, u: Signed, Query(q): Pairs) -> PageResult {
    let lang = u.lang;
    let group_name = param(&q, "group_by")
        .filter(|g| GROUPS.contains(g))
        .unwrap_or("model");
    let group = GroupBy::parse(group_name).unwrap_or(GroupBy::Model);
    let history = access::history(&c.svc, &u.principal)
        .await
        .map_err(|e| fail(&u, e))?;
    let now = c.svc.now_ms();
    let weibull_fleet =
        reliability::weibull(&history, GroupBy::Fleet, None, None, 0.9).map_err(|e| fail(&u, e))?;
    let weibull_groups =
        reliability::weibull(&history, group, None, None, 0.9).map_err(|e| fail(&u, e))?;
    let mtbf = reliability::mtbf(&history, group, i64::MIN / 4, now);
    let heat = reliability::heatmap(&history, i64::MIN / 4, now);
    let batches = reliability::defective_batches(&history, 0.01).map_err(|e| fail(&u, e))?;
    let surges = c
        .svc
        .surge_alerts(&u.principal, 50)
        .await
        .map_err(|e| u.fail(e))?;
    let kpis = access::provider_kpis(&c.svc, &u.principal, i64::MIN / 4, now)
        .await
        .map_err(|e| fail(&u, e))?;
    let accuracy = access::model_accuracy(&c.svc, &u.principal, i64::MIN / 4, now, 60.0)
        .await
        .map_err(|e| fail(&u, e))?;
    let body = html! {
        form.filters method="get" action="/analytics" id="analytics-filters" {
            label { (lang.t("group_by"))
                select name="group_by" {
                    @for g in GROUPS { option value=(g) selected[g == group_name] { (g) } }
                }
            }
            button type="submit" { (lang.t("filter")) }
        }
        h2 { (lang.t("weibull_title")) }
        div.grid {
            @for g in &weibull_fleet.groups { div { (weibull_plot(lang, g)) } }
        }
        (weibull_table(lang, &weibull_groups.groups))
        h2 { (lang.t("mtbf_title")) }
        (mtbf_table(lang, &mtbf))
        h2 { (lang.t("heatmap_title")) }
        (heatmap_table(lang, &heat))
        h2 { (lang.t("batches_title")) }
        (batch_table(lang, &batches))
        h2 { (lang.t("surges_title")) }
        (surge_table(lang, &surges))
        h2 { (lang.t("kpi_title")) }
        (kpi_table(lang, &kpis))
        h2 { (lang.t("accuracy_title")) }
        (accuracy_table(lang, &accuracy))
    };
    ok(page(lang, Some(&u), lang.t("analytics_title"), body))
}

/// One CSV field, quoted when it must be; a leading `=`, `+`, `-` or `@` is prefixed with
/// `'` so a spreadsheet does not run it as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The recall list of the flagged batches, as CSV.
pub async fn recall_csv(State(c): State<Console>, u: Signed) -> PageResult {
    let history = access::history(&c.svc, &u.principal)
        .await
        .map_err(|e| fail(&u, e))?;
    let report = reliability::defective_batches(&history, 0.01).map_err(|e| fail(&u, e))?;
    let mut out =
        String::from("device_id,serial,model,batch,region,site_id,customer_id,installed\r\n");
    for d in &report.recall {
        let row = [
            &d.device_id,
            &d.serial,
            &d.model,
            &d.batch,
            &d.region,
            &d.site_id,
            &d.customer_id,
            &d.installed,
        ]
        .map(|f| csv_field(f));
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"recall.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        out,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("pump-0001"), "pump-0001");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("-1"), "'-1");
    }
}
