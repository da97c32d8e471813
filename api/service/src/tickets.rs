//! Tickets: intake from any channel, the state machine, the append-only audit trail, public
//! tracking, predictive tickets from alerts, service reports and satisfaction follow-ups.

use prognos_models::alert::{AlertEvent, AlertEventKind, Severity};
use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::auth::{Action, Principal, Role, within};
use super::{
    MAX_TEXT, Page, Paged, Priority, Result, Service, ServiceError, bounded, ms_to_rfc3339, new_id,
    random_code, to_json,
};
use crate::network::MAX_QUANTITY;
use crate::ticket_log::{
    AuditEntry, TICKET_COLS, TICKET_FROM, append_event, apply_transition, lock_ticket, ticket_row,
};
pub use crate::ticket_log::{
    SLA_ONSITE_BREACHED, SLA_ONSITE_WARNED, SLA_RESPONSE_BREACHED, SLA_RESPONSE_WARNED, SlaView,
    Ticket, TicketState, TicketTimes,
};

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketSource {
    Predictive,
    Api,
    CustomerForm,
    FollowUp,
    /// Imported from a previous system's records (history before monitoring started).
    Import,
}

impl TicketSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketSource::Predictive => "predictive",
            TicketSource::Api => "api",
            TicketSource::CustomerForm => "customer_form",
            TicketSource::FollowUp => "follow_up",
            TicketSource::Import => "import",
        }
    }
}

/// The sources a caller may submit a ticket from (the others are the service's own:
/// predictive, follow-up and imported tickets).
#[derive(utoipa::ToSchema, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntakeSource {
    Api,
    CustomerForm,
}

/// A ticket as submitted. Which fields are mandatory depends on the source: `api` (the
/// default) needs `title`; `customer_form` needs `description`, `contact_name` and
/// `contact_phone`. Text that is given must not be blank.
#[derive(utoipa::ToSchema, Debug, Clone, Default, Deserialize)]
pub struct NewTicket {
    #[schema(value_type = Option<IntakeSource>)]
    pub source: Option<TicketSource>,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 200
    )]
    pub title: Option<String>,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 4000
    )]
    pub description: Option<String>,
    /// A device of the service registry.
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub device_id: Option<String>,
    #[schema(max_length = 100)]
    pub failure_mode: Option<String>,
    #[schema(max_length = 100)]
    pub skill: Option<String>,
    pub priority: Option<Priority>,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 200
    )]
    pub contact_name: Option<String>,
    /// Digits, spaces and + - ( ).
    #[schema(pattern = "^[0-9 +()-]*[0-9][0-9 +()-]*$", max_length = 40)]
    pub contact_phone: Option<String>,
    /// SKUs needed; by default the cheapest compatible part fixing the failure mode.
    #[schema(max_items = 50)]
    pub parts_needed: Option<Vec<String>>,
}

/// SLA state of one ticket at one moment.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct TicketEvent {
    pub seq: i64,
    pub at: String,
    pub at_ms: i64,
    pub actor: String,
    /// `created`, `transition`, `alert_update`, `sla_warning`, `sla_breach`, `escalation`,
    /// `report`, `satisfaction`, `parts`, `note`.
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub note: Option<String>,
}

/// The public tracking page: state and timeline, no personal data, no notes.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct Tracking {
    pub tracking_code: String,
    pub state: TicketState,
    pub priority: Priority,
    pub created_at: String,
    pub technician_assigned: bool,
    pub onsite_due: String,
    pub timeline: Vec<TrackingStep>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct TrackingStep {
    pub at: String,
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TicketFilter {
    pub state: Option<String>,
    pub priority: Option<String>,
    pub source: Option<String>,
    pub device_id: Option<String>,
    pub provider_id: Option<String>,
    pub technician_id: Option<String>,
    /// Only open (not resolved/closed/cancelled) tickets.
    pub open: Option<bool>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseCode {
    Confirmed,
    FalseAlarm,
    OtherCause,
}

impl CloseCode {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCode::Confirmed => "confirmed",
            CloseCode::FalseAlarm => "false_alarm",
            CloseCode::OtherCause => "other_cause",
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Deserialize, Serialize)]
pub struct PartUsed {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 1000000)]
    pub quantity: i64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Deserialize, Serialize)]
