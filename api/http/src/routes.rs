//! The route table (method, path, documentation, handler) and the handlers: thin wrappers that
//! authenticate, parse, call the domain and map its errors to problem details.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::problem::{Auth, JsonBody, Params, Problem};
use crate::table::{H, Res, RouteDoc, ok, q, r};
use prognos_service::auth::{NewApiKey, Role};
use prognos_service::dispatch::BatchRequest;
use prognos_service::network::{
    NewCustomer, NewLocation, NewProvider, NewServiceDevice, NewSite, NewTechnician, Part,
};
use prognos_service::parts::ReserveRequest;
use prognos_service::sla::SlaPolicy;
use prognos_service::tickets::{NewTicket, ServiceReport, TicketFilter, TicketState};
use prognos_service::webhooks::NewWebhook;
use prognos_service::{Page, ServiceError};

const PAGE: [(&str, &str); 2] = [
    ("limit", "page size, 1..1000 (default 50)"),
    ("offset", "items to skip"),
];

/// Every route of the service API.
pub(crate) fn routes() -> Vec<(RouteDoc, H)> {
    const TICKET_FILTERS: &[(&str, &str)] = &[
        ("state", "ticket state"),
        ("priority", "emergency, major or normal"),
        (
            "source",
            "predictive, api, customer_form, follow_up or import",
        ),
        ("device_id", "device"),
        ("provider_id", "owning provider"),
        ("technician_id", "assigned technician"),
        ("open", "true: only open tickets"),
        PAGE[0],
        PAGE[1],
    ];
    vec![
        r(
            "GET",
            "/track/{code}",
            "Public tracking page of a ticket (no personal data)",
            "tracking",
            None,
            200,
            get(track),
        ),
        r(
            "POST",
            "/track/{code}/rating",
            "Customer satisfaction 1-5 for a closed ticket; 2 or less opens a follow-up",
            "tracking",
            Some("Rating"),
            200,
            post(rate),
        ),
        r(
            "POST",
            "/api/v1/tickets",
            "Create a ticket (API or customer form)",
            "tickets",
            Some("NewTicket"),
            201,
            post(create_ticket),
        ),
        q(
            r(
                "GET",
                "/api/v1/tickets",
                "List tickets, newest first",
                "tickets",
                None,
                200,
                get(list_tickets),
            ),
            TICKET_FILTERS,
        ),
        r(
            "GET",
            "/api/v1/tickets/{id}",
            "A ticket with its SLA state and allowed transitions",
            "tickets",
            None,
            200,
            get(get_ticket),
        ),
        r(
            "GET",
            "/api/v1/tickets/{id}/events",
            "The ticket's audit trail",
            "tickets",
            None,
            200,
            get(ticket_events),
        ),
        r(
            "POST",
            "/api/v1/tickets/{id}/transitions",
            "Move a ticket through its state machine (409 lists the allowed moves)",
            "tickets",
            Some("Transition"),
            200,
            post(transition),
        ),
        r(
            "POST",
            "/api/v1/tickets/{id}/assign",
            "Assign a technician and secure the parts",
            "dispatch",
            Some("Assign"),
            200,
            post(assign),
        ),
        q(
            r(
                "GET",
                "/api/v1/tickets/{id}/candidates",
                "Technicians ranked for a ticket with explained scores",
                "dispatch",
                None,
                200,
                get(candidates),
            ),
            &[(
                "limit",
                "how many eligible candidates (default 10), or `all` for every technician with reasons",
            )],
        ),
        r(
            "POST",
            "/api/v1/tickets/{id}/close",
            "Close a resolved ticket with its service report",
            "tickets",
            Some("ServiceReport"),
            200,
            post(close_ticket),
        ),
        r(
            "GET",
            "/api/v1/tickets/{id}/reservations",
            "Parts reserved for a ticket",
            "parts",
            None,
            200,
            get(ticket_reservations),
        ),
        r(
            "POST",
            "/api/v1/dispatch/batch",
            "Assign open tickets optimally and reserve their parts",
            "dispatch",
            Some("BatchRequest"),
            200,
            post(dispatch_batch),
        ),
        r(
            "POST",
            "/api/v1/parts/reservations",
            "Reserve stock (409 when short)",
            "parts",
            Some("ReserveRequest"),
            201,
            post(reserve),
        ),
        r(
            "POST",
            "/api/v1/parts/reservations/{id}/release",
            "Release a reservation",
            "parts",
            None,
            200,
            post(release),
        ),
        r(
            "POST",
            "/api/v1/parts/reservations/{id}/consume",
            "Consume a reservation",
            "parts",
            None,
            200,
            post(consume),
        ),
        q(
            r(
                "GET",
                "/api/v1/parts/transfers",
                "Stock transfers",
                "parts",
                None,
                200,
                get(transfers),
            ),
            &[("ticket_id", "only for this ticket")],
        ),
        r(
            "POST",
            "/api/v1/parts/transfers/{id}/receive",
            "A transfer arrived",
            "parts",
            None,
            200,
            post(receive),
        ),
        r(
            "GET",
            "/api/v1/parts/reorder",
            "Stock at or below its reorder point",
            "parts",
            None,
            200,
            get(reorder),
        ),
        q(
            r(
                "GET",
                "/api/v1/parts/prepositioning",
                "Where to move parts before predicted failures",
                "parts",
                None,
                200,
                get(preposition),
            ),
            &[("horizon_hours", "RUL horizon (default 720)")],
        ),
        r(
            "GET",
            "/api/v1/parts",
            "The part catalogue",
            "parts",
            None,
            200,
            get(list_parts),
        ),
        r(
            "POST",
            "/api/v1/parts",
            "Add a part to the catalogue",
            "parts",
            Some("Part"),
            201,
            post(create_part),
        ),
        q(
            r(
                "GET",
                "/api/v1/stock",
                "Stock levels",
                "parts",
                None,
                200,
                get(list_stock),
            ),
            &[
                ("location_id", "location"),
                ("sku", "part"),
                PAGE[0],
                PAGE[1],
            ],
        ),
        r(
            "PUT",
            "/api/v1/stock/{location_id}/{sku}",
            "Set a stock count",
            "parts",
            Some("StockCount"),
            200,
            put(set_stock),
        ),
        r(
            "GET",
            "/api/v1/locations",
            "Stock locations",
            "registry",
            None,
            200,
            get(list_locations),
        ),
        r(
            "POST",
            "/api/v1/locations",
            "Add a stock location",
            "registry",
            Some("NewLocation"),
            201,
            post(create_location),
        ),
        r(
            "GET",
            "/api/v1/providers",
            "Providers (a provider key sees its subtree)",
            "registry",
            None,
            200,
            get(list_providers),
        ),
        r(
            "POST",
            "/api/v1/providers",
            "Add a provider (OEM, agent, authorised provider)",
            "registry",
            Some("NewProvider"),
            201,
            post(create_provider),
        ),
        r(
            "POST",
            "/api/v1/customers",
            "Add a customer",
            "registry",
            Some("NewCustomer"),
            201,
            post(create_customer),
        ),
        r(
            "GET",
            "/api/v1/customers/{id}",
            "A customer",
            "registry",
            None,
            200,
            get(get_customer),
        ),
        r(
            "POST",
            "/api/v1/sites",
            "Add a site",
            "registry",
            Some("NewSite"),
            201,
            post(create_site),
        ),
        r(
            "POST",
            "/api/v1/devices",
            "Add a device to the service registry",
            "registry",
            Some("NewDevice"),
            201,
            post(create_device),
        ),
        r(
            "GET",
            "/api/v1/devices/{id}",
            "A device with its site and customer",
            "registry",
            None,
            200,
            get(get_device),
        ),
        q(
            r(
                "GET",
                "/api/v1/technicians",
                "Technicians",
                "registry",
                None,
                200,
                get(list_technicians),
            ),
            &PAGE,
        ),
        r(
            "POST",
            "/api/v1/technicians",
            "Add a technician (and their van)",
            "registry",
            Some("NewTechnician"),
            201,
            post(create_technician),
        ),
        r(
            "GET",
            "/api/v1/technicians/{id}",
            "A technician",
            "registry",
            None,
            200,
            get(get_technician),
        ),
        r(
            "GET",
            "/api/v1/sla/policies",
            "SLA policies",
            "sla",
            None,
            200,
            get(sla_policies),
        ),
        r(
            "PUT",
            "/api/v1/sla/policies",
            "Set an SLA policy (seconds)",
            "sla",
            Some("SlaPolicy"),
            200,
            put(set_sla_policy),
        ),
        r(
            "POST",
            "/api/v1/webhooks",
            "Subscribe a webhook (HMAC-signed)",
            "webhooks",
            Some("NewWebhook"),
            201,
            post(create_webhook),
        ),
        q(
            r(
                "GET",
                "/api/v1/webhooks/outbox",
                "Webhook outbox",
                "webhooks",
                None,
                200,
                get(outbox),
            ),
            &[("state", "pending, delivered or dead")],
        ),
        r(
            "POST",
            "/api/v1/apikeys",
            "Issue an API key (admin); a provider key names its provider, a technician key its technician",
            "keys",
            Some("NewApiKey"),
            201,
            post(create_key),
        ),
    ]
}

