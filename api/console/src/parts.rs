//! Parts: stock by location and level (low stock marked), transfers in flight with their ETA
//! and a receive button for the receiving side, the reorder report and the pre-positioning
//! proposals for predicted failures. Scope is the domain's: a provider sees its network's
//! locations, a technician its van.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use maud::html;
use serde::Deserialize;

use prognos_service::Page;

use crate::Console;
use crate::session::Signed;
use crate::view::{PageResult, csrf_field, ok, page, param, time};

type Pairs = Query<Vec<(String, String)>>;

/// Most stock rows one page shows.
const STOCK_LIMIT: i64 = 1000;
/// How far ahead (hours of pessimistic RUL) pre-positioning looks.
const HORIZON_HOURS: f64 = 720.0;

pub async fn parts(State(c): State<Console>, u: Signed, Query(q): Pairs) -> PageResult {
    let lang = u.lang;
    let who = &u.principal;
    let location = param(&q, "location");
    let sku = param(&q, "sku");
    let locations = c.svc.locations_in(who).await.map_err(|e| u.fail(e))?;
    let stock = c
        .svc
        .stock(
            who,
            location,
            sku,
            Page {
                limit: STOCK_LIMIT,
                offset: 0,
            },
        )
        .await
        .map_err(|e| u.fail(e))?
        .items;
    let transfers = c.svc.transfers(who, None).await.map_err(|e| u.fail(e))?;
    let in_flight: Vec<_> = transfers
        .iter()
        .filter(|t| t.state == "in_transit")
        .collect();
    let reorder = c.svc.reorder_report(who).await.map_err(|e| u.fail(e))?;
    let proposals = c
        .svc
        .preposition_proposals(who, HORIZON_HOURS)
        .await
        .map_err(|e| u.fail(e))?;
    let name_of = |id: &str| {
        locations
            .iter()
            .find(|l| l.location_id == id)
            .map_or_else(|| id.to_owned(), |l| l.name.clone())
    };
    let body = html! {
        form.filters method="get" action="/parts" id="parts-filters" {
            label { (lang.t("location"))
                select name="location" {
                    option value="" { (lang.t("all")) }
                    @for l in &locations {
                        option value=(l.location_id) selected[location == Some(l.location_id.as_str())] { (l.name) " (" (l.kind) ")" }
                    }
                }
            }
            label { "SKU" input name="sku" value=[sku] maxlength="64"; }
            button type="submit" { (lang.t("filter")) }
        }
        h2 { (lang.t("transfers_in_flight")) " " span.muted { (in_flight.len()) } }
        @if in_flight.is_empty() { p.muted { (lang.t("none")) } }
        @else {
            div.scroll { table id="transfers" {
                thead { tr {
                    th { "SKU" } th { (lang.t("quantity")) } th { (lang.t("from")) } th { (lang.t("to")) }
                    th { "ETA" } th.wide { (lang.t("ticket")) } th { }
                } }
                tbody {
                    @for t in &in_flight {
                        tr data-transfer=(t.transfer_id) data-state=(t.state) {
                            td { (t.sku) } td { (t.quantity) }
                            td { (name_of(&t.from_location_id)) } td { (name_of(&t.to_location_id)) }
                            td { (time(&t.eta)) }
                            td.wide { @match &t.ticket_id { Some(id) => a href={"/tickets/" (id)} { (id) }, None => "—" } }
                            td {
                                form.inline method="post" action={"/parts/transfers/" (t.transfer_id) "/receive"} {
                                    (csrf_field(&u))
                                    button type="submit" data-receive=(t.transfer_id) { (lang.t("receive")) }
                                }
                            }
                        }
                    }
                }
            } }
        }
        h2 { (lang.t("reorder_title")) " " span.muted { (reorder.len()) } }
        @if reorder.is_empty() { p.muted { (lang.t("none")) } }
        @else {
            div.scroll { table id="reorder" {
                thead { tr {
                    th { (lang.t("location")) } th { "SKU" } th { "ABC" } th { (lang.t("available")) }
                    th { (lang.t("reorder_point")) } th { (lang.t("order_quantity")) }
                } }
                tbody {
                    @for r in &reorder {
                        tr data-location=(r.location_id) data-sku=(r.sku) {
                            td { (name_of(&r.location_id)) } td { (r.sku) } td { (r.abc_class) }
                            td { (r.available) } td { (r.reorder_point) } td { b { (r.order_quantity) } }
                        }
                    }
                }
            } }
        }
        h2 { (lang.t("preposition_title")) " " span.muted { (proposals.len()) } }
        @if proposals.is_empty() { p.muted { (lang.t("none")) } }
        @else {
            div.scroll { table id="preposition" {
                thead { tr {
                    th { "SKU" } th { (lang.t("quantity")) } th { (lang.t("from")) } th { (lang.t("to")) }
                    th { (lang.t("needed_by")) } th.wide { "ETA" } th.wide { (lang.t("tickets")) }
                } }
                tbody {
                    @for p in &proposals {
                        tr data-sku=(p.sku) {
                            td { (p.sku) } td { (p.quantity) }
                            td { (p.from_location_id.as_deref().map_or_else(|| "—".to_owned(), name_of)) }
                            td { (name_of(&p.to_location_id)) }
                            td { (time(&p.needed_by)) }
                            td.wide { @match &p.eta { Some(e) => (time(e)), None => "—" } }
                            td.wide { @for t in &p.tickets { a href={"/tickets/" (t)} { (t) } " " } }
                        }
                    }
                }
            } }
        }
        h2 { (lang.t("stock_title")) " " span.muted { (stock.len()) } }
        div.scroll { table id="stock" {
            thead { tr {
                th { (lang.t("location")) } th { "SKU" } th { (lang.t("on_hand")) } th { (lang.t("reserved")) }
                th { (lang.t("available")) } th { (lang.t("reorder_point")) }
            } }
            tbody {
                @for s in &stock {
                    @let low = s.available <= s.reorder_point;
                    tr data-location=(s.location_id) data-sku=(s.sku) data-available=(s.available) data-low=(low) {
                        td { (name_of(&s.location_id)) " " span.muted { (s.location_id) } }
                        td { (s.sku) } td { (s.on_hand) } td { (s.reserved) }
                        td { @if low { b.bad { (s.available) } } @else { (s.available) } }
                        td { (s.reorder_point) }
                    }
                }
            }
        } }
        @if stock.len() as i64 >= STOCK_LIMIT { p.muted { (lang.t("first_rows_only")) } }
    };
    ok(page(lang, Some(&u), lang.t("parts_title"), body))
}

#[derive(Deserialize)]
pub struct ReceiveForm {
    #[serde(default)]
    csrf: String,
}

/// A transfer arrived (the receiving side, or the OEM side, confirms it).
pub async fn receive(
    State(c): State<Console>,
    u: Signed,
    Path(id): Path<String>,
    Form(f): Form<ReceiveForm>,
) -> PageResult {
    u.check(&f.csrf)?;
    c.svc
        .receive_transfer(&u.principal, &id)
        .await
        .map_err(|e| u.fail(e))?;
    Ok(Redirect::to("/parts").into_response())
}