pub struct ServiceReport {
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 4000
    )]
    pub cause: String,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 4000
    )]
    pub fix: String,
    #[serde(default)]
    #[schema(max_items = 100)]
    pub parts_used: Vec<PartUsed>,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 200
    )]
    pub signed_off_by: String,
    pub close_code: CloseCode,
    #[schema(minimum = 1, maximum = 5)]
    pub satisfaction: Option<i64>,
}

/// The moves `who` may make on `ticket` now: the state machine's next states that the
/// caller's role permits, the same checks [`Service::transition`], [`Service::assign`] and
/// [`Service::close_ticket`] make. Assigning needs a technician and closing a service report,
/// so callers offer those two with their forms.
pub fn transitions_for(who: &Principal, ticket: &Ticket) -> Vec<TicketState> {
    if !who.sees_ticket(
        ticket.provider_path.as_deref(),
        ticket.technician_id.as_deref(),
    ) {
        return Vec::new();
    }
    ticket
        .state
        .next()
        .iter()
        .copied()
        .filter(|to| match to {
            TicketState::Closed => who.require(Action::CloseTicket).is_ok(),
            TicketState::Assigned => who.require(Action::Dispatch).is_ok(),
            _ => {
                who.require(Action::Transition).is_ok()
                    && (who.role != Role::Technician || to.technician_may_set())
            }
        })
        .collect()
}

/// Priority of a predictive ticket: from the pessimistic RUL bound (or the alert severity
/// without one), one level up for production-critical devices (criticality 3), one down for
/// low-criticality ones (1); VIP devices or customers raise it one more.
pub fn predictive_priority(
    rul_lower_hours: Option<f64>,
    severity: Severity,
    criticality: i64,
    vip: bool,
) -> Priority {
    let base = match rul_lower_hours.filter(|r| r.is_finite()) {
        Some(r) if r < 48.0 => Priority::Emergency,
        Some(r) if r < 7.0 * 24.0 => Priority::Major,
        Some(_) => Priority::Normal,
        None => match severity {
            Severity::Critical => Priority::Emergency,
            Severity::High => Priority::Major,
            _ => Priority::Normal,
        },
    };
    let by_criticality = match criticality {
        c if c >= 3 => base.raised(),
        c if c <= 1 => base.lowered(),
        _ => base,
    };
    if vip {
        by_criticality.raised()
    } else {
        by_criticality
    }
}

/// Lines of a service report or parts of a ticket: a repair, not a warehouse inventory.
pub const MAX_PARTS: usize = 100;

struct Placement {
    site_id: Option<String>,
    customer_id: Option<String>,
    region: Option<String>,
    provider_id: Option<String>,
    tier: String,
    vip: bool,
    criticality: i64,
    model: Option<String>,
}

