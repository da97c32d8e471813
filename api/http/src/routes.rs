//! The route table (method, path, documentation, handler) and the handlers: thin wrappers that
//! authenticate, parse, call the domain and map its errors to problem details.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::problem::{Auth, JsonBody, PathParams, Problem, Query};
use crate::table::{Res, Route, ok, r};
use prognos_service::alerts::{AlertMove, AlertRecord};
use prognos_service::auth::{IssuedKey, NewApiKey};
use prognos_service::dispatch::{BatchRequest, BatchResult, Candidate};
use prognos_service::network::{
    Customer, DeviceContext, Location, NewCustomer, NewLocation, NewProvider, NewServiceDevice,
    NewSite, NewTechnician, Part, Provider, ServiceDevice, Site, StockLevel, Technician,
};
use prognos_service::parts::ReserveRequest;
use prognos_service::sla::SlaPolicy;
use prognos_service::stock::{PartPlan, Preposition, ReorderLine, Reservation, Transfer};
use prognos_service::tickets::{
    NewTicket, ServiceReport, Ticket, TicketEvent, TicketFilter, TicketSource, TicketState,
    Tracking,
};
use prognos_service::webhooks::{NewWebhook, OutboxEntry, Webhook};
use prognos_service::{Page, Paged, Priority, ServiceError};

/// `limit` and `offset` of a list.
macro_rules! page_fields {
    ($name:ident { $($field:tt)* }) => {
        #[derive(Deserialize, IntoParams)]
        #[into_params(parameter_in = Query)]
        struct $name {
            $($field)*
            /// Page size.
            #[param(minimum = 1, maximum = 1000, default = 50)]
            limit: Option<i64>,
            /// Items to skip.
            #[param(minimum = 0, maximum = 1000000000)]
            offset: Option<i64>,
        }
    };
}

page_fields!(PageQuery {});

page_fields!(TicketQuery {
    #[param(inline)]
    state: Option<TicketState>,
    #[param(inline)]
    priority: Option<Priority>,
    #[param(inline)]
    source: Option<TicketSource>,
    /// Only this device's tickets.
    #[param(max_length = 64)]
    device_id: Option<String>,
    /// Only tickets owned by this provider.
    #[param(max_length = 64)]
    provider_id: Option<String>,
    /// Only tickets assigned to this technician.
    #[param(max_length = 64)]
    technician_id: Option<String>,
    /// true: only open tickets (not resolved, closed or cancelled).
    open: Option<bool>,
});

/// The states an alert is listed by.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum AlertStateFilter {
    Open,
    Acknowledged,
    Resolved,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AlertQuery {
    #[param(inline)]
    state: Option<AlertStateFilter>,
    /// Only this device's alerts.
    #[param(max_length = 64)]
    device_id: Option<String>,
    /// Most alerts returned, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<i64>,
}

