//! The dispatch board: open tickets waiting for a technician and the technicians who could take
//! them (load, skills, home), and batch dispatch of a selection with its result — who got
//! which ticket and how each part gets there (van, reserved, transfer with its ETA).

use std::collections::HashMap;

use axum::Form;
use axum::extract::State;
use maud::{Markup, html};

use prognos_service::Page;
use prognos_service::dispatch::{BatchRequest, BatchResult};
use prognos_service::network::Technician;
use prognos_service::ticket_log::{Ticket, TicketState};
use prognos_service::tickets::TicketFilter;

use crate::Console;
use crate::i18n::Lang;
use crate::session::Signed;
use crate::view::{PageError, PageResult, csrf_field, ok, opt, page, sla_badge, state_label};

/// Most tickets and technicians the board shows.
const BOARD_LIMIT: i64 = 1000;

/// Open tickets the caller may see, and its technicians with their open jobs.
async fn snapshot(
    c: &Console,
    u: &Signed,
) -> Result<(Vec<Ticket>, Vec<(Technician, usize)>), PageError> {
    let open = c
        .svc
        .tickets(
            &u.principal,
            &TicketFilter {
                open: Some(true),
                ..TicketFilter::default()
            },
            Page {
                limit: BOARD_LIMIT,
                offset: 0,
            },
        )
        .await
        .map_err(|e| u.fail(e))?
        .items;
    let mut load: HashMap<&str, usize> = HashMap::new();
    for t in &open {
        if let Some(k) = t.technician_id.as_deref() {
            *load.entry(k).or_default() += 1;
        }
    }
    let technicians = c
        .svc
        .technicians_where(
            &u.principal,
            None,
            Page {
                limit: BOARD_LIMIT,
                offset: 0,
            },
        )
        .await
        .map_err(|e| u.fail(e))?
        .items
        .into_iter()
        .map(|k| {
            let n = load.get(k.technician_id.as_str()).copied().unwrap_or(0);
            (k, n)
        })
        .collect();
    let waiting = open
        .iter()
        .filter(|t| matches!(t.state, TicketState::New | TicketState::Triaged))
        .cloned()
        .collect();
    Ok((waiting, technicians))
}

fn technician_table(lang: Lang, technicians: &[(Technician, usize)]) -> Markup {
    html! {
        div.scroll { table id="technicians" {
            thead { tr {
                th { (lang.t("technician")) } th { (lang.t("region")) } th { (lang.t("load")) }
                th.wide { (lang.t("skills")) } th.wide { (lang.t("home")) }
            } }
            tbody {
                @for (k, n) in technicians {
                    tr data-technician=(k.technician_id) data-load=(n) {
                        td { (k.name) " " span.muted { (k.technician_id) } @if !k.active { " " span.muted { (lang.t("inactive")) } } }
                        td { (k.region) }
                        td { (n) " / " (k.max_daily_load) }
                        td.wide { @for s in &k.skills { span.pill { (s.skill) " " (s.level) } " " } }
                        td.wide { (format!("{:.3}, {:.3}", k.home_lat, k.home_lon)) }
                    }
                }
            }
        } }
    }
}