impl Service {
    async fn placement(&self, device_id: Option<&str>) -> Result<Placement> {
        let mut p = Placement {
            site_id: None,
            customer_id: None,
            region: None,
            provider_id: None,
            tier: "standard".to_owned(),
            vip: false,
            criticality: 2,
            model: None,
        };
        let Some(device_id) = device_id else {
            return Ok(p);
        };
        match self
            .device_context(&Principal::system("service"), device_id)
            .await
        {
            Ok(ctx) => {
                p.provider_id = self
                    .provider_for_region(&ctx.site.region)
                    .await?
                    .map(|x| x.provider_id);
                p.site_id = Some(ctx.site.site_id);
                p.customer_id = Some(ctx.customer.customer_id);
                p.region = Some(ctx.site.region);
                p.tier = ctx.customer.tier;
                p.vip = ctx.device.vip || ctx.customer.vip;
                p.criticality = ctx.device.criticality;
                p.model = Some(ctx.device.model);
            }
            Err(ServiceError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(p)
    }

    /// Validates and stores a new ticket (any channel but predictive: see
    /// [`Service::apply_alert_event`]).
    pub async fn create_ticket(&self, who: &Principal, new: &NewTicket) -> Result<Ticket> {
        who.require(Action::CreateTicket)?;
        let source = new.source.unwrap_or(TicketSource::Api);
        for (field, value, max) in [
            ("title", &new.title, 200),
            ("description", &new.description, MAX_TEXT),
            ("contact_name", &new.contact_name, 200),
            ("contact_phone", &new.contact_phone, 50),
            ("failure_mode", &new.failure_mode, 100),
            ("skill", &new.skill, 100),
        ] {
            bounded(field, value.as_deref(), max)?;
        }
        let need = |field: &str, v: &Option<String>| -> Result<()> {
            match v {
                Some(s) if !s.trim().is_empty() => Ok(()),
                _ => Err(ServiceError::invalid(field, "is required")),
            }
        };
        match source {
            TicketSource::Api => {
                need("title", &new.title)?;
                need("device_id", &new.device_id)?;
            }
            TicketSource::CustomerForm | TicketSource::Import => {
                if source == TicketSource::Import && !who.key_id.starts_with("system:") {
                    return Err(ServiceError::invalid(
                        "source",
                        "imported tickets are created by the service's import",
                    ));
                }
                need("device_id", &new.device_id)?;
                need("description", &new.description)?;
                need("contact_name", &new.contact_name)?;
                need("contact_phone", &new.contact_phone)?;
            }
            TicketSource::Predictive | TicketSource::FollowUp => {
                return Err(ServiceError::invalid(
                    "source",
                    "predictive and follow-up tickets are created by the service",
                ));
            }
        }
        if let Some(phone) = &new.contact_phone
            && !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-()".contains(c))
        {
            return Err(ServiceError::invalid(
                "contact_phone",
                "digits, spaces and + - ( ) only",
            ));
        }
        let device_id = new.device_id.as_deref();
        let placement = self.placement(device_id).await?;
        if placement.site_id.is_none() {
            // Registered in the service registry first (POST /api/v1/devices).
            return Err(ServiceError::unknown(
                "device_id",
                "device",
                device_id.unwrap_or_default(),
            ));
        }
        if let Some(scope) = who.scope() {
            let path = match &placement.provider_id {
                Some(p) => Some(self.provider(p).await?.path),
                None => None,
            };
            if !path.as_deref().is_some_and(|p| p.starts_with(scope)) {
                return Err(ServiceError::Forbidden(
                    "the device is outside this provider's network".into(),
                ));
            }
        }
        let parts_needed = match (&new.parts_needed, &new.failure_mode) {
            (Some(p), _) if p.len() > MAX_PARTS => {
                return Err(ServiceError::invalid(
                    "parts_needed",
                    format!("at most {MAX_PARTS} parts"),
                ));
            }
            (Some(p), _) => {
                for (i, sku) in p.iter().enumerate() {
                    self.part(sku).await.map_err(|_| {
                        ServiceError::unknown(&format!("parts_needed[{i}]"), "part", sku)
                    })?;
                }
                p.clone()
            }
            (None, Some(mode)) => self.parts_for(placement.model.as_deref(), mode).await?,
            (None, None) => Vec::new(),
        };
        let mut priority = new.priority.unwrap_or(Priority::Normal);
        if placement.vip {
            priority = priority.raised();
        }
        let title = new
            .title
            .clone()
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| {
                format!(
                    "Repair request for {}",
                    device_id.unwrap_or("an unregistered device")
                )
            });
        let fields = InsertTicket {
            source,
            title,
            description: new.description.clone(),
            device_id: new.device_id.clone(),
            failure_mode: new.failure_mode.clone(),
            skill: new.skill.clone().or_else(|| new.failure_mode.clone()),
            parts_needed,
            priority,
            contact_name: new.contact_name.clone(),
            contact_phone: new.contact_phone.clone(),
            alert_id: None,
            evidence: None,
            rul: (None, None, None),
            open_key: None,
            parent_ticket_id: None,
        };
        let mut tx = self.begin_write().await?;
        let id = self
            .insert_ticket(&mut tx, &placement, fields, &who.actor())
            .await?;
        tx.commit().await?;
        self.ticket_unscoped(&id).await
    }

    async fn insert_ticket(
        &self,
        conn: &mut SqliteConnection,
        placement: &Placement,
        f: InsertTicket,
        actor: &str,
    ) -> Result<String> {
        let now = self.now_ms();
        let (response_secs, onsite_secs) =
            super::sla::policy_in(conn, f.priority, &placement.tier).await?;
        let id = new_id("T")?;
        let code = random_code(10)?;
        sqlx::query(
            "INSERT INTO tickets (ticket_id, tracking_code, source, title, description, device_id,
                site_id, customer_id, region, provider_id, escalation_level, failure_mode, skill,
                parts_needed, priority, tier, state, alert_id, evidence, rul_hours, rul_lower_hours,
                rul_upper_hours, contact_name, contact_phone, open_key, parent_ticket_id,
                created_at_ms, updated_at_ms, response_due_ms, onsite_due_ms, sla_flags, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, $15, 'new',
                $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $25, $26, $27, 0, 0)",
        )
        .bind(&id)
        .bind(&code)
        .bind(f.source.as_str())
        .bind(&f.title)
        .bind(&f.description)
        .bind(&f.device_id)
        .bind(&placement.site_id)
        .bind(&placement.customer_id)
        .bind(&placement.region)
        .bind(&placement.provider_id)
        .bind(&f.failure_mode)
        .bind(&f.skill)
        .bind(to_json(&f.parts_needed))
        .bind(f.priority.as_str())
        .bind(&placement.tier)
        .bind(&f.alert_id)
        .bind(&f.evidence)
        .bind(f.rul.0)
        .bind(f.rul.1)
        .bind(f.rul.2)
        .bind(&f.contact_name)
        .bind(&f.contact_phone)
        .bind(&f.open_key)
        .bind(&f.parent_ticket_id)
        .bind(now)
        .bind(now + response_secs * 1000)
        .bind(now + onsite_secs * 1000)
        .execute(&mut *conn)
        .await?;
        append_event(
            conn,
            &AuditEntry {
                ticket_id: &id,
                at_ms: now,
                actor,
                kind: "created",
                from: None,
                to: Some("new"),
                note: Some(&format!(
                    "{} ticket, priority {}",
                    f.source.as_str(),
                    f.priority.as_str()
                )),
            },
        )
        .await?;
        let path: Option<String> = match &placement.provider_id {
            Some(p) => {
                sqlx::query_scalar("SELECT path FROM providers WHERE provider_id = $1")
                    .bind(p)
                    .fetch_optional(&mut *conn)
                    .await?
            }
            None => None,
        };
        super::webhooks::enqueue(
            conn,
            path.as_deref(),
            "ticket.created",
            &serde_json::json!({
                "ticket_id": id, "tracking_code": code, "source": f.source.as_str(),
                "priority": f.priority.as_str(), "device_id": f.device_id,
                "failure_mode": f.failure_mode, "at": ms_to_rfc3339(now),
            }),
            now,
        )
        .await?;
        Ok(id)
    }

