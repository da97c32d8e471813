//! Fleet overview, device file and alerts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use prognos_analytics::access;
use prognos_analytics::telemetry::{self, Downsample, SeriesQuery};
use prognos_service::Page;
use prognos_service::alerts::{AlertMove, AlertRecord};
use prognos_service::auth::{Action, allowed};
use prognos_service::fleet::{FleetDevice, FleetFilter, Health};
use prognos_service::tickets::TicketFilter;

use crate::Console;
use crate::chart::{Marker, chart};
use crate::i18n::Lang;
use crate::session::{Signed, home_of};
use crate::view::{
    PageResult, csrf_field, json_script, ok, opt, page, param, sla_badge, state_label, time,
    time_ms,
};

type Pairs = Query<Vec<(String, String)>>;

pub async fn home(u: Signed) -> impl IntoResponse {
    Redirect::to(home_of(u.principal.role))
}

fn health_badge(lang: Lang, h: Health) -> Markup {
    html! { span class={"health health-" (h.as_str())} { (lang.t(h.as_str())) } }
}

fn rul(lang: Lang, h: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> Markup {
    html! {
        @if let Some(h) = h {
            (format!("{h:.0} {}", lang.t("hours")))
            @if let (Some(lo), Some(hi)) = (lo, hi) { span.muted { (format!(" ({lo:.0}–{hi:.0})")) } }
        } @else { span.muted { "—" } }
    }
}

/// Sites by coordinates on a plain equirectangular projection (no tiles, no external map).
fn site_map(lang: Lang, devices: &[FleetDevice]) -> Markup {
    let mut sites: BTreeMap<&str, (&str, f64, f64, Health, usize)> = BTreeMap::new();
    for d in devices {
        let e = sites.entry(d.site_id.as_str()).or_insert((
            d.site_name.as_str(),
            d.lat,
            d.lon,
            Health::Healthy,
            0,
        ));
        e.3 = e.3.max(d.health);
        e.4 += 1;
    }
    if sites.is_empty() {
        return html! {};
    }
    let (mut lat0, mut lat1, mut lon0, mut lon1) = (90.0f64, -90.0f64, 180.0f64, -180.0f64);
    for (_, lat, lon, _, _) in sites.values() {
        lat0 = lat0.min(*lat);
        lat1 = lat1.max(*lat);
        lon0 = lon0.min(*lon);
        lon1 = lon1.max(*lon);
    }
    // A margin so the outermost sites are not cut at the edge.
    let (plat, plon) = (
        ((lat1 - lat0) * 0.08).max(0.5),
        ((lon1 - lon0) * 0.08).max(0.5),
    );
    let (lat0, lat1, lon0, lon1) = (lat0 - plat, lat1 + plat, lon0 - plon, lon1 + plon);
    let (w, h) = (640.0, 360.0);
    html! {
        h2 { (lang.t("sites_map")) }
        svg.map viewBox={"0 0 " (w) " " (h)} id="site-map" data-sites=(sites.len()) {
            @for (id, (name, lat, lon, health, n)) in &sites {
                circle class=(health.as_str()) data-site=(id)
                    cx=(format!("{:.1}", (lon - lon0) / (lon1 - lon0) * w))
                    cy=(format!("{:.1}", (lat1 - lat) / (lat1 - lat0) * h))
                    r=(format!("{:.1}", 4.0 + (*n as f64).sqrt() * 2.0)) {
                    title { (name) " · " (n) " · " (lang.t(health.as_str())) }
                }
            }
        }
    }
}

pub async fn fleet(State(c): State<Console>, u: Signed, Query(q): Pairs) -> PageResult {
    let lang = u.lang;
    let filter = FleetFilter {
        model: param(&q, "model").map(str::to_owned),
        site: param(&q, "site").map(str::to_owned),
        region: param(&q, "region").map(str::to_owned),
        batch: param(&q, "batch").map(str::to_owned),
        health: param(&q, "health").and_then(Health::parse),
    };
    let all = c
        .svc
        .fleet(&u.principal, &FleetFilter::default())
        .await
        .map_err(|e| u.fail(e))?;
    let shown = c
        .svc
        .fleet(&u.principal, &filter)
        .await
        .map_err(|e| u.fail(e))?;
    let options = |f: fn(&FleetDevice) -> Option<&str>| -> BTreeSet<String> {
        all.iter().filter_map(|d| f(d).map(str::to_owned)).collect()
    };
    let select = |name: &'static str, label: &'static str, values: BTreeSet<String>| {
        let current = param(&q, name);
        html! {
            label { (lang.t(label))
                select name=(name) {
                    option value="" { (lang.t("all")) }
                    @for v in &values { option value=(v) selected[current == Some(v.as_str())] { (v) } }
                }
            }
        }
    };
    let counts = |h: Health| shown.iter().filter(|d| d.health == h).count();
    let body = html! {
        form.filters method="get" action="/fleet" id="fleet-filters" {
            (select("model", "model", options(|d| Some(d.model.as_str()))))
            (select("region", "region", options(|d| Some(d.region.as_str()))))
            (select("site", "site", options(|d| Some(d.site_id.as_str()))))
            (select("batch", "batch", options(|d| d.batch.as_deref())))
            label { (lang.t("health"))
                select name="health" {
                    option value="" { (lang.t("all")) }
                    @for h in [Health::Alerting, Health::Watch, Health::Healthy] {
                        option value=(h.as_str()) selected[filter.health == Some(h)] { (lang.t(h.as_str())) }
                    }
                }
            }
            button type="submit" { (lang.t("filter")) }
        }
        p id="fleet-summary" {
            b { (shown.len()) } " " (lang.t("devices_shown")) " · "
            (health_badge(lang, Health::Alerting)) " " (counts(Health::Alerting)) " · "
            (health_badge(lang, Health::Watch)) " " (counts(Health::Watch)) " · "
            (health_badge(lang, Health::Healthy)) " " (counts(Health::Healthy))
        }
        div.grid {
            div { (site_map(lang, &shown)) }
        }
        div.scroll {
            table id="fleet" {
                thead { tr {
                    th { (lang.t("device")) } th { (lang.t("health")) } th { (lang.t("model")) }
                    th.wide { (lang.t("batch")) } th { (lang.t("site")) } th.wide { (lang.t("region")) }
                    th { (lang.t("open_alerts")) } th { (lang.t("rul_interval")) } th { (lang.t("open_tickets")) }
                } }
                tbody {
                    @for d in &shown {
                        tr data-device=(d.device_id) data-health=(d.health.as_str()) {
                            td { a href={"/devices/" (d.device_id)} { (d.device_id) } }
                            td { (health_badge(lang, d.health)) }
                            td { (d.model) }
                            td.wide { (opt(d.batch.as_deref())) }
                            td { (d.site_name) }
                            td.wide { (d.region) }
                            td { (d.active_alerts) @if let Some(s) = &d.worst_severity { " " span class={"sev-" (s)} { (s) } } }
                            td { (rul(lang, d.rul_hours, d.rul_lower_hours, d.rul_upper_hours)) }
                            td { (d.open_tickets) }
                        }
                    }
                }
            }
        }
    };
    ok(page(lang, Some(&u), lang.t("fleet_title"), body))
}

/// The metrics a device's chart offers: its model's profile, then any its alerts named.
fn metrics_of(model: &str, alerts: &[AlertRecord]) -> Vec<(String, Option<String>)> {
    let profile = prognos_models::profile::builtin_rotating();
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    if profile.models.iter().any(|m| m == model) {
        out.extend(
            profile
                .metrics
                .iter()
                .map(|m| (m.name.clone(), m.unit.clone())),
        );
    }
    for a in alerts {
        if let Some(m) = a.evidence.get("metrics").and_then(|m| m.as_object()) {
            for k in m.keys() {
                if !out.iter().any(|(n, _)| n == k) {
                    out.push((k.clone(), None));
                }
            }
        }
    }
    if out.is_empty() {
        out = profile
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.unit.clone()))
            .collect();
    }
    out
}

