//! The ticket log: the ticket record and its state machine, the row lock every change
//! takes, the append-only audit trail and the one function that moves a ticket between
//! states. Tickets, parts, dispatch and the SLA timer all change tickets through here, so
//! none of them needs another.

use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use crate::{Priority, Result, ServiceError, json_list, ms_to_rfc3339, new_id};

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    New,
    Triaged,
    Assigned,
    EnRoute,
    OnSite,
    WaitingParts,
    Resolved,
    Closed,
    Cancelled,
}

impl TicketState {
    pub const ALL: [TicketState; 9] = [
        TicketState::New,
        TicketState::Triaged,
        TicketState::Assigned,
        TicketState::EnRoute,
        TicketState::OnSite,
        TicketState::WaitingParts,
        TicketState::Resolved,
        TicketState::Closed,
        TicketState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TicketState::New => "new",
            TicketState::Triaged => "triaged",
            TicketState::Assigned => "assigned",
            TicketState::EnRoute => "en_route",
            TicketState::OnSite => "on_site",
            TicketState::WaitingParts => "waiting_parts",
            TicketState::Resolved => "resolved",
            TicketState::Closed => "closed",
            TicketState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TicketState> {
        TicketState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The legal moves from this state.
    pub fn next(self) -> &'static [TicketState] {
        use TicketState::*;
        match self {
            New => &[Triaged, Cancelled],
            Triaged => &[Assigned, WaitingParts, Cancelled],
            Assigned => &[EnRoute, WaitingParts, Triaged, Cancelled],
            WaitingParts => &[Assigned, Triaged, Cancelled],
            EnRoute => &[OnSite, Assigned, Cancelled],
            OnSite => &[Resolved, WaitingParts],
            Resolved => &[Closed, OnSite],
            Closed | Cancelled => &[],
        }
    }

    pub fn can_move_to(self, to: TicketState) -> bool {
        self.next().contains(&to)
    }

    /// Open: counts for SLA, load and "one open ticket per device and failure mode".
    pub fn is_open(self) -> bool {
        !matches!(
            self,
            TicketState::Resolved | TicketState::Closed | TicketState::Cancelled
        )
    }

    /// States a field technician may set.
    pub fn technician_may_set(self) -> bool {
        matches!(
            self,
            TicketState::EnRoute
                | TicketState::OnSite
                | TicketState::WaitingParts
                | TicketState::Resolved
        )
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct SlaView {
    pub response_due: String,
    pub onsite_due: String,
    /// `response` (waiting for triage), `onsite` (waiting for the visit), `paused` (waiting
    /// for parts: the clock is stopped), `met`, `stopped`.
    pub phase: String,
    /// `ok`, `warning` (≥ 80 % of the window used) or `breached`.
    pub status: String,
    /// Seconds left in the current phase (negative once breached).
    pub remaining_secs: Option<i64>,
    pub response_breached: bool,
    pub onsite_breached: bool,
    pub escalation_level: i64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct Ticket {
    pub ticket_id: String,
    pub tracking_code: String,
    pub source: String,
    pub title: String,
    pub description: Option<String>,
    pub device_id: Option<String>,
    pub site_id: Option<String>,
    pub customer_id: Option<String>,
    pub region: Option<String>,
    pub provider_id: Option<String>,
    #[serde(skip)]
    pub provider_path: Option<String>,
    pub escalated_to: Option<String>,
    pub failure_mode: Option<String>,
    pub skill: Option<String>,
    pub parts_needed: Vec<String>,
    pub priority: Priority,
    pub tier: String,
    pub state: TicketState,
    pub technician_id: Option<String>,
    pub alert_id: Option<String>,
    pub evidence: Option<serde_json::Value>,
    pub rul_hours: Option<f64>,
    pub rul_lower_hours: Option<f64>,
    pub rul_upper_hours: Option<f64>,
    pub contact_name: Option<String>,
    pub contact_phone: Option<String>,
    pub parent_ticket_id: Option<String>,
    pub satisfaction: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    pub allowed_transitions: Vec<TicketState>,
    pub sla: SlaView,
    #[serde(skip)]
    pub raw: TicketTimes,
}

/// The raw times and flags the SLA timer works with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TicketTimes {
    pub created_at_ms: i64,
    pub response_due_ms: i64,
    pub onsite_due_ms: i64,
    pub responded_at_ms: Option<i64>,
    pub onsite_at_ms: Option<i64>,
    pub sla_flags: i64,
    pub escalation_level: i64,
    /// Time spent waiting for parts; the open deadlines were moved back by it.
    pub sla_paused_ms: i64,
}

pub const SLA_RESPONSE_WARNED: i64 = 1;
pub const SLA_RESPONSE_BREACHED: i64 = 2;
pub const SLA_ONSITE_WARNED: i64 = 4;
pub const SLA_ONSITE_BREACHED: i64 = 8;

pub(crate) const TICKET_COLS: &str =
    "t.ticket_id, t.tracking_code, t.source, t.title, t.description,
    t.device_id, t.site_id, t.customer_id, t.region, t.provider_id, p.path, t.escalated_to,
    t.failure_mode, t.skill, t.parts_needed, t.priority, t.tier, t.state, t.technician_id,
    t.alert_id, t.evidence, t.rul_hours, t.rul_lower_hours, t.rul_upper_hours, t.contact_name,
    t.contact_phone, t.parent_ticket_id, t.satisfaction, t.created_at_ms, t.updated_at_ms,
    t.response_due_ms, t.onsite_due_ms, t.responded_at_ms, t.onsite_at_ms, t.sla_flags,
    t.escalation_level, t.sla_paused_ms";

pub(crate) const TICKET_FROM: &str =
    "FROM tickets t LEFT JOIN providers p ON p.provider_id = t.provider_id";

pub(crate) fn sla_view(t: &TicketTimes, state: TicketState, now_ms: i64) -> SlaView {
    let flags = t.sla_flags;
    let (phase, start, due) = if !state.is_open() {
        ("stopped", None, None)
    } else if state == TicketState::WaitingParts {
        ("paused", None, None)
    } else if t.responded_at_ms.is_none() {
        ("response", Some(t.created_at_ms), Some(t.response_due_ms))
    } else if t.onsite_at_ms.is_none() {
        ("onsite", Some(t.created_at_ms), Some(t.onsite_due_ms))
    } else {
        ("met", None, None)
    };
    let status = match (start, due) {
        (Some(start), Some(due)) => {
            // Paused time moved the deadline back; it is no part of the window used.
            let window = (due - start - t.sla_paused_ms).max(1) as f64;
            let used = (now_ms - start - t.sla_paused_ms) as f64 / window;
            if used >= 1.0 {
                "breached"
            } else if used >= 0.8 {
                "warning"
            } else {
                "ok"
            }
        }
        _ if flags & (SLA_RESPONSE_BREACHED | SLA_ONSITE_BREACHED) != 0 => "breached",
        _ => "ok",
    };
    SlaView {
        response_due: ms_to_rfc3339(t.response_due_ms),
        onsite_due: ms_to_rfc3339(t.onsite_due_ms),
        phase: phase.to_owned(),
        status: status.to_owned(),
        remaining_secs: due.map(|d| (d - now_ms).div_euclid(1000)),
        response_breached: flags & SLA_RESPONSE_BREACHED != 0,
        onsite_breached: flags & SLA_ONSITE_BREACHED != 0,
        escalation_level: t.escalation_level,
    }
}

pub(crate) fn ticket_row(r: &SqliteRow, now_ms: i64) -> Ticket {
    let state = TicketState::parse(&r.get::<String, _>(17)).unwrap_or(TicketState::New);
    let raw = TicketTimes {
        created_at_ms: r.get(28),
        response_due_ms: r.get(30),
        onsite_due_ms: r.get(31),
        responded_at_ms: r.get(32),
        onsite_at_ms: r.get(33),
        sla_flags: r.get(34),
        escalation_level: r.get(35),
        sla_paused_ms: r.get(36),
    };
    Ticket {
        ticket_id: r.get(0),
        tracking_code: r.get(1),
        source: r.get(2),
        title: r.get(3),
        description: r.get(4),
        device_id: r.get(5),
        site_id: r.get(6),
        customer_id: r.get(7),
        region: r.get(8),
        provider_id: r.get(9),
        provider_path: r.get(10),
        escalated_to: r.get(11),
        failure_mode: r.get(12),
        skill: r.get(13),
        parts_needed: json_list(&r.get::<String, _>(14)),
        priority: Priority::parse(&r.get::<String, _>(15)).unwrap_or(Priority::Normal),
        tier: r.get(16),
        state,
        technician_id: r.get(18),
        alert_id: r.get(19),
        evidence: r
            .get::<Option<String>, _>(20)
            .and_then(|e| serde_json::from_str(&e).ok()),
        rul_hours: r.get(21),
        rul_lower_hours: r.get(22),
        rul_upper_hours: r.get(23),
        contact_name: r.get(24),
        contact_phone: r.get(25),
        parent_ticket_id: r.get(26),
        satisfaction: r.get(27),
        created_at: ms_to_rfc3339(r.get(28)),
        updated_at: ms_to_rfc3339(r.get(29)),
        allowed_transitions: state.next().to_vec(),
        sla: sla_view(&raw, state, now_ms),
        raw,
    }
}

/// One audit trail entry.
/// One entry of a ticket's audit trail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuditEntry<'a> {
    pub ticket_id: &'a str,
    pub at_ms: i64,
    pub actor: &'a str,
    /// `created`, `transition`, `sla_warning`, `note`, …
    pub kind: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub note: Option<&'a str>,
}

/// Inserts an audit entry inside a transaction (the caller holds the ticket's row lock).
pub(crate) async fn append_event(conn: &mut SqliteConnection, e: &AuditEntry<'_>) -> Result<()> {
    let AuditEntry {
        ticket_id,
        at_ms,
        actor,
        kind,
        from,
        to,
        note,
    } = *e;
    sqlx::query(
        "INSERT INTO ticket_events (event_id, ticket_id, seq, at_ms, actor, kind, from_state, to_state, note)
         VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) + 1 FROM ticket_events WHERE ticket_id = $2),
                 $3, $4, $5, $6, $7, $8)",
    )
    .bind(new_id("E")?)
    .bind(ticket_id)
    .bind(at_ms)
    .bind(actor)
    .bind(kind)
    .bind(from)
    .bind(to)
    .bind(note)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the ticket's row lock (a version bump) and reads it, inside a transaction.