page_fields!(StockQuery {
    /// Only this location.
    #[param(max_length = 64)]
    location_id: Option<String>,
    /// Only this part.
    #[param(max_length = 64)]
    sku: Option<String>,
});

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CandidatesQuery {
    /// How many eligible candidates (1-1000, default 10), or `all` for every technician
    /// with the reasons the ineligible ones were left out.
    #[param(pattern = "^(all|[1-9][0-9]{0,2}|1000)$")]
    limit: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TransfersQuery {
    /// Only the transfers for this ticket.
    #[param(max_length = 64)]
    ticket_id: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PrepositionQuery {
    /// RUL horizon in hours: devices predicted to fail within it (default 720).
    #[param(exclusive_minimum = 0, maximum = 87600, default = 720)]
    horizon_hours: Option<f64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum OutboxState {
    Pending,
    Delivered,
    Dead,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct OutboxQuery {
    /// Only entries in this state.
    #[param(inline)]
    state: Option<OutboxState>,
}

/// Every route of the service API.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        r(
            "GET",
            "/track/{code}",
            "Public tracking page of a ticket (no personal data)",
            "tracking",
            200,
            get(track),
        )
        .returns::<Tracking>(),
        r(
            "POST",
            "/track/{code}/rating",
            "Customer satisfaction 1-5 for a closed ticket; 2 or less opens a follow-up",
            "tracking",
            200,
            post(rate),
        )
        .body::<Rating>()
        .returns::<RatingRecorded>(),
        r(
            "POST",
            "/api/v1/tickets",
            "Create a ticket (API or customer form)",
            "tickets",
            201,
            post(create_ticket),
        )
        .body::<NewTicket>()
        .returns::<Ticket>(),
        r(
            "GET",
            "/api/v1/tickets",
            "List tickets, newest first",
            "tickets",
            200,
            get(list_tickets),
        )
        .query::<TicketQuery>()
        .returns_inline::<Paged<Ticket>>(),
        r(
            "GET",
            "/api/v1/tickets/{id}",
            "A ticket with its SLA state and allowed transitions",
            "tickets",
            200,
            get(get_ticket),
        )
        .returns::<Ticket>(),
        r(
            "GET",
            "/api/v1/tickets/{id}/events",
            "The ticket's audit trail",
            "tickets",
            200,
            get(ticket_events),
        )
        .returns_list::<TicketEvent>(),
        r(
            "POST",
            "/api/v1/tickets/{id}/transitions",
            "Move a ticket through its state machine (409 lists the allowed moves)",
            "tickets",
            200,
            post(transition),
        )
        .body::<Transition>()
        .returns::<Ticket>(),
        r(
            "POST",
            "/api/v1/tickets/{id}/assign",
            "Assign a technician and secure the parts",
            "dispatch",
            200,
            post(assign),
        )
        .body::<Assign>()
        .returns::<Assigned>(),
        r(
            "GET",
            "/api/v1/tickets/{id}/candidates",
            "Technicians ranked for a ticket with explained scores",
            "dispatch",
            200,
            get(candidates),
        )
        .query::<CandidatesQuery>()
        .returns_list::<Candidate>(),
        r(
            "POST",
            "/api/v1/tickets/{id}/close",
            "Close a resolved ticket with its service report",
            "tickets",
            200,
            post(close_ticket),
        )
        .body::<ServiceReport>()
        .returns::<Ticket>(),
        r(
            "GET",
            "/api/v1/tickets/{id}/reservations",
            "Parts reserved for a ticket",
            "parts",
            200,
            get(ticket_reservations),
        )
        .returns_list::<Reservation>(),
        r(
            "GET",
            "/api/v1/alerts",
            "Predictive alerts of the devices the caller may see, newest first",
            "alerts",
            200,
            get(list_alerts),
        )
        .query::<AlertQuery>()
        .returns_list::<AlertRecord>(),
        r(
            "POST",
            "/api/v1/alerts/{id}/acknowledge",
            "A person has seen the alert and handles it (the models' later reports keep it so)",
            "alerts",
            200,
            post(acknowledge_alert),
        )
        .returns::<AlertRecord>(),
        r(
            "POST",
            "/api/v1/alerts/{id}/resolve",
            "The alert is dealt with; a later degradation opens a new one",
            "alerts",
            200,
            post(resolve_alert),
        )
        .returns::<AlertRecord>(),
        r(
            "POST",
            "/api/v1/dispatch/batch",
            "Assign open tickets optimally and reserve their parts",
            "dispatch",
            200,
            post(dispatch_batch),
        )
        .body::<BatchRequest>()
        .returns::<BatchResult>(),
        r(
            "POST",
            "/api/v1/parts/reservations",
            "Reserve stock (409 when short)",
            "parts",
            201,
            post(reserve),
        )
        .body::<ReserveRequest>()
        .returns::<Reservation>(),
        r(
            "POST",
            "/api/v1/parts/reservations/{id}/release",
            "Release a reservation",
            "parts",
            200,
            post(release),
        )
        .returns::<Reservation>(),
        r(
            "POST",
            "/api/v1/parts/reservations/{id}/consume",
            "Consume a reservation",
            "parts",
            200,
            post(consume),
        )
        .returns::<Reservation>(),
        r(
            "GET",
            "/api/v1/parts/transfers",
            "Stock transfers",
            "parts",
            200,
            get(transfers),
        )
        .query::<TransfersQuery>()
        .returns_list::<Transfer>(),
        r(
            "POST",
            "/api/v1/parts/transfers/{id}/receive",
            "A transfer arrived",
            "parts",
            200,
            post(receive),
        )
        .returns::<Transfer>(),
        r(
            "GET",
            "/api/v1/parts/reorder",
            "Stock at or below its reorder point",
            "parts",
            200,
            get(reorder),
        )
        .returns_list::<ReorderLine>(),
        r(
            "GET",
            "/api/v1/parts/prepositioning",
            "Where to move parts before predicted failures",
            "parts",
            200,
            get(preposition),
        )
        .query::<PrepositionQuery>()
        .returns_list::<Preposition>(),
        r(
            "GET",
            "/api/v1/parts",
            "The part catalogue",
            "parts",
            200,
            get(list_parts),
        )
        .returns_list::<Part>(),
        r(
            "POST",
            "/api/v1/parts",
            "Add a part to the catalogue",
            "parts",
            201,
            post(create_part),
        )
        .body::<Part>()
        .returns::<Part>(),
        r(
            "GET",
            "/api/v1/stock",
            "Stock levels",
            "parts",
            200,
            get(list_stock),
        )
        .query::<StockQuery>()
        .returns_inline::<Paged<StockLevel>>(),
        r(
            "PUT",
            "/api/v1/stock/{location_id}/{sku}",
            "Set a stock count",
            "parts",
            200,
            put(set_stock),
        )
        .body::<StockCount>()
        .returns::<StockLevel>(),
        r(
            "GET",
            "/api/v1/locations",
            "Stock locations",
            "registry",
            200,
            get(list_locations),
        )
        .returns_list::<Location>(),
        r(
            "POST",
            "/api/v1/locations",
            "Add a stock location",
            "registry",
            201,
            post(create_location),
        )
        .body::<NewLocation>()
        .returns::<Location>(),
        r(
            "GET",
            "/api/v1/providers",
            "Providers (a provider key sees its subtree)",
            "registry",
            200,
            get(list_providers),
        )
        .returns_list::<Provider>(),
        r(
            "POST",
            "/api/v1/providers",
            "Add a provider (OEM, agent, authorised provider)",
            "registry",
            201,
            post(create_provider),
        )
        .body::<NewProvider>()
        .returns::<Provider>(),
        r(
            "POST",
            "/api/v1/customers",
            "Add a customer",
            "registry",
            201,
            post(create_customer),
        )
        .body::<NewCustomer>()
        .returns::<Customer>(),
        r(
            "GET",
            "/api/v1/customers/{id}",
            "A customer",
            "registry",
            200,
            get(get_customer),
        )
        .returns::<Customer>(),
        r(
            "POST",
            "/api/v1/sites",
            "Add a site",
            "registry",
            201,
            post(create_site),
        )
        .body::<NewSite>()
        .returns::<Site>(),
        r(
            "POST",
            "/api/v1/devices",
            "Add a device to the service registry",
            "registry",
            201,
            post(create_device),
        )
        .body::<NewServiceDevice>()
        .returns::<ServiceDevice>(),
        r(
            "GET",
            "/api/v1/devices/{id}",
            "A device with its site and customer",
            "registry",
            200,
            get(get_device),
        )
        .returns::<DeviceContext>(),
        r(
            "GET",
            "/api/v1/technicians",
            "Technicians",
            "registry",
            200,
            get(list_technicians),
        )
        .query::<PageQuery>()
        .returns_inline::<Paged<Technician>>(),
        r(
            "POST",
            "/api/v1/technicians",
            "Add a technician (and their van)",
            "registry",
            201,
            post(create_technician),
        )
        .body::<NewTechnician>()
        .returns::<Technician>(),
        r(
            "GET",
            "/api/v1/technicians/{id}",
            "A technician",
            "registry",
            200,
            get(get_technician),
        )
        .returns::<Technician>(),
        r(
            "GET",
            "/api/v1/sla/policies",
            "SLA policies",
            "sla",
            200,
            get(sla_policies),
        )
        .returns_list::<SlaPolicy>(),
        r(
            "PUT",
            "/api/v1/sla/policies",
            "Set an SLA policy (seconds; onsite_secs at least response_secs)",
            "sla",
            200,
            put(set_sla_policy),
        )
        .body::<SlaPolicy>()
        .returns::<SlaPolicy>(),
        r(
            "POST",
            "/api/v1/webhooks",
            "Subscribe a webhook (HMAC-signed)",
            "webhooks",
            201,
            post(create_webhook),
        )
        .body::<NewWebhook>()
        .returns::<Webhook>(),
        r(
            "GET",
            "/api/v1/webhooks/outbox",
            "Webhook outbox",
            "webhooks",
            200,
            get(outbox),
        )
        .query::<OutboxQuery>()
        .returns_list::<OutboxEntry>(),
        r(
            "POST",
            "/api/v1/apikeys",
            "Issue an API key (admin); a provider key names its provider, a technician key its technician",
            "keys",
            201,
            post(create_key),
        )
        .body::<NewApiKey>()
        .returns::<IssuedKey>(),
    ]
}

fn created<T: serde::Serialize>(v: T) -> Res {
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

fn page(limit: Option<i64>, offset: Option<i64>) -> Result<Page, Problem> {
    Ok(Page::new(limit, offset)?)
}

async fn track(State(s): State<AppState>, PathParams(code): PathParams<String>) -> Res {
    ok(s.svc.track(&code).await?)
}

#[derive(Deserialize, ToSchema)]
struct Rating {
    #[schema(minimum = 1, maximum = 5)]
    score: i64,
    #[schema(max_length = 2000)]
    comment: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct RatingRecorded {
    recorded: bool,
    /// A score of 2 or less opens a follow-up ticket.
    follow_up_opened: bool,
}

async fn rate(
    State(s): State<AppState>,
    PathParams(code): PathParams<String>,
    JsonBody(b): JsonBody<Rating>,
) -> Res {
    let follow_up = s
        .svc
        .rate_by_tracking_code(&code, b.score, b.comment.as_deref())
        .await?;
    ok(RatingRecorded {
        recorded: true,
        follow_up_opened: follow_up.is_some(),
    })
}

async fn create_ticket(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewTicket>,
) -> Res {
    created(s.svc.create_ticket(&who, &b).await?)
}

async fn list_tickets(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<TicketQuery>,
) -> Res {
    // An empty filter value filters nothing.
    let text = |v: Option<String>| v.filter(|v| !v.is_empty());
    let filter = TicketFilter {
        state: q.state.map(|v| v.as_str().to_owned()),
        priority: q.priority.map(|v| v.as_str().to_owned()),
        source: q.source.map(|v| v.as_str().to_owned()),
        device_id: text(q.device_id),
        provider_id: text(q.provider_id),
        technician_id: text(q.technician_id),
        open: q.open,
    };
    ok(s.svc
        .tickets(&who, &filter, page(q.limit, q.offset)?)
        .await?)
}

async fn get_ticket(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.ticket(&who, &id).await?)
}

async fn ticket_events(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.ticket_events(&who, &id).await?)
}

/// The states a ticket can be moved to here (closing takes a service report:
/// `POST /api/v1/tickets/{id}/close`).
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum TargetState {
    New,
    Triaged,
    Assigned,
    EnRoute,
    OnSite,
    WaitingParts,
    Resolved,
    Cancelled,
}

impl TargetState {
    fn state(self) -> TicketState {
        match self {
            TargetState::New => TicketState::New,
            TargetState::Triaged => TicketState::Triaged,
            TargetState::Assigned => TicketState::Assigned,
            TargetState::EnRoute => TicketState::EnRoute,
            TargetState::OnSite => TicketState::OnSite,
            TargetState::WaitingParts => TicketState::WaitingParts,
            TargetState::Resolved => TicketState::Resolved,
            TargetState::Cancelled => TicketState::Cancelled,
        }
    }
}

#[derive(Deserialize, ToSchema)]
struct Transition {
    to: TargetState,
    #[schema(max_length = 2000)]
    note: Option<String>,
    /// Needed when moving to `assigned`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    technician_id: Option<String>,
}

async fn transition(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<Transition>,
) -> Res {
    let to = b.to.state();
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

#[derive(Deserialize, ToSchema)]
struct Assign {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    technician_id: String,
    #[schema(max_length = 2000)]
    note: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct Assigned {
    ticket: Ticket,
    /// How each needed part is secured.
    parts: Vec<PartPlan>,
}

async fn assign(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<Assign>,
) -> Res {
    let (ticket, parts) = s
        .svc
        .assign(&who, &id, &b.technician_id, b.note.as_deref())
        .await?;
    ok(Assigned { ticket, parts })
}

async fn candidates(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
    Query(q): Query<CandidatesQuery>,
) -> Res {
    let limit = match q.limit.as_deref() {
        Some("all") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| Problem::parameter("limit", "expected 1-1000 or all"))?,
        ),
        None => Some(10),
    };
    ok(s.svc.candidates(&who, &id, limit).await?)
}

async fn close_ticket(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<ServiceReport>,
) -> Res {
    ok(s.svc.close_ticket(&who, &id, &b).await?)
}

async fn ticket_reservations(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
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

async fn release(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.finish_reservation(&who, &id, false).await?)
}

async fn consume(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.finish_reservation(&who, &id, true).await?)
}

