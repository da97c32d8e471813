//! SLA policies (response and on-site windows by priority and customer tier) and the timer
//! that warns at 80 % of a window and escalates at breach: priority up one level, the ticket
//! escalated to the provider one level up the hierarchy, both in the audit trail and sent as
//! webhooks.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::{Priority, Result, Service, ServiceError, ms_to_rfc3339};
use crate::auth::{Action, Principal};
use crate::ticket_log::{
    AuditEntry, SLA_ONSITE_BREACHED, SLA_ONSITE_WARNED, SLA_RESPONSE_BREACHED, SLA_RESPONSE_WARNED,
    append_event, lock_ticket,
};

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlaPolicy {
    pub priority: Priority,
    #[schema(
        pattern = "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]",
        max_length = 64
    )]
    pub tier: String,
    #[schema(minimum = 1, maximum = 31536000)]
    pub response_secs: i64,
    #[schema(minimum = 1, maximum = 31536000)]
    pub onsite_secs: i64,
}

/// The built-in windows (standard tier): emergency 1 h / 12 h, major 4 h / 24 h, normal
/// 8 h / 48 h.
pub fn default_policy(priority: Priority) -> (i64, i64) {
    match priority {
        Priority::Emergency => (3600, 12 * 3600),
        Priority::Major => (4 * 3600, 24 * 3600),
        Priority::Normal => (8 * 3600, 48 * 3600),
    }
}

/// What one timer pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SlaTick {
    pub warnings: usize,
    pub breaches: usize,
}

pub(crate) async fn policy_in(
    conn: &mut SqliteConnection,
    priority: Priority,
    tier: &str,
) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "SELECT response_secs, onsite_secs FROM sla_policies WHERE priority = $1 AND tier = $2",
    )
    .bind(priority.as_str())
    .bind(tier)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = row {
        return Ok((r.get(0), r.get(1)));
    }
    if tier != "standard" {
        return Box::pin(policy_in(conn, priority, "standard")).await;
    }
    Ok(default_policy(priority))
}

impl Service {
    pub async fn sla_policy(&self, priority: Priority, tier: &str) -> Result<(i64, i64)> {
        let mut conn = self.pool().acquire().await?;
        policy_in(&mut conn, priority, tier).await
    }