pub async fn board(State(c): State<Console>, u: Signed) -> PageResult {
    let lang = u.lang;
    let (waiting, technicians) = snapshot(&c, &u).await?;
    let body = html! {
        form method="post" action="/dispatch" id="dispatch-form" {
            (csrf_field(&u))
            h2 { (lang.t("waiting_tickets")) " " span.muted { (waiting.len()) } }
            div.scroll { table id="dispatchable" {
                thead { tr {
                    th { } th { (lang.t("ticket")) } th { (lang.t("title")) } th { (lang.t("state")) }
                    th { (lang.t("priority")) } th { (lang.t("sla")) } th.wide { (lang.t("region")) }
                    th.wide { (lang.t("failure_mode")) }
                } }
                tbody {
                    @for t in &waiting {
                        tr data-ticket=(t.ticket_id) {
                            td { input type="checkbox" name="ticket_id" value=(t.ticket_id) id={"pick-" (t.ticket_id)}; }
                            td { a href={"/tickets/" (t.ticket_id)} { (t.ticket_id) } }
                            td { label for={"pick-" (t.ticket_id)} { (t.title) } }
                            td { (state_label(lang, t.state.as_str())) }
                            td { (t.priority.as_str()) }
                            td { (sla_badge(lang, &t.sla)) }
                            td.wide { (opt(t.region.as_deref())) }
                            td.wide { (opt(t.failure_mode.as_deref())) }
                        }
                    }
                }
            } }
            @if waiting.is_empty() { p.muted { (lang.t("nothing_to_dispatch")) } }
            @else { p { button type="submit" id="dispatch-selected" { (lang.t("dispatch_selected")) } } }
        }
        h2 { (lang.t("technicians")) " " span.muted { (technicians.len()) } }
        (technician_table(lang, &technicians))
    };
    ok(page(lang, Some(&u), lang.t("dispatch_title"), body))
}

/// The label of how a part reaches the job.
fn part_source_key(source: &str) -> &'static str {
    match source {
        "van" => "part_van",
        "transfer" => "part_transfer",
        "reserved" => "part_reserved",
        _ => "part_unavailable",
    }
}

fn result_view(lang: Lang, r: &BatchResult) -> Markup {
    html! {
        p id="dispatch-summary" data-assigned=(r.assignments.len()) data-unassigned=(r.unassigned.len()) {
            b { (r.assignments.len()) } " " (lang.t("assigned_n")) " · "
            b { (r.unassigned.len()) } " " (lang.t("unassigned_n")) " · "
            span.muted { (format!("{:.1} ms", r.solve_ms)) }
        }
        div.scroll { table id="assignments" {
            thead { tr {
                th { (lang.t("ticket")) } th { (lang.t("technician")) } th { (lang.t("score")) }
                th { (lang.t("state")) } th { (lang.t("parts")) }
            } }
            tbody {
                @for a in &r.assignments {
                    tr data-ticket=(a.ticket_id) data-technician=(a.technician_id) {
                        td { a href={"/tickets/" (a.ticket_id)} { (a.ticket_id) } }
                        td { (a.technician_id) }
                        td { (format!("{:.2}", a.score)) }
                        td { (state_label(lang, a.state.as_str())) }
                        td {
                            @for p in &a.parts {
                                span.pill data-source=(p.source) {
                                    (p.sku) " · " (lang.t(part_source_key(&p.source)))
                                    @if let Some(l) = &p.location_id { " · " (l) }
                                    @if let Some(eta) = &p.eta { " · ETA " (crate::view::time(eta)) }
                                }
                                " "
                            }
                        }
                    }
                }
            }
        } }
        @if !r.unassigned.is_empty() {
            h2 { (lang.t("unassigned_n")) }
            ul id="unassigned" { @for t in &r.unassigned { li { a href={"/tickets/" (t)} { (t) } } } }
        }
        p { a href="/dispatch" { "← " (lang.t("dispatch_title")) } }
    }
}

/// Batch dispatch of the selected tickets (`ticket_id` repeated, as a form sends checkboxes).
pub async fn dispatch(
    State(c): State<Console>,
    u: Signed,
    Form(fields): Form<Vec<(String, String)>>,
) -> PageResult {
    let lang = u.lang;
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map_or("", |(_, v)| v.as_str());
    u.check(csrf)?;
    let ticket_ids: Vec<String> = fields
        .into_iter()
        .filter(|(k, _)| k == "ticket_id")
        .map(|(_, v)| v)
        .collect();
    if ticket_ids.is_empty() {
        return Err(PageError::Invalid(
            lang,
            lang.t("select_tickets").to_owned(),
        ));
    }
    let result = c
        .svc
        .dispatch_batch(&u.principal, &BatchRequest { ticket_ids })
        .await
        .map_err(|e| u.fail(e))?;
    ok(page(
        lang,
        Some(&u),
        lang.t("dispatch_result"),
        result_view(lang, &result),
    ))
}