async fn transfers(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<TransfersQuery>,
) -> Res {
    let ticket = q.ticket_id.filter(|t| !t.is_empty());
    ok(s.svc.transfers(&who, ticket.as_deref()).await?)
}

async fn receive(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.receive_transfer(&who, &id).await?)
}

async fn list_alerts(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<AlertQuery>,
) -> Res {
    let state = q.state.map(|v| match v {
        AlertStateFilter::Open => "open",
        AlertStateFilter::Acknowledged => "acknowledged",
        AlertStateFilter::Resolved => "resolved",
    });
    let device = q.device_id.filter(|d| !d.is_empty());
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    ok(s.svc
        .alerts_visible(&who, state, device.as_deref(), limit)
        .await?)
}

async fn acknowledge_alert(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.move_alert(&who, &id, AlertMove::Acknowledge).await?)
}

async fn resolve_alert(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.move_alert(&who, &id, AlertMove::Resolve).await?)
}

async fn reorder(State(s): State<AppState>, Auth(who): Auth) -> Res {
    ok(s.svc.reorder_report(&who).await?)
}

async fn preposition(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<PrepositionQuery>,
) -> Res {
    let horizon = q.horizon_hours.unwrap_or(720.0);
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

async fn list_stock(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<StockQuery>,
) -> Res {
    let location = q.location_id.filter(|v| !v.is_empty());
    let sku = q.sku.filter(|v| !v.is_empty());
    ok(s.svc
        .stock(
            &who,
            location.as_deref(),
            sku.as_deref(),
            page(q.limit, q.offset)?,
        )
        .await?)
}

#[derive(Deserialize, ToSchema)]
struct StockCount {
    #[schema(minimum = 0, maximum = 1000000000)]
    on_hand: i64,
    #[schema(minimum = 0, maximum = 1000000000)]
    reorder_point: Option<i64>,
}

async fn set_stock(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams((location_id, sku)): PathParams<(String, String)>,
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

async fn get_customer(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
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

async fn get_device(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
    ok(s.svc.device_context(&who, &id).await?)
}

async fn list_technicians(
    State(s): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<PageQuery>,
) -> Res {
    ok(s.svc
        .technicians_where(&who, None, page(q.limit, q.offset)?)
        .await?)
}

async fn create_technician(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewTechnician>,
) -> Res {
    created(s.svc.create_technician(&who, &b).await?)
}

async fn get_technician(
    State(s): State<AppState>,
    Auth(who): Auth,
    PathParams(id): PathParams<String>,
) -> Res {
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

async fn outbox(State(s): State<AppState>, Auth(who): Auth, Query(q): Query<OutboxQuery>) -> Res {
    let state = q.state.map(|s| match s {
        OutboxState::Pending => "pending",
        OutboxState::Delivered => "delivered",
        OutboxState::Dead => "dead",
    });
    ok(s.svc.outbox(&who, state, 500).await?)
}

async fn create_key(
    State(s): State<AppState>,
    Auth(who): Auth,
    JsonBody(b): JsonBody<NewApiKey>,
) -> Res {
    created(s.svc.create_api_key(&who, &b).await?)
}
