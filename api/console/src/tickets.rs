//! Tickets: the queue and the board by state with SLA countdowns, the ticket page (timeline,
//! evidence, candidates, the moves the domain allows, the service report form), and the
//! technician's "my jobs".

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::{Markup, html};
use serde::Deserialize;

use prognos_service::Page;
use prognos_service::ticket_log::{Ticket, TicketState};
use prognos_service::tickets::{CloseCode, PartUsed, ServiceReport, TicketFilter, transitions_for};

use crate::Console;
use crate::i18n::{Lang, state_key};
use crate::pages::ticket_table;
use crate::session::Signed;
use crate::view::{
    PageError, PageResult, csrf_field, ok, opt, page, param, sla_badge, state_label, time,
};

type Pairs = Query<Vec<(String, String)>>;

/// Most tickets one list or board shows.
const LIST_LIMIT: i64 = 1000;

pub async fn list(State(c): State<Console>, u: Signed, Query(q): Pairs) -> PageResult {
    let lang = u.lang;
    let board = param(&q, "view") == Some("board");
    let filter = TicketFilter {
        state: param(&q, "state").map(str::to_owned),
        priority: param(&q, "priority").map(str::to_owned),
        source: param(&q, "source").map(str::to_owned),
        technician_id: param(&q, "technician").map(str::to_owned),
        open: Some(board || param(&q, "open") != Some("false")),
        ..TicketFilter::default()
    };
    let mut tickets = c
        .svc
        .tickets(
            &u.principal,
            &filter,
            Page {
                limit: LIST_LIMIT,
                offset: 0,
            },
        )
        .await
        .map_err(|e| u.fail(e))?
        .items;
    // Most urgent first: breached, then warning, then by time left.
    let rank = |t: &Ticket| match t.sla.status.as_str() {
        "breached" => 0,
        "warning" => 1,
        _ => 2,
    };
    tickets.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(b.priority.cmp(&a.priority))
            .then(
                a.sla
                    .remaining_secs
                    .unwrap_or(i64::MAX)
                    .cmp(&b.sla.remaining_secs.unwrap_or(i64::MAX)),
            )
    });
    let filters = html! {
        form.filters method="get" action="/tickets" id="ticket-filters" {
            @if board { input type="hidden" name="view" value="board"; }
            @if !board {
                label { (lang.t("state"))
                    select name="state" {
                        option value="" { (lang.t("all")) }
                        @for s in TicketState::ALL {
                            option value=(s.as_str()) selected[filter.state.as_deref() == Some(s.as_str())] { (lang.t(state_key(s.as_str()))) }
                        }
                    }
                }
            }
            label { (lang.t("priority"))
                select name="priority" {
                    option value="" { (lang.t("all")) }
                    @for p in ["emergency", "major", "normal"] {
                        option value=(p) selected[filter.priority.as_deref() == Some(p)] { (p) }
                    }
                }
            }
            @if !board {
                label { "open"
                    select name="open" {
                        option value="true" { "open" }
                        option value="false" selected[filter.open == Some(false)] { (lang.t("all")) }
                    }
                }
            }
            button type="submit" { (lang.t("filter")) }
            a href="/tickets" { (lang.t("queue")) } " · " a href="/tickets?view=board" { (lang.t("board")) }
        }
    };
    let body = if board {
        let columns = [
            TicketState::New,
            TicketState::Triaged,
            TicketState::Assigned,
            TicketState::WaitingParts,
            TicketState::EnRoute,
            TicketState::OnSite,
        ];
        html! {
            (filters)
            div.board id="board" {
                @for col in columns {
                    @let in_col: Vec<&Ticket> = tickets.iter().filter(|t| t.state == col).collect();
                    div.col data-state=(col.as_str()) {
                        h2 { (lang.t(state_key(col.as_str()))) " " span.muted { (in_col.len()) } }
                        @for t in in_col {
                            a.tk href={"/tickets/" (t.ticket_id)} data-ticket=(t.ticket_id) {
                                b { (t.priority.as_str()) } " · " (sla_badge(lang, &t.sla)) br;
                                (t.title) br;
                                span.muted { (opt(t.device_id.as_deref())) " · " (opt(t.technician_id.as_deref())) }
                            }
                        }
                    }
                }
            }
        }
    } else {
        html! { (filters) (ticket_table(lang, &tickets)) }
    };
    let title = if board {
        lang.t("board_title")
    } else {
        lang.t("tickets_title")
    };
    ok(page(lang, Some(&u), title, body))
}