    pub async fn sla_policies(&self, who: &Principal) -> Result<Vec<SlaPolicy>> {
        who.require(Action::ReadTickets)?;
        let rows = sqlx::query(
            "SELECT priority, tier, response_secs, onsite_secs FROM sla_policies ORDER BY tier, priority",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| SlaPolicy {
                priority: Priority::parse(&r.get::<String, _>(0)).unwrap_or(Priority::Normal),
                tier: r.get(1),
                response_secs: r.get(2),
                onsite_secs: r.get(3),
            })
            .collect())
    }

    /// Sets a policy (down to seconds). It applies to tickets created afterwards.
    pub async fn set_sla_policy(&self, who: &Principal, p: &SlaPolicy) -> Result<SlaPolicy> {
        who.require(Action::SlaWrite)?;
        if p.tier.trim().is_empty() {
            return Err(ServiceError::invalid("tier", "must not be empty"));
        }
        if p.response_secs < 1 {
            return Err(ServiceError::invalid("response_secs", "must be ≥ 1"));
        }
        if p.onsite_secs < p.response_secs {
            return Err(ServiceError::invalid(
                "onsite_secs",
                "must be ≥ response_secs",
            ));
        }
        sqlx::query(
            "INSERT INTO sla_policies (priority, tier, response_secs, onsite_secs) VALUES ($1, $2, $3, $4)
             ON CONFLICT (priority, tier) DO UPDATE SET response_secs = excluded.response_secs,
                onsite_secs = excluded.onsite_secs",
        )
        .bind(p.priority.as_str())
        .bind(&p.tier)
        .bind(p.response_secs)
        .bind(p.onsite_secs)
        .execute(self.pool())
        .await?;
        Ok(p.clone())
    }

    /// One pass of the SLA timer at the clock's now.
    pub async fn sla_tick(&self) -> Result<SlaTick> {
        let now = self.now_ms();
        // Candidates: open tickets past 80 % of a window that is still running. A ticket
        // waiting for parts has its clock stopped (its deadlines move back when it resumes).
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT ticket_id FROM tickets
             WHERE state NOT IN ('resolved', 'closed', 'cancelled', 'waiting_parts')
               AND ((responded_at_ms IS NULL AND response_due_ms - (response_due_ms - created_at_ms - sla_paused_ms) / 5 <= $1)
                 OR (onsite_at_ms IS NULL AND onsite_due_ms - (onsite_due_ms - created_at_ms - sla_paused_ms) / 5 <= $1))
             ORDER BY ticket_id",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        let mut out = SlaTick::default();
        for id in ids {
            let (w, b) = self.sla_check_one(&id, now).await?;
            out.warnings += w;
            out.breaches += b;
        }
        Ok(out)
    }

    async fn sla_check_one(&self, id: &str, now: i64) -> Result<(usize, usize)> {
        let mut tx = self.begin_write().await?;
        let t = lock_ticket(&mut tx, id, now).await?;
        if !t.state.is_open() {
            return Ok((0, 0));
        }
        let r = t.raw;
        let used =
            |due: i64| (now - r.created_at_ms) as f64 / ((due - r.created_at_ms).max(1) as f64);
        let mut flags = r.sla_flags;
        let mut warnings = 0;
        let mut breaches = Vec::new();
        let phases = [
            (
                "response",
                r.responded_at_ms.is_none(),
                r.response_due_ms,
                SLA_RESPONSE_WARNED,
                SLA_RESPONSE_BREACHED,
            ),
            (
                "on-site",
                r.onsite_at_ms.is_none(),
                r.onsite_due_ms,
                SLA_ONSITE_WARNED,
                SLA_ONSITE_BREACHED,
            ),
        ];
        for (name, running, due, warn_bit, breach_bit) in phases {
            if !running {
                continue;
            }
            let u = used(due);
            if u >= 1.0 && flags & breach_bit == 0 {
                flags |= breach_bit | warn_bit;
                breaches.push((name, due));
            } else if u >= 0.8 && flags & warn_bit == 0 {
                flags |= warn_bit;
                warnings += 1;
                append_event(
                    &mut tx,
                    &AuditEntry {
                        ticket_id: id,
                        at_ms: now,
                        actor: "system:sla",
                        kind: "sla_warning",
                        from: None,
                        to: None,
                        note: Some(&format!(
                            "{name} window 80 % used; due {}",
                            ms_to_rfc3339(due)
                        )),
                    },
                )
                .await?;
                super::webhooks::enqueue(
                    &mut tx,
                    t.provider_path.as_deref(),
                    "ticket.sla_warning",
                    &serde_json::json!({"ticket_id": id, "phase": name, "due": ms_to_rfc3339(due)}),
                    now,
                )
                .await?;
            }
        }
        let mut priority = t.priority;
        let mut escalated_to = t.escalated_to.clone();
        let mut level = r.escalation_level;
        for (name, due) in &breaches {
            let raised = priority.raised();
            // One level up from whoever holds the ticket now.
            let holder = escalated_to.clone().or_else(|| t.provider_id.clone());
            let parent: Option<String> = match &holder {
                Some(h) => sqlx::query_scalar::<_, Option<String>>(
                    "SELECT parent_id FROM providers WHERE provider_id = $1",
                )
                .bind(h)
                .fetch_optional(&mut *tx)
                .await?
                .flatten(),
                None => None,
            };
            level += 1;
            if parent.is_some() {
                escalated_to = parent.clone();
            }
            append_event(
                &mut tx,
                &AuditEntry {
                    ticket_id: id,
                    at_ms: now,
                    actor: "system:sla",
                    kind: "sla_breach",
                    from: None,
                    to: None,
                    note: Some(&format!(
                        "{name} window breached (due {}); priority {} → {}",
                        ms_to_rfc3339(*due),
                        priority.as_str(),
                        raised.as_str()
                    )),
                },
            )
            .await?;
            append_event(
                &mut tx,
                &AuditEntry {
                    ticket_id: id,
                    at_ms: now,
                    actor: "system:sla",
                    kind: "escalation",
                    from: None,
                    to: None,
                    note: Some(&match &parent {
                        Some(p) => format!("escalated to provider {p} (level {level})"),
                        None => format!("escalation level {level}: no provider above"),
                    }),
                },
            )
            .await?;
            super::webhooks::enqueue(
                &mut tx,
                t.provider_path.as_deref(),
                "ticket.sla_breached",
                &serde_json::json!({
                    "ticket_id": id, "phase": name, "due": ms_to_rfc3339(*due),
                    "priority": raised.as_str(), "escalated_to": parent,
                    "escalation_level": level,
                }),
                now,
            )
            .await?;
            priority = raised;
        }
        sqlx::query(
            "UPDATE tickets SET sla_flags = $2, priority = $3, escalated_to = $4,
                escalation_level = $5, updated_at_ms = CASE WHEN $6 = 1 THEN $7 ELSE updated_at_ms END
             WHERE ticket_id = $1",
        )
        .bind(id)
        .bind(flags)
        .bind(priority.as_str())
        .bind(&escalated_to)
        .bind(level)
        .bind(i64::from(flags != r.sla_flags))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((warnings, breaches.len()))
    }
}