fn created<T: serde::Serialize>(v: T) -> Res {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn page(p: &Params) -> Result<Page, Problem> {
    Ok(Page::new(p.i64("limit")?, p.i64("offset")?)?)
}

async fn track(State(s): State<AppState>, Path(code): Path<String>) -> Res {
    ok(s.svc.track(&code).await?)
}

#[derive(Deserialize)]
struct Rating {
    score: i64,
    comment: Option<String>,
}

async fn rate(
    State(s): State<AppState>,
    Path(code): Path<String>,
    JsonBody(b): JsonBody<Rating>,
) -> Res {
    let follow_up = s
        .svc
        .rate_by_tracking_code(&code, b.score, b.comment.as_deref())
        .await?;
    ok(json!({"recorded": true, "follow_up_opened": follow_up.is_some()}))
}

async fn create_ticket(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewTicket>,
) -> Res {
    created(s.svc.create_ticket(&who, &b).await?)
}

async fn list_tickets(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let filter = TicketFilter {
        state: p.str("state"),
        priority: p.str("priority"),
        source: p.str("source"),
        device_id: p.str("device_id"),
        provider_id: p.str("provider_id"),
        technician_id: p.str("technician_id"),
        open: p.bool("open")?,
    };
    ok(s.svc.tickets(&who, &filter, page(&p)?).await?)
}

async fn get_ticket(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.ticket(&who, &id).await?)
}