    /// A ticket, if `who` may see it (another provider's ticket reads as not found).
    pub async fn ticket(&self, who: &Principal, id: &str) -> Result<Ticket> {
        who.require(Action::ReadTickets)?;
        let t = self.ticket_unscoped(id).await?;
        if !who.sees_ticket(t.provider_path.as_deref(), t.technician_id.as_deref()) {
            return Err(ServiceError::not_found("ticket", id));
        }
        Ok(t)
    }

    pub async fn ticket_unscoped(&self, id: &str) -> Result<Ticket> {
        let now = self.now_ms();
        sqlx::query(&format!(
            "SELECT {TICKET_COLS} {TICKET_FROM} WHERE t.ticket_id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .map(|r| ticket_row(&r, now))
        .ok_or_else(|| ServiceError::not_found("ticket", id))
    }

    pub async fn tickets(
        &self,
        who: &Principal,
        filter: &TicketFilter,
        page: Page,
    ) -> Result<Paged<Ticket>> {
        who.require(Action::ReadTickets)?;
        if let Some(s) = &filter.state
            && TicketState::parse(s).is_none()
        {
            return Err(ServiceError::invalid("state", "unknown state"));
        }
        if let Some(p) = &filter.priority
            && Priority::parse(p).is_none()
        {
            return Err(ServiceError::invalid("priority", "unknown priority"));
        }
        let now = self.now_ms();
        let rows = sqlx::query(&format!(
            "SELECT {TICKET_COLS} {TICKET_FROM}
             WHERE ($1 IS NULL OR t.state = $1) AND ($2 IS NULL OR t.priority = $2)
               AND ($3 IS NULL OR t.source = $3) AND ($4 IS NULL OR t.device_id = $4)
               AND ($5 IS NULL OR t.provider_id = $5) AND ($6 IS NULL OR t.technician_id = $6)
               AND ($7 = 0 OR t.state NOT IN ('resolved', 'closed', 'cancelled'))
               AND {} AND ($11 IS NULL OR t.technician_id = $11)
             ORDER BY t.created_at_ms DESC, t.ticket_id LIMIT $9 OFFSET $10",
            within("p.path", "$8")
        ))
        .bind(&filter.state)
        .bind(&filter.priority)
        .bind(&filter.source)
        .bind(&filter.device_id)
        .bind(&filter.provider_id)
        .bind(who.bound_technician().or(filter.technician_id.as_deref()))
        .bind(i64::from(filter.open.unwrap_or(false)))
        .bind(who.scope())
        .bind(page.limit + 1)
        .bind(page.offset)
        .bind(who.technician())
        .fetch_all(self.pool())
        .await?;
        Ok(Paged::from_rows(
            rows.iter().map(|r| ticket_row(r, now)).collect(),
            page,
        ))
    }

    /// Moves a ticket through the state machine. Closing goes through [`Service::close_ticket`]
    /// (it needs a service report).
    pub async fn transition(
        &self,
        who: &Principal,
        ticket_id: &str,
        to: TicketState,
        note: Option<&str>,
        technician_id: Option<&str>,
    ) -> Result<Ticket> {
        who.require(Action::Transition)?;
        bounded("note", note, MAX_TEXT)?;
        if who.role == Role::Technician && !to.technician_may_set() {
            return Err(ServiceError::Forbidden(format!(
                "a technician may not move a ticket to {}",
                to.as_str()
            )));
        }
        if to == TicketState::Closed {
            return Err(ServiceError::invalid(
                "to",
                "close a ticket with POST /api/v1/tickets/{id}/close and a service report",
            ));
        }
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let ticket = lock_ticket(&mut tx, ticket_id, now).await?;
        if !who.sees_ticket(
            ticket.provider_path.as_deref(),
            ticket.technician_id.as_deref(),
        ) {
            return Err(ServiceError::not_found("ticket", ticket_id));
        }
        if let (Some(scope), Some(t)) = (who.scope(), technician_id) {
            let path: Option<String> = sqlx::query_scalar(
                "SELECT p.path FROM technicians t JOIN providers p ON p.provider_id = t.provider_id
                 WHERE t.technician_id = $1",
            )
            .bind(t)
            .fetch_optional(&mut *tx)
            .await?;
            if !path.is_some_and(|p| p.starts_with(scope)) {
                return Err(ServiceError::unknown("technician_id", "technician", t));
            }
        }
        apply_transition(&mut tx, &ticket, to, &who.actor(), note, technician_id, now).await?;
        tx.commit().await?;
        self.ticket_unscoped(ticket_id).await
    }

    /// The audit trail, oldest first.
    pub async fn ticket_events(
        &self,
        who: &Principal,
        ticket_id: &str,
    ) -> Result<Vec<TicketEvent>> {
        self.ticket(who, ticket_id).await?;
        let rows = sqlx::query(
            "SELECT seq, at_ms, actor, kind, from_state, to_state, note FROM ticket_events
             WHERE ticket_id = $1 ORDER BY seq",
        )
        .bind(ticket_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| TicketEvent {
                seq: r.get(0),
                at: ms_to_rfc3339(r.get(1)),
                at_ms: r.get(1),
                actor: r.get(2),
                kind: r.get(3),
                from_state: r.get(4),
                to_state: r.get(5),
                note: r.get(6),
            })
            .collect())
    }

    /// The public view behind a tracking code.
    pub async fn track(&self, code: &str) -> Result<Tracking> {
        let r = sqlx::query(
            "SELECT ticket_id, state, priority, created_at_ms, technician_id, onsite_due_ms
             FROM tickets WHERE tracking_code = $1",
        )
        .bind(code.to_ascii_uppercase())
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| ServiceError::not_found("tracking code", code))?;
        let ticket_id: String = r.get(0);
        let steps = sqlx::query(
            "SELECT at_ms, to_state FROM ticket_events
             WHERE ticket_id = $1 AND to_state IS NOT NULL ORDER BY seq",
        )
        .bind(&ticket_id)
        .fetch_all(self.pool())
        .await?;
        Ok(Tracking {
            tracking_code: code.to_ascii_uppercase(),
            state: TicketState::parse(&r.get::<String, _>(1)).unwrap_or(TicketState::New),
            priority: Priority::parse(&r.get::<String, _>(2)).unwrap_or(Priority::Normal),
            created_at: ms_to_rfc3339(r.get(3)),
            technician_assigned: r.get::<Option<String>, _>(4).is_some(),
            onsite_due: ms_to_rfc3339(r.get(5)),
            timeline: steps
                .iter()
                .map(|s| TrackingStep {
                    at: ms_to_rfc3339(s.get(0)),
                    state: s.get(1),
                })
                .collect(),
        })
    }