fn transition_forms(lang: Lang, u: &Signed, t: &Ticket, back: &str) -> Markup {
    let moves = transitions_for(&u.principal, t);
    html! {
        div.actions {
            @for to in moves.iter().filter(|s| !matches!(s, TicketState::Assigned | TicketState::Closed)) {
                form method="post" action={"/tickets/" (t.ticket_id) "/transition"} {
                    (csrf_field(u))
                    input type="hidden" name="to" value=(to.as_str());
                    input type="hidden" name="back" value=(back);
                    button type="submit" data-to=(to.as_str()) class=(if *to == TicketState::Cancelled { "secondary" } else { "" }) {
                        (lang.t("move_to")) " " (lang.t(state_key(to.as_str())))
                    }
                }
            }
        }
    }
}

pub async fn page_of(c: &Console, u: &Signed, id: &str, notice: Option<&str>) -> PageResult {
    let lang = u.lang;
    let who = &u.principal;
    let t = c.svc.ticket(who, id).await.map_err(|e| u.fail(e))?;
    let events = c.svc.ticket_events(who, id).await.map_err(|e| u.fail(e))?;
    let reservations = c.svc.reservations_of(id).await.map_err(|e| u.fail(e))?;
    let moves = transitions_for(who, &t);
    let candidates = if moves.contains(&TicketState::Assigned) {
        c.svc.candidates(who, id, Some(8)).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let body = html! {
        @if let Some(n) = notice { p.notice id="notice" { (n) } }
        div.grid {
            div.card {
                dl.kv id="ticket-facts" {
                    dt { (lang.t("state")) } dd id="ticket-state" data-state=(t.state.as_str()) { (state_label(lang, t.state.as_str())) }
                    dt { (lang.t("priority")) } dd { (t.priority.as_str()) " · " (t.tier) }
                    dt { (lang.t("sla")) } dd { (sla_badge(lang, &t.sla)) }
                    dt { (lang.t("device")) } dd { @if let Some(d) = &t.device_id { a href={"/devices/" (d)} { (d) } } @else { "—" } }
                    dt { (lang.t("failure_mode")) } dd { (opt(t.failure_mode.as_deref())) }
                    dt { (lang.t("technician")) } dd id="ticket-technician" { (opt(t.technician_id.as_deref())) }
                    dt { (lang.t("region")) } dd { (opt(t.region.as_deref())) " · " (opt(t.provider_id.as_deref())) }
                    dt { (lang.t("parts_needed")) } dd { (t.parts_needed.join(", ")) }
                    dt { (lang.t("track_code")) } dd { a href={"/track/" (t.tracking_code)} { (t.tracking_code) } }
                    dt { (lang.t("created")) } dd { (time(&t.created_at)) }
                    @if let Some(h) = t.rul_hours {
                        dt { (lang.t("rul_interval")) } dd { (format!("{h:.0} h")) @if let (Some(lo), Some(hi)) = (t.rul_lower_hours, t.rul_upper_hours) { (format!(" ({lo:.0}–{hi:.0})")) } }
                    }
                }
                @if let Some(d) = &t.description { p { (d) } }
            }
            div.card {
                h2 { (lang.t("evidence")) }
                @match &t.evidence {
                    Some(e) => pre id="evidence" { (serde_json::to_string_pretty(e).unwrap_or_default()) },
                    None => p.muted { (lang.t("none")) },
                }
                h2 { (lang.t("reservations")) }
                ul { @for r in &reservations { li { (r.sku) " × " (r.quantity) " @ " (r.location_id) " (" (r.state) ")" } } }
            }
        }
        h2 { (lang.t("actions")) }
        (transition_forms(lang, u, &t, &format!("/tickets/{id}")))
        @if moves.contains(&TicketState::Assigned) {
            div.card {
                h2 { (lang.t("candidates")) }
                table id="candidates" {
                    thead { tr { th { (lang.t("technician")) } th { (lang.t("score")) } th { "km" } th { "load" } th { (lang.t("evidence")) } th {} } }
                    tbody { @for k in &candidates {
                        tr data-technician=(k.technician_id) {
                            td { (k.technician_id) }
                            td { (format!("{:.2}", k.score)) }
                            td { (format!("{:.0}", k.distance_km)) }
                            td { (k.load) "/" (k.capacity) }
                            td.muted { @for f in &k.factors { (f.factor) " " (format!("{:+.2}", f.contribution)) "; " } }
                            td { form method="post" action={"/tickets/" (t.ticket_id) "/assign"} {
                                (csrf_field(u))
                                input type="hidden" name="technician_id" value=(k.technician_id);
                                button type="submit" { (lang.t("assign")) }
                            } }
                        }
                    } }
                }
            }
        }
        @if moves.contains(&TicketState::Closed) {
            form.card method="post" action={"/tickets/" (t.ticket_id) "/close"} id="close-form" {
                h2 { (lang.t("close_report")) }
                (csrf_field(u))
                label { (lang.t("cause")) textarea name="cause" required maxlength="2000" {} }
                label { (lang.t("fix")) textarea name="fix" required maxlength="2000" {} }
                label { (lang.t("parts_used")) }
                @for i in 1..=3 {
                    div.filters {
                        input name={"sku" (i)} placeholder="SKU" maxlength="64" value=[(i == 1).then(|| t.parts_needed.first().cloned()).flatten()];
                        input name={"qty" (i)} type="number" min="1" max="1000" placeholder="1";
                    }
                }
                label { (lang.t("signed_off_by")) input name="signed_off_by" required maxlength="200"; }
                label { (lang.t("close_code"))
                    select name="close_code" {
                        option value="confirmed" { "confirmed" }
                        option value="false_alarm" { "false_alarm" }
                        option value="other_cause" { "other_cause" }
                    }
                }
                button type="submit" id="close-ticket" { (lang.t("close")) }
            }
        }
        h2 { (lang.t("timeline")) }
        ol.timeline id="timeline" {
            @for e in &events {
                li data-kind=(e.kind) {
                    (time(&e.at)) " · " b { (e.kind) }
                    @if let (Some(f), Some(to)) = (&e.from_state, &e.to_state) { " " (f) " → " (to) }
                    " · " span.muted { (e.actor) }
                    @if let Some(n) = &e.note { br; (n) }
                }
            }
        }
    };
    ok(page(
        lang,
        Some(u),
        &format!("{} {}", lang.t("ticket"), t.ticket_id),
        body,
    ))
}

pub async fn show(State(c): State<Console>, u: Signed, Path(id): Path<String>) -> PageResult {
    page_of(&c, &u, &id, None).await
}

#[derive(Deserialize)]
pub struct TransitionForm {
    #[serde(default)]
    csrf: String,
    to: String,
    note: Option<String>,
    back: Option<String>,
}

pub async fn transition(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Form(f): Form<TransitionForm>,
) -> PageResult {
    u.check(&f.csrf)?;
    let to = TicketState::parse(&f.to)
        .ok_or_else(|| PageError::Invalid(u.lang, "unknown state".into()))?;
    let note = f.note.as_deref().filter(|n| !n.trim().is_empty());
    c.svc
        .transition(&u.principal, &id, to, note, None)
        .await
        .map_err(|e| u.fail(e))?;
    let back = crate::session::local_path(f.back.as_deref());
    Ok(Redirect::to(&back).into_response())
}

#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    csrf: String,
    technician_id: String,
}