async fn ticket_events(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.ticket_events(&who, &id).await?)
}

#[derive(Deserialize)]
struct Transition {
    to: String,
    note: Option<String>,
    technician_id: Option<String>,
}

async fn transition(
    State(s): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<Transition>,
) -> Res {
    let to = TicketState::parse(&b.to).ok_or_else(|| {
        Problem::invalid(
            "to",
            format!(
                "unknown state {:?}; states: {}",
                b.to,
                TicketState::ALL.map(|s| s.as_str()).join(", ")
            ),
        )
    })?;
    // Existence and visibility before role checks on the target state.
    let current = s.svc.ticket(&who, &id).await?.state;
    if to == TicketState::Assigned {
        if !current.can_move_to(to) {
            return Err(ServiceError::IllegalTransition {
                from: current.as_str().to_owned(),
                to: to.as_str().to_owned(),
                allowed: current
                    .next()
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            }
            .into());
        }
        let tech = b
            .technician_id
            .as_deref()
            .ok_or_else(|| Problem::invalid("technician_id", "assigning needs a technician"))?;
        let (t, _) = s.svc.assign(&who, &id, tech, b.note.as_deref()).await?;
        return ok(t);
    }
    ok(s.svc
        .transition(&who, &id, to, b.note.as_deref(), b.technician_id.as_deref())
        .await?)
}

#[derive(Deserialize)]
struct AssignBody {
    technician_id: String,
    note: Option<String>,
}

async fn assign(
    State(s): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<AssignBody>,
) -> Res {
    let (ticket, parts) = s
        .svc
        .assign(&who, &id, &b.technician_id, b.note.as_deref())
        .await?;
    ok(json!({"ticket": ticket, "parts": parts}))
}

async fn candidates(
    State(s): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    p: Params,
) -> Res {
    let limit = match p.str("limit").as_deref() {
        Some("all") => None,
        _ => Some(p.i64("limit")?.unwrap_or(10).clamp(1, 1000) as usize),
    };
    ok(s.svc.candidates(&who, &id, limit).await?)
}

async fn close_ticket(
    State(s): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ServiceReport>,
) -> Res {
    ok(s.svc.close_ticket(&who, &id, &b).await?)
}

async fn ticket_reservations(
    State(s): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Res {
    ok(s.svc.ticket_reservations(&who, &id).await?)
}

async fn dispatch_batch(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<BatchRequest>,
) -> Res {
    ok(s.svc.dispatch_batch(&who, &b).await?)
}

async fn reserve(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<ReserveRequest>,
) -> Res {
    created(s.svc.reserve(&who, &b).await?)
}

async fn release(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.finish_reservation(&who, &id, false).await?)
}