    /// Turns an alert event into ticket work: an opening or escalation creates the predictive
    /// ticket for (device, failure mode) or updates the open one; a resolution is noted.
    /// Returns the ticket id touched, if any.
    pub async fn apply_alert_event(&self, event: &AlertEvent) -> Result<Option<String>> {
        let a = &event.alert;
        let open_key = format!("{}|{}", a.device_id, a.failure_mode);
        let rul = a.evidence.rul_hours;
        let finite = |x: Option<f64>| x.filter(|v| v.is_finite());
        let rul = (
            finite(rul.map(|r| r.rul)),
            finite(rul.map(|r| r.lower)),
            finite(rul.map(|r| r.upper)),
        );
        let alert_id: Option<String> = sqlx::query_scalar(
            "SELECT alert_id FROM alerts WHERE device_id = $1 AND failure_mode = $2
             ORDER BY opened_at_ms DESC LIMIT 1",
        )
        .bind(&a.device_id)
        .bind(&a.failure_mode)
        .fetch_optional(self.pool())
        .await?;
        let evidence = to_json(&a.evidence);
        let now = self.now_ms();
        let actor = "system:alerts";
        let existing: Option<String> =
            sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE open_key = $1")
                .bind(&open_key)
                .fetch_optional(self.pool())
                .await?;
        match event.kind {
            AlertEventKind::Acknowledged => return Ok(existing),
            AlertEventKind::Resolved => {
                if let Some(id) = &existing {
                    let mut tx = self.begin_write().await?;
                    lock_ticket(&mut tx, id, now).await?;
                    append_event(
                        &mut tx,
                        &AuditEntry {
                            ticket_id: id,
                            at_ms: now,
                            actor,
                            kind: "alert_update",
                            from: None,
                            to: None,
                            note: Some("the alert cleared in the models; the visit is still due"),
                        },
                    )
                    .await?;
                    tx.commit().await?;
                }
                return Ok(existing);
            }
            AlertEventKind::Opened | AlertEventKind::Escalated => {}
        }
        let placement = self.placement(Some(&a.device_id)).await?;
        let priority = predictive_priority(rul.1, a.severity, placement.criticality, placement.vip);
        if let Some(id) = existing {
            self.update_predictive(&id, priority, &evidence, rul, alert_id.as_deref(), a)
                .await?;
            return Ok(Some(id));
        }
        let parts_needed = self
            .parts_for(placement.model.as_deref(), &a.failure_mode)
            .await?;
        let fields = InsertTicket {
            source: TicketSource::Predictive,
            title: format!(
                "Predicted {} on {}",
                a.failure_mode.replace('_', " "),
                a.device_id
            ),
            description: Some(format!(
                "Raised by detector {} (score {:.2}, ratio {:.2}){}",
                a.evidence.detector,
                a.evidence.score,
                a.evidence.ratio,
                rul.0
                    .map(|r| format!(", remaining useful life ≈ {r:.0} h"))
                    .unwrap_or_default()
            )),
            device_id: Some(a.device_id.clone()),
            failure_mode: Some(a.failure_mode.clone()),
            skill: Some(a.failure_mode.clone()),
            parts_needed,
            priority,
            contact_name: None,
            contact_phone: None,
            alert_id: alert_id.clone(),
            evidence: Some(evidence.clone()),
            rul,
            open_key: Some(open_key.clone()),
            parent_ticket_id: None,
        };
        let mut tx = self.begin_write().await?;
        match self.insert_ticket(&mut tx, &placement, fields, actor).await {
            Ok(id) => {
                tx.commit().await?;
                Ok(Some(id))
            }
            Err(ServiceError::Sql(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                // Another event for the same problem won the race: update its ticket.
                drop(tx);
                let id: String =
                    sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE open_key = $1")
                        .bind(&open_key)
                        .fetch_one(self.pool())
                        .await?;
                self.update_predictive(&id, priority, &evidence, rul, alert_id.as_deref(), a)
                    .await?;
                Ok(Some(id))
            }
            Err(e) => Err(e),
        }
    }

    async fn update_predictive(
        &self,
        id: &str,
        priority: Priority,
        evidence: &str,
        rul: (Option<f64>, Option<f64>, Option<f64>),
        alert_id: Option<&str>,
        a: &prognos_models::alert::Alert,
    ) -> Result<()> {
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let t = lock_ticket(&mut tx, id, now).await?;
        // Priority only ever rises from new evidence; a human lowers it.
        let new_priority = t.priority.max(priority);
        sqlx::query(
            "UPDATE tickets SET evidence = $2, rul_hours = $3, rul_lower_hours = $4,
                rul_upper_hours = $5, alert_id = COALESCE($6, alert_id), priority = $7,
                updated_at_ms = $8
             WHERE ticket_id = $1",
        )
        .bind(id)
        .bind(evidence)
        .bind(rul.0)
        .bind(rul.1)
        .bind(rul.2)
        .bind(alert_id)
        .bind(new_priority.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let mut note = format!("alert update: severity {:?}", a.severity).to_lowercase();
        if let Some(r) = rul.0 {
            note.push_str(&format!(", RUL ≈ {r:.0} h"));
        }
        if new_priority != t.priority {
            note.push_str(&format!(
                ", priority {} → {}",
                t.priority.as_str(),
                new_priority.as_str()
            ));
        }
        append_event(
            &mut tx,
            &AuditEntry {
                ticket_id: id,
                at_ms: now,
                actor: "system:alerts",
                kind: "alert_update",
                from: None,
                to: None,
                note: Some(&note),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Closes a resolved ticket with its service report: consumes the parts used from the
    /// ticket's reservations, releases the rest, records the close code on the alert, and
    /// handles a satisfaction score if one came with it. All or nothing.
    pub async fn close_ticket(
        &self,
        who: &Principal,
        ticket_id: &str,
        report: &ServiceReport,
    ) -> Result<Ticket> {
        who.require(Action::CloseTicket)?;
        bounded("cause", Some(&report.cause), MAX_TEXT)?;
        bounded("fix", Some(&report.fix), MAX_TEXT)?;
        bounded("signed_off_by", Some(&report.signed_off_by), 200)?;
        if report.cause.trim().is_empty() {
            return Err(ServiceError::invalid("cause", "is required"));
        }
        if report.fix.trim().is_empty() {
            return Err(ServiceError::invalid("fix", "is required"));
        }
        if report.signed_off_by.trim().is_empty() {
            return Err(ServiceError::invalid("signed_off_by", "is required"));
        }
        if report.parts_used.len() > MAX_PARTS {
            return Err(ServiceError::invalid(
                "parts_used",
                format!("at most {MAX_PARTS} lines"),
            ));
        }
        for (i, p) in report.parts_used.iter().enumerate() {
            if !(1..=MAX_QUANTITY).contains(&p.quantity) {
                return Err(ServiceError::invalid(
                    &format!("parts_used[{i}].quantity"),
                    format!("must be between 1 and {MAX_QUANTITY}"),
                ));
            }
        }
        if let Some(s) = report.satisfaction
            && !(1..=5).contains(&s)
        {
            return Err(ServiceError::invalid("satisfaction", "must be 1..5"));
        }
        let now = self.now_ms();
        let actor = who.actor();
        let mut tx = self.begin_write().await?;
        let ticket = lock_ticket(&mut tx, ticket_id, now).await?;
        if !who.sees_ticket(
            ticket.provider_path.as_deref(),
            ticket.technician_id.as_deref(),
        ) {
            return Err(ServiceError::not_found("ticket", ticket_id));
        }
        // The state decides first: an open ticket cannot be closed, whatever its report says.
        if !ticket.state.can_move_to(TicketState::Closed) {
            return Err(ServiceError::IllegalTransition {
                from: ticket.state.as_str().to_owned(),
                to: TicketState::Closed.as_str().to_owned(),
                allowed: ticket
                    .state
                    .next()
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect(),
            });
        }
        for (i, used) in report.parts_used.iter().enumerate() {
            crate::stock::consume_for_ticket(&mut tx, ticket_id, &used.sku, used.quantity, now)
                .await
                .map_err(|e| match e {
                    ServiceError::Conflict(m) => {
                        ServiceError::invalid(&format!("parts_used[{i}]"), m)
                    }
                    e => e,
                })?;
        }
        apply_transition(
            &mut tx,
            &ticket,
            TicketState::Closed,
            &actor,
            Some(&format!("close code {}", report.close_code.as_str())),
            None,
            now,
        )
        .await?;
        crate::stock::release_ticket_reservations(&mut tx, ticket_id, now).await?;
        sqlx::query(
            "INSERT INTO service_reports (ticket_id, cause, fix, parts_used, signed_off_by, close_code, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(ticket_id)
        .bind(&report.cause)
        .bind(&report.fix)
        .bind(to_json(&report.parts_used))
        .bind(&report.signed_off_by)
        .bind(report.close_code.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append_event(
            &mut tx,
            &AuditEntry {
                ticket_id,
                at_ms: now,
                actor: &actor,
                kind: "report",
                from: None,
                to: None,
                note: Some(&format!(
                    "cause: {}; fix: {}; signed off by {}",
                    report.cause, report.fix, report.signed_off_by
                )),
            },
        )
        .await?;
        if let Some(alert_id) = &ticket.alert_id {
            sqlx::query("UPDATE alerts SET close_code = $2, updated_at = $3 WHERE alert_id = $1")
                .bind(alert_id)
                .bind(report.close_code.as_str())
                .bind(ms_to_rfc3339(now))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(score) = report.satisfaction {
            self.record_satisfaction(&mut tx, &ticket, score, None, now)
                .await?;
        }
        tx.commit().await?;
        self.ticket_unscoped(ticket_id).await
    }

    /// The customer's satisfaction score (1–5) for a closed ticket; ≤ 2 opens a follow-up.
    /// Given through the tracking code, so the customer needs no key.
    pub async fn rate_by_tracking_code(
        &self,
        code: &str,
        score: i64,
        comment: Option<&str>,
    ) -> Result<Option<String>> {
        if !(1..=5).contains(&score) {
            return Err(ServiceError::invalid("score", "must be 1..5"));
        }
        bounded("comment", comment, MAX_TEXT)?;
        let id: String =
            sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE tracking_code = $1")
                .bind(code.to_ascii_uppercase())
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| ServiceError::not_found("tracking code", code))?;
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let ticket = lock_ticket(&mut tx, &id, now).await?;
        let follow_up = self
            .record_satisfaction(&mut tx, &ticket, score, comment, now)
            .await?;
        tx.commit().await?;
        Ok(follow_up)
    }

    async fn record_satisfaction(
        &self,
        conn: &mut SqliteConnection,
        ticket: &Ticket,
        score: i64,
        comment: Option<&str>,
        now: i64,
    ) -> Result<Option<String>> {
        if ticket.satisfaction.is_some() {
            return Err(ServiceError::Conflict(
                "this ticket is already rated".into(),
            ));
        }
        let state: String = sqlx::query_scalar("SELECT state FROM tickets WHERE ticket_id = $1")
            .bind(&ticket.ticket_id)
            .fetch_one(&mut *conn)
            .await?;
        if state != "closed" {
            return Err(ServiceError::Conflict(
                "only a closed ticket can be rated".into(),
            ));
        }
        sqlx::query("UPDATE tickets SET satisfaction = $2 WHERE ticket_id = $1")
            .bind(&ticket.ticket_id)
            .bind(score)
            .execute(&mut *conn)
            .await?;
        append_event(
            conn,
            &AuditEntry {
                ticket_id: &ticket.ticket_id,
                at_ms: now,
                actor: "customer",
                kind: "satisfaction",
                from: None,
                to: None,
                note: Some(&format!("score {score}")),
            },
        )
        .await?;
        if score > 2 {
            return Ok(None);
        }
        let placement = self.placement(ticket.device_id.as_deref()).await?;
        let fields = InsertTicket {
            source: TicketSource::FollowUp,
            title: format!("Follow-up: {}", ticket.title),
            description: Some(format!(
                "Customer rated ticket {} with {score}/5{}",
                ticket.tracking_code,
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            )),
            device_id: ticket.device_id.clone(),
            failure_mode: ticket.failure_mode.clone(),
            skill: ticket.skill.clone(),
            parts_needed: Vec::new(),
            priority: ticket.priority.raised(),
            contact_name: ticket.contact_name.clone(),
            contact_phone: ticket.contact_phone.clone(),
            alert_id: None,
            evidence: None,
            rul: (None, None, None),
            open_key: None,
            parent_ticket_id: Some(ticket.ticket_id.clone()),
        };
        let id = self
            .insert_ticket(conn, &placement, fields, "system:satisfaction")
            .await?;
        append_event(
            conn,
            &AuditEntry {
                ticket_id: &ticket.ticket_id,
                at_ms: now,
                actor: "system:satisfaction",
                kind: "note",
                from: None,
                to: None,
                note: Some(&format!("follow-up ticket {id} opened")),
            },
        )
        .await?;
        Ok(Some(id))
    }
}

struct InsertTicket {
    source: TicketSource,
    title: String,
    description: Option<String>,
    device_id: Option<String>,
    failure_mode: Option<String>,
    skill: Option<String>,
    parts_needed: Vec<String>,
    priority: Priority,
    contact_name: Option<String>,
    contact_phone: Option<String>,
    alert_id: Option<String>,
    evidence: Option<String>,
    rul: (Option<f64>, Option<f64>, Option<f64>),
    open_key: Option<String>,
    parent_ticket_id: Option<String>,
}