pub async fn assign(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Form(f): Form<AssignForm>,
) -> PageResult {
    u.check(&f.csrf)?;
    c.svc
        .assign(&u.principal, &id, &f.technician_id, None)
        .await
        .map_err(|e| u.fail(e))?;
    Ok(Redirect::to(&format!("/tickets/{id}")).into_response())
}

#[derive(Deserialize)]
pub struct CloseForm {
    #[serde(default)]
    csrf: String,
    cause: String,
    fix: String,
    signed_off_by: String,
    close_code: String,
    sku1: Option<String>,
    qty1: Option<String>,
    sku2: Option<String>,
    qty2: Option<String>,
    sku3: Option<String>,
    qty3: Option<String>,
}

pub async fn close(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Form(f): Form<CloseForm>,
) -> PageResult {
    u.check(&f.csrf)?;
    let lang = u.lang;
    let close_code = match f.close_code.as_str() {
        "confirmed" => CloseCode::Confirmed,
        "false_alarm" => CloseCode::FalseAlarm,
        "other_cause" => CloseCode::OtherCause,
        _ => return Err(PageError::Invalid(lang, "unknown close code".into())),
    };
    let mut parts_used = Vec::new();
    for (sku, qty) in [(&f.sku1, &f.qty1), (&f.sku2, &f.qty2), (&f.sku3, &f.qty3)] {
        let Some(sku) = sku.as_deref().map(str::trim).filter(|s| !s.is_empty()) else {
            continue;
        };
        let quantity = match qty.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            None => 1,
            Some(q) => q.parse::<i64>().map_err(|_| {
                PageError::Invalid(lang, format!("quantity of {sku}: expected a number"))
            })?,
        };
        parts_used.push(PartUsed {
            sku: sku.to_owned(),
            quantity,
        });
    }
    let report = ServiceReport {
        cause: f.cause,
        fix: f.fix,
        parts_used,
        signed_off_by: f.signed_off_by,
        close_code,
        satisfaction: None,
    };
    c.svc
        .close_ticket(&u.principal, &id, &report)
        .await
        .map_err(|e| u.fail(e))?;
    Ok(Redirect::to(&format!("/tickets/{id}")).into_response())
}