async fn consume(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.finish_reservation(&who, &id, true).await?)
}

async fn transfers(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    ok(s.svc.transfers(&who, p.str("ticket_id").as_deref()).await?)
}

async fn receive(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.receive_transfer(&who, &id).await?)
}

async fn reorder(State(s): State<AppState>, Auth(who): Auth) -> Res {
    ok(s.svc.reorder_report(&who).await?)
}

async fn preposition(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    let horizon = p.f64("horizon_hours")?.unwrap_or(720.0);
    ok(s.svc.preposition_proposals(&who, horizon).await?)
}

async fn list_parts(State(s): State<AppState>, Auth(who): Auth) -> Res {
    ok(s.svc.parts(&who).await?)
}

async fn create_part(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<Part>,
) -> Res {
    created(s.svc.create_part(&who, &b).await?)
}

async fn list_stock(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    ok(s.svc
        .stock(
            &who,
            p.str("location_id").as_deref(),
            p.str("sku").as_deref(),
            page(&p)?,
        )
        .await?)
}

#[derive(Deserialize)]
struct StockCount {
    on_hand: i64,
    reorder_point: Option<i64>,
}

async fn set_stock(
    State(s): State<AppState>,
    Auth(who): Auth,
    Path((location_id, sku)): Path<(String, String)>,
    JsonBody(b): JsonBody<StockCount>,
) -> Res {
    ok(s.svc
        .set_stock(&who, &location_id, &sku, b.on_hand, b.reorder_point)
        .await?)
}

async fn list_locations(State(s): State<AppState>, Auth(who): Auth) -> Res {
    ok(s.svc.locations_in(&who).await?)
}

async fn create_location(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewLocation>,
) -> Res {
    created(s.svc.create_location(&who, &b).await?)
}

async fn list_providers(State(s): State<AppState>, Auth(who): Auth) -> Res {
    ok(s.svc.providers(&who).await?)
}

async fn create_provider(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewProvider>,
) -> Res {
    created(s.svc.create_provider(&who, &b).await?)
}

async fn create_customer(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewCustomer>,
) -> Res {
    created(s.svc.create_customer(&who, &b).await?)
}

async fn get_customer(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.customer(&who, &id).await?)
}

async fn create_site(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewSite>,
) -> Res {
    created(s.svc.create_site(&who, &b).await?)
}

async fn create_device(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewServiceDevice>,
) -> Res {
    created(s.svc.create_device(&who, &b).await?)
}

async fn get_device(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    ok(s.svc.device_context(&who, &id).await?)
}

async fn list_technicians(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    ok(s.svc.technicians_where(&who, None, page(&p)?).await?)
}

async fn create_technician(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewTechnician>,
) -> Res {
    created(s.svc.create_technician(&who, &b).await?)
}

async fn get_technician(State(s): State<AppState>, Auth(who): Auth, Path(id): Path<String>) -> Res {
    s.svc
        .technicians_where(&who, Some(&id), Page::default())
        .await?
        .items
        .into_iter()
        .next()
        .map(|t| Json(t).into_response())
        .ok_or_else(|| ServiceError::not_found("technician", id).into())
}

async fn sla_policies(State(s): State<AppState>, Auth(who): Auth) -> Res {
    ok(s.svc.sla_policies(&who).await?)
}

async fn set_sla_policy(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<SlaPolicy>,
) -> Res {
    ok(s.svc.set_sla_policy(&who, &b).await?)
}

async fn create_webhook(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewWebhook>,
) -> Res {
    created(s.svc.create_webhook(&who, &b).await?)
}

async fn outbox(State(s): State<AppState>, Auth(who): Auth, p: Params) -> Res {
    ok(s.svc.outbox(&who, p.str("state").as_deref(), 500).await?)
}

async fn create_key(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewApiKey>,
) -> Res {
    created(s.svc.create_api_key(&who, &b).await?)
}