pub(crate) async fn lock_ticket(
    conn: &mut SqliteConnection,
    ticket_id: &str,
    now_ms: i64,
) -> Result<Ticket> {
    let n = sqlx::query("UPDATE tickets SET version = version + 1 WHERE ticket_id = $1")
        .bind(ticket_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ServiceError::not_found("ticket", ticket_id));
    }
    let r = sqlx::query(&format!(
        "SELECT {TICKET_COLS} {TICKET_FROM} WHERE t.ticket_id = $1"
    ))
    .bind(ticket_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ticket_row(&r, now_ms))
}

/// Moves a locked ticket to `to`: checks legality, keeps timestamps, the open key and
/// reservations consistent, appends the audit entry and queues the webhooks.
pub(crate) async fn apply_transition(
    conn: &mut SqliteConnection,
    ticket: &Ticket,
    to: TicketState,
    actor: &str,
    note: Option<&str>,
    technician_id: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    let from = ticket.state;
    if !from.can_move_to(to) {
        return Err(ServiceError::IllegalTransition {
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            allowed: from.next().iter().map(|s| s.as_str().to_owned()).collect(),
        });
    }
    let technician = match to {
        TicketState::Assigned => {
            let t = technician_id
                .map(str::to_owned)
                .or_else(|| ticket.technician_id.clone())
                .ok_or_else(|| {
                    ServiceError::invalid("technician_id", "assigning needs a technician")
                })?;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT active FROM technicians WHERE technician_id = $1")
                    .bind(&t)
                    .fetch_optional(&mut *conn)
                    .await?;
            if exists.is_none() {
                return Err(ServiceError::unknown("technician_id", "technician", t));
            }
            Some(t)
        }
        TicketState::Triaged | TicketState::Cancelled => None,
        _ => ticket.technician_id.clone(),
    };
    if to == TicketState::Triaged || to == TicketState::Cancelled {
        // Unassigned or cancelled: parts held for it go back on the shelf.
        crate::stock::release_ticket_reservations(conn, &ticket.ticket_id, now_ms).await?;
    }
    if from == TicketState::WaitingParts && to != TicketState::WaitingParts {
        // The SLA clock does not run while the ticket waits for parts: push the open
        // deadlines back by the time it waited.
        let since: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(at_ms) FROM ticket_events WHERE ticket_id = $1 AND to_state = 'waiting_parts'",
        )
        .bind(&ticket.ticket_id)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(since) = since {
            let paused = (now_ms - since).max(0);
            sqlx::query(
                "UPDATE tickets SET
                    response_due_ms = CASE WHEN responded_at_ms IS NULL THEN response_due_ms + $2 ELSE response_due_ms END,
                    onsite_due_ms = CASE WHEN onsite_at_ms IS NULL THEN onsite_due_ms + $2 ELSE onsite_due_ms END,
                    sla_paused_ms = sla_paused_ms + $2
                 WHERE ticket_id = $1",
            )
            .bind(&ticket.ticket_id)
            .bind(paused)
            .execute(&mut *conn)
            .await?;
        }
    }
    let responded = matches!(to, TicketState::Triaged | TicketState::Assigned);
    sqlx::query(
        "UPDATE tickets SET state = $2, technician_id = $3, updated_at_ms = $4,
            responded_at_ms = CASE WHEN $5 = 1 AND responded_at_ms IS NULL THEN $4 ELSE responded_at_ms END,
            onsite_at_ms = CASE WHEN $6 = 1 AND onsite_at_ms IS NULL THEN $4 ELSE onsite_at_ms END,
            resolved_at_ms = CASE WHEN $7 = 1 THEN $4 ELSE resolved_at_ms END,
            closed_at_ms = CASE WHEN $8 = 1 THEN $4 ELSE closed_at_ms END,
            open_key = CASE WHEN $9 = 1 THEN open_key ELSE NULL END
         WHERE ticket_id = $1",
    )
    .bind(&ticket.ticket_id)
    .bind(to.as_str())
    .bind(&technician)
    .bind(now_ms)
    .bind(i64::from(responded))
    .bind(i64::from(to == TicketState::OnSite))
    .bind(i64::from(to == TicketState::Resolved))
    .bind(i64::from(to == TicketState::Closed))
    .bind(i64::from(to.is_open()))
    .execute(&mut *conn)
    .await?;
    append_event(
        conn,
        &AuditEntry {
            ticket_id: &ticket.ticket_id,
            at_ms: now_ms,
            actor,
            kind: "transition",
            from: Some(from.as_str()),
            to: Some(to.as_str()),
            note,
        },
    )
    .await?;
    crate::webhooks::enqueue(
        conn,
        ticket.provider_path.as_deref(),
        "ticket.transition",
        &serde_json::json!({
            "ticket_id": ticket.ticket_id,
            "tracking_code": ticket.tracking_code,
            "from": from.as_str(),
            "to": to.as_str(),
            "technician_id": technician,
            "actor": actor,
            "at": ms_to_rfc3339(now_ms),
        }),
        now_ms,
    )
    .await?;
    Ok(())
}