const RANGES: [(&str, i64); 5] = [
    ("1h", 3_600_000),
    ("6h", 6 * 3_600_000),
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
];

/// Points per chart: enough for a 900-px-wide line.
const CHART_BUCKETS: i64 = 450;

pub async fn device(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Query(q): Pairs,
) -> PageResult {
    let lang = u.lang;
    let who = &u.principal;
    let ctx = c
        .svc
        .device_context(who, &id)
        .await
        .map_err(|e| u.fail(e))?;
    let alerts = c
        .svc
        .alerts_visible(who, None, Some(&id), 200)
        .await
        .map_err(|e| u.fail(e))?;
    let tickets = c
        .svc
        .tickets(
            who,
            &TicketFilter {
                device_id: Some(id.clone()),
                ..TicketFilter::default()
            },
            Page {
                limit: 100,
                offset: 0,
            },
        )
        .await
        .map_err(|e| u.fail(e))?
        .items;
    let offered = metrics_of(&ctx.device.model, &alerts);
    let chosen: Vec<String> = {
        let picked: Vec<String> = q
            .iter()
            .filter(|(k, v)| k == "metric" && offered.iter().any(|(n, _)| n == v))
            .map(|(_, v)| v.clone())
            .collect();
        if picked.is_empty() {
            offered.iter().map(|(n, _)| n.clone()).collect()
        } else {
            picked
        }
    };
    let now = c.svc.now_ms();
    let range = param(&q, "range").unwrap_or("7d");
    let (from_ms, to_ms) = match (
        param(&q, "from").and_then(|v| v.parse::<i64>().ok()),
        param(&q, "to").and_then(|v| v.parse::<i64>().ok()),
    ) {
        (Some(f), Some(t)) if f < t && t - f >= 60_000 && t - f <= 400 * 86_400_000 => (f, t),
        _ => {
            let span = RANGES
                .iter()
                .find(|(n, _)| *n == range)
                .map_or(7 * 86_400_000, |r| r.1);
            (now - span, now)
        }
    };
    let markers: Vec<Marker> = alerts
        .iter()
        .map(|a| Marker {
            at_ms: a.opened_at_ms,
            label: format!("{} · {} · {}", a.failure_mode, a.severity, a.state),
        })
        .collect();
    let telemetry_allowed = access::require_fleet(who).is_ok();
    let series = if telemetry_allowed {
        let root = c
            .telemetry_root
            .as_deref()
            .cloned()
            .unwrap_or_else(|| std::path::PathBuf::from("/nonexistent/prognos/telemetry"));
        let span_us = (to_ms - from_ms) * 1000;
        let query = SeriesQuery {
            devices: vec![id.clone()],
            metrics: chosen.clone(),
            from_us: from_ms * 1000,
            to_us: to_ms * 1000,
            step_us: Some((span_us / CHART_BUCKETS).max(1_000_000)),
            downsample: Downsample::Buckets,
            max_points: 10_000,
        };
        match tokio::task::spawn_blocking(move || telemetry::query_series(&root, &query)).await {
            Ok(Ok(r)) => Ok(r.series),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    } else {
        Ok(Vec::new())
    };
    let chart_data = match &series {
        Ok(list) => json!(
            list.iter()
                .map(|s| json!({
                    "metric": s.metric,
                    "ts_ms": s.ts_us.iter().map(|t| t / 1000).collect::<Vec<_>>(),
                    "value": s.value,
                }))
                .collect::<Vec<_>>()
        ),
        Err(_) => json!([]),
    };
    let d = &ctx.device;
    let metric_query: String = chosen.iter().map(|m| format!("&metric={m}")).collect();
    let body = html! {
        div.grid {
            div.card {
                h2 { (lang.t("identity")) }
                dl.kv id="identity" {
                    dt { (lang.t("serial")) } dd { (d.serial) }
                    dt { (lang.t("model")) } dd { (d.model) }
                    dt { (lang.t("batch")) } dd { (opt(d.batch.as_deref())) }
                    dt { (lang.t("firmware")) } dd { (opt(d.firmware.as_deref())) }
                    dt { (lang.t("install_date")) } dd { (opt(d.install_date.as_deref())) }
                    dt { (lang.t("warranty_end")) } dd { (opt(d.warranty_end.as_deref())) }
                    dt { (lang.t("criticality")) } dd { (d.criticality) }
                    dt { (lang.t("site")) } dd { (ctx.site.name) " · " (ctx.site.region) " (" (format!("{:.3}, {:.3}", ctx.site.lat, ctx.site.lon)) ")" }
                    dt { (lang.t("customer")) } dd { (ctx.customer.name) " · " (ctx.customer.tier) }
                }
            }
            div.card {
                h2 { (lang.t("health")) }
                @let active: Vec<&AlertRecord> = alerts.iter().filter(|a| a.state != "resolved").collect();
                @if active.is_empty() { p { span.health.health-healthy { (lang.t("healthy")) } } }
                @for a in &active {
                    p {
                        span class={"sev-" (a.severity)} { (a.failure_mode) " · " (a.severity) }
                        br;
                        (lang.t("rul")) ": " (rul(lang, a.rul_hours, a.rul_lower_hours, a.rul_upper_hours))
                    }
                }
            }
        }
        h2 { (lang.t("telemetry")) }
        form.filters method="get" id="chart-form" {
            label { (lang.t("range"))
                select name="range" {
                    @for (name, _) in RANGES { option value=(name) selected[name == range] { (name) } }
                }
            }
            label { (lang.t("metrics"))
                select name="metric" multiple size="4" {
                    @for (m, _) in &offered { option value=(m) selected[chosen.contains(m)] { (m) } }
                }
            }
            button type="submit" { (lang.t("show")) }
            span.muted { @for (name, _) in RANGES { a href={"?range=" (name) (metric_query)} { (name) } " " } }
        }
        @if !telemetry_allowed {
            p.muted id="no-telemetry" { (lang.t("no_telemetry_access")) }
        } @else {
            @match &series {
                Err(e) => p.error { (e) },
                Ok(list) => {
                    @for s in list {
                        div.chart-box {
                            h3 { (s.metric) " " span.muted.readout {} " " span.muted { (s.ts_us.len()) " " (lang.t("points")) } }
                            @if s.ts_us.is_empty() { p.muted { (lang.t("no_data")) } }
                            @else {
                                (chart(s, offered.iter().find(|(n, _)| *n == s.metric).and_then(|(_, u)| u.as_deref()), from_ms, to_ms, &markers))
                            }
                        }
                    }
                }
            }
            (json_script("chart-data", &chart_data))
        }
        h2 { (lang.t("alert_history")) }
        (alert_table(&u, &alerts, &HashMap::new(), false, &format!("/devices/{id}")))
        h2 { (lang.t("tickets")) }
        (ticket_table(lang, &tickets))
    };
    ok(page(
        lang,
        Some(&u),
        &format!("{} {}", lang.t("device"), id),
        body,
    ))
}

pub fn ticket_table(lang: Lang, tickets: &[prognos_service::ticket_log::Ticket]) -> Markup {
    html! {
        div.scroll { table.tickets {
            thead { tr {
                th { (lang.t("ticket")) } th { (lang.t("title")) } th { (lang.t("state")) }
                th { (lang.t("priority")) } th { (lang.t("sla")) } th.wide { (lang.t("technician")) } th.wide { (lang.t("created")) }
            } }
            tbody {
                @for t in tickets {
                    tr data-ticket=(t.ticket_id) data-state=(t.state.as_str()) {
                        td { a href={"/tickets/" (t.ticket_id)} { (t.ticket_id) } }
                        td { (t.title) }
                        td { (state_label(lang, t.state.as_str())) }
                        td { (t.priority.as_str()) }
                        td { (sla_badge(lang, &t.sla)) }
                        td.wide { (opt(t.technician_id.as_deref())) }
                        td.wide { (time(&t.created_at)) }
                    }
                }
            }
        } }
    }
}

fn evidence(a: &AlertRecord) -> Markup {
    let e = &a.evidence;
    html! {
        @if let Some(m) = e.get("metrics").and_then(|m| m.as_object()) {
            @for (k, v) in m {
                span.pill { (k) "=" (v.as_f64().map_or_else(|| v.to_string(), |x| format!("{x:.2}"))) } " "
            }
        }
        @if let Some(r) = e.get("ratio").and_then(serde_json::Value::as_f64) {
            span.pill title="statistic / limit" { (format!("{r:.2}×")) } " "
        }
        @if let Some(d) = e.get("detector").and_then(|d| d.as_str()) { span.muted { (d) } }
    }
}

/// Acknowledge / resolve buttons for someone who handles alerts (the domain decides again).
fn alert_actions(u: &Signed, a: &AlertRecord, back: &str) -> Markup {
    let lang = u.lang;
    if !allowed(u.principal.role, Action::Dispatch) || a.state == "resolved" {
        return html! {};
    }
    html! {
        @if a.state == "open" {
            form.inline method="post" action={"/alerts/" (a.alert_id) "/acknowledge"} {
                (csrf_field(u))
                input type="hidden" name="back" value=(back);
                button type="submit" data-ack=(a.alert_id) { (lang.t("acknowledge")) }
            }
        }
        form.inline method="post" action={"/alerts/" (a.alert_id) "/resolve"} {
            (csrf_field(u))
            input type="hidden" name="back" value=(back);
            button type="submit" data-resolve=(a.alert_id) { (lang.t("resolve")) }
        }
    }
}

fn alert_table(
    u: &Signed,
    alerts: &[AlertRecord],
    tickets: &HashMap<String, String>,
    with_device: bool,
    back: &str,
) -> Markup {
    let lang = u.lang;
    html! {
        div.scroll { table.alerts {
            thead { tr {
                @if with_device { th { (lang.t("device")) } }
                th { (lang.t("failure_mode")) } th { (lang.t("state")) } th { (lang.t("severity")) }
                th { (lang.t("opened")) } th { (lang.t("score")) } th { (lang.t("evidence")) }
                th { (lang.t("rul_interval")) }
                @if with_device { th { (lang.t("ticket")) } }
                th { }
            } }
            tbody {
                @for a in alerts {
                    tr data-alert=(a.alert_id) data-state=(a.state) {
                        @if with_device { td { a href={"/devices/" (a.device_id)} { (a.device_id) } } }
                        td { (a.failure_mode) }
                        td { (a.state) }
                        td { span class={"sev-" (a.severity)} { (a.severity) } }
                        td { (time_ms(a.opened_at_ms)) }
                        td { (format!("{:.2}", a.peak_score)) }
                        td { (evidence(a)) }
                        td { (rul(lang, a.rul_hours, a.rul_lower_hours, a.rul_upper_hours)) }
                        @if with_device {
                            td { @match tickets.get(&a.alert_id) {
                                Some(t) => a href={"/tickets/" (t)} { (t) },
                                None => span.muted { (lang.t("none")) },
                            } }
                        }
                        td { (alert_actions(u, a, back)) }
                    }
                }
            }
        } }
    }
}

pub async fn alerts(State(c): State<Console>, u: Signed, Query(q): Pairs) -> PageResult {
    let lang = u.lang;
    let state = param(&q, "state").filter(|s| ["open", "acknowledged", "resolved"].contains(s));
    let back = match state {
        Some(s) => format!("/alerts?state={s}"),
        None => "/alerts".to_owned(),
    };
    let alerts = c
        .svc
        .alerts_visible(&u.principal, state, None, 500)
        .await
        .map_err(|e| u.fail(e))?;
    // The ticket each alert became (predictive tickets carry their alert id).
    let mut by_alert = HashMap::new();
    // A role without tickets simply gets no links (the domain refuses; the page goes on).
    {
        let tickets = c
            .svc
            .tickets(
                &u.principal,
                &TicketFilter {
                    source: Some("predictive".into()),
                    ..TicketFilter::default()
                },
                Page {
                    limit: 1000,
                    offset: 0,
                },
            )
            .await
            .map(|p| p.items)
            .unwrap_or_default();
        for t in tickets {
            if let Some(a) = t.alert_id {
                by_alert.entry(a).or_insert(t.ticket_id);
            }
        }
    }
    let body = html! {
        p { @for (s, label) in [("", "all"), ("open", "open"), ("acknowledged", "acknowledged"), ("resolved", "resolved")] {
            a href={"/alerts?state=" (s)} { (if s.is_empty() { lang.t("all") } else { label }) } " · "
        } }
        (alert_table(&u, &alerts, &by_alert, true, &back))
    };
    ok(page(lang, Some(&u), lang.t("alerts_title"), body))
}

#[derive(Deserialize)]
pub struct AlertForm {
    #[serde(default)]
    csrf: String,
    back: Option<String>,
}

async fn move_alert(c: &Console, u: &Signed, id: &str, to: AlertMove, f: &AlertForm) -> PageResult {
    u.check(&f.csrf)?;
    c.svc
        .move_alert(&u.principal, id, to)
        .await
        .map_err(|e| u.fail(e))?;
    let back = crate::session::local_path(f.back.as_deref());
    Ok(Redirect::to(&back).into_response())
}

pub async fn acknowledge_alert(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Form(f): Form<AlertForm>,
) -> PageResult {
    move_alert(&c, &u, &id, AlertMove::Acknowledge, &f).await
}

pub async fn resolve_alert(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Form(f): Form<AlertForm>,
) -> PageResult {
    move_alert(&c, &u, &id, AlertMove::Resolve, &f).await
}