/// Used by the OpenAPI generator for the request schemas.
pub(crate) fn schema(name: &str) -> Value {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let string = json!({"type": "string"});
    let number = json!({"type": "number"});
    let integer = json!({"type": "integer"});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let priority = json!({"type": "string", "enum": ["normal", "major", "emergency"]});
    match name {
        "Problem" => s(
            json!({"type": string, "title": string, "status": integer, "detail": string,
                   "field": string, "allowed": strings}),
            &["type", "title", "status"],
        ),
        "Rating" => s(json!({"score": integer, "comment": string}), &["score"]),
        "NewTicket" => s(
            json!({"source": {"type": "string", "enum": ["api", "customer_form"]},
                   "title": string, "description": string, "device_id": string,
                   "failure_mode": string, "skill": string, "priority": priority,
                   "contact_name": string, "contact_phone": string, "parts_needed": strings}),
            &["device_id"],
        ),
        "Transition" => s(
            json!({"to": {"type": "string", "enum": TicketState::ALL.map(|s| s.as_str())},
                   "note": string, "technician_id": string}),
            &["to"],
        ),
        "Assign" => s(
            json!({"technician_id": string, "note": string}),
            &["technician_id"],
        ),
        "ServiceReport" => s(
            json!({"cause": string, "fix": string, "signed_off_by": string,
                   "close_code": {"type": "string", "enum": ["confirmed", "false_alarm", "other_cause"]},
                   "satisfaction": integer,
                   "parts_used": {"type": "array", "items": s(json!({"sku": string, "quantity": integer}), &["sku", "quantity"])}}),
            &["cause", "fix", "signed_off_by", "close_code"],
        ),
        "BatchRequest" => s(json!({"ticket_ids": strings}), &["ticket_ids"]),
        "ReserveRequest" => s(
            json!({"sku": string, "location_id": string, "quantity": integer, "ticket_id": string}),
            &["sku", "location_id", "quantity"],
        ),
        "Part" => s(
            json!({"sku": string, "name": string, "compatible_models": strings,
                   "fixes_modes": strings, "unit_cost": number,
                   "abc_class": {"type": "string", "enum": ["A", "B", "C"]}}),
            &["sku", "name", "unit_cost", "abc_class"],
        ),
        "StockCount" => s(
            json!({"on_hand": integer, "reorder_point": integer}),
            &["on_hand"],
        ),
        "NewLocation" => s(
            json!({"location_id": string, "kind": {"type": "string", "enum": ["central", "regional", "service_point"]},
                   "name": string, "region": string, "lat": number, "lon": number, "provider_id": string}),
            &["kind", "name", "lat", "lon"],
        ),
        "NewProvider" => s(
            json!({"provider_id": string, "name": string,
                   "kind": {"type": "string", "enum": ["oem", "agent", "provider"]},
                   "parent_id": string, "regions": strings}),
            &["name", "kind"],
        ),
        "NewCustomer" => s(
            json!({"customer_id": string, "name": string,
                   "tier": {"type": "string", "enum": ["standard", "premium"]},
                   "vip": {"type": "boolean"}, "contact_email": string}),
            &["name"],
        ),
        "NewSite" => s(
            json!({"site_id": string, "customer_id": string, "name": string, "region": string,
                   "lat": number, "lon": number, "address": string}),
            &["customer_id", "name", "region", "lat", "lon"],
        ),
        "NewDevice" => s(
            json!({"device_id": string, "site_id": string, "serial": string, "model": string,
                   "batch": string, "firmware": string, "install_date": string,
                   "warranty_end": string, "criticality": integer, "vip": {"type": "boolean"}}),
            &["device_id", "site_id", "serial", "model"],
        ),
        "NewTechnician" => s(
            json!({"technician_id": string, "provider_id": string, "name": string, "region": string,
                   "home_lat": number, "home_lon": number,
                   "skills": {"type": "array", "items": s(json!({"skill": string, "level": integer}), &["skill", "level"])},
                   "shift_start_min": integer, "shift_end_min": integer, "max_daily_load": integer}),
            &["provider_id", "name", "region", "home_lat", "home_lon"],
        ),
        "SlaPolicy" => s(
            json!({"priority": priority, "tier": string, "response_secs": integer, "onsite_secs": integer}),
            &["priority", "tier", "response_secs", "onsite_secs"],
        ),
        "NewWebhook" => s(
            json!({"url": string, "secret": string, "provider_id": string}),
            &["url", "secret"],
        ),
        "NewApiKey" => s(
            json!({"role": {"type": "string", "enum": Role::ALL.map(|r| r.as_str())},
                   "provider_id": string, "technician_id": string, "label": string}),
            &["role"],
        ),
        _ => json!({"type": "object"}),
    }
}