/// A technician's open jobs, most urgent first, phone-sized: where, what to bring, the
/// next moves.
pub async fn jobs(State(c): State<Console>, u: Signed) -> PageResult {
    let lang = u.lang;
    let who = &u.principal;
    let filter = TicketFilter {
        open: Some(true),
        technician_id: who.bound_technician().map(str::to_owned),
        ..TicketFilter::default()
    };
    let mut jobs = c
        .svc
        .tickets(
            who,
            &filter,
            Page {
                limit: 200,
                offset: 0,
            },
        )
        .await
        .map_err(|e| u.fail(e))?
        .items;
    jobs.retain(|t| t.technician_id.is_some());
    jobs.sort_by_key(|t| {
        (
            t.sla.remaining_secs.unwrap_or(i64::MAX),
            std::cmp::Reverse(t.priority),
        )
    });
    let mut cards = Vec::new();
    for t in &jobs {
        let site = match &t.device_id {
            Some(d) => c.svc.device_context(who, d).await.ok().map(|ctx| ctx.site),
            None => None,
        };
        cards.push(html! {
            div.job data-ticket=(t.ticket_id) {
                h2 { a href={"/tickets/" (t.ticket_id)} { (t.title) } }
                p { (state_label(lang, t.state.as_str())) " " (sla_badge(lang, &t.sla)) " · " b { (t.priority.as_str()) } }
                @if let Some(s) = &site {
                    p { (s.name) @if let Some(a) = &s.address { " · " (a) } br;
                        a href=(format!("geo:{:.5},{:.5}", s.lat, s.lon)) { (lang.t("navigate")) " (" (format!("{:.4}, {:.4}", s.lat, s.lon)) ")" } }
                }
                @if !t.parts_needed.is_empty() { p { (lang.t("parts_needed")) ": " b { (t.parts_needed.join(", ")) } } }
                (transition_forms(lang, &u, t, "/jobs"))
            }
        });
    }
    let body = html! {
        @if jobs.is_empty() { p id="no-jobs" { (lang.t("no_jobs")) } }
        div id="jobs" { @for card in &cards { (card) } }
    };
    ok(page(lang, Some(&u), lang.t("jobs_title"), body))
}
