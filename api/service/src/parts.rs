//! The parts network as the service offers it: reserving for a ticket, transfers from the
//! nearest location with stock, reorder points and pre-positioning (the stock primitives
//! are in `stock`).

use sqlx::Row;

use super::auth::{Action, Principal, within};
use crate::network::{LOCATION_OWNER, LocationAccess, LocationKind, MAX_QUANTITY};
use crate::stock::*;
pub use crate::stock::{
    PartPlan, Preposition, ReorderLine, Reservation, ReserveRequest, Transfer, transfer_eta_hours,
};
use crate::ticket_log::{AuditEntry, TicketState, append_event, apply_transition, lock_ticket};
use crate::{Result, Service, ServiceError, haversine_km, ms_to_rfc3339};

impl Service {
    /// Reserves stock; `InsufficientStock` when short (nothing is written then). A provider
    /// (or technician) holds stock only at its own locations, and for a ticket it sees also
    /// at the shared central stock — never on another provider's shelves.
    pub async fn reserve(&self, who: &Principal, req: &ReserveRequest) -> Result<Reservation> {
        who.require(Action::Parts)?;
        if !(1..=MAX_QUANTITY).contains(&req.quantity) {
            return Err(ServiceError::invalid(
                "quantity",
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        match &req.ticket_id {
            // Visibility first: another provider's ticket is "not found".
            Some(t) => {
                self.ticket(who, t).await?;
                self.require_location(who, &req.location_id, true).await?;
            }
            // Stock held for no ticket: only at the caller's own locations.
            None => self.require_location(who, &req.location_id, false).await?,
        }
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        if !try_reserve(&mut tx, &req.sku, &req.location_id, req.quantity).await? {
            drop(tx);
            let level = self.stock_level(&req.location_id, &req.sku).await;
            return Err(match level {
                Ok(l) => ServiceError::InsufficientStock {
                    sku: req.sku.clone(),
                    location_id: req.location_id.clone(),
                    requested: req.quantity,
                    available: l.available,
                },
                Err(_) => {
                    self.part(&req.sku).await?;
                    self.location(&req.location_id).await?;
                    ServiceError::InsufficientStock {
                        sku: req.sku.clone(),
                        location_id: req.location_id.clone(),
                        requested: req.quantity,
                        available: 0,
                    }
                }
            });
        }
        let id = insert_reservation(
            &mut tx,
            req.ticket_id.as_deref(),
            &req.sku,
            &req.location_id,
            req.quantity,
            now,
        )
        .await?;
        if let Some(t) = &req.ticket_id {
            lock_ticket(&mut tx, t, now).await?;
            append_event(
                &mut tx,
                &AuditEntry {
                    ticket_id: t,
                    at_ms: now,
                    actor: &who.actor(),
                    kind: "parts",
                    from: None,
                    to: None,
                    note: Some(&format!(
                        "reserved {} × {} at {}",
                        req.quantity, req.sku, req.location_id
                    )),
                },
            )
            .await?;
        }
        tx.commit().await?;
        self.reservation(&id).await
    }

    pub async fn reservation(&self, id: &str) -> Result<Reservation> {
        sqlx::query(&format!(
            "SELECT {RES_COLS} FROM reservations WHERE reservation_id = $1"
        ))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .map(|r| reservation_row(&r))
        .ok_or_else(|| ServiceError::not_found("reservation", id))
    }

    /// The reservations of a ticket the caller sees.
    pub async fn ticket_reservations(
        &self,
        who: &Principal,
        ticket_id: &str,
    ) -> Result<Vec<Reservation>> {
        self.ticket(who, ticket_id).await?;
        self.reservations_of(ticket_id).await
    }

    pub async fn reservations_of(&self, ticket_id: &str) -> Result<Vec<Reservation>> {
        let rows = sqlx::query(&format!(
            "SELECT {RES_COLS} FROM reservations WHERE ticket_id = $1 ORDER BY created_at_ms, reservation_id"
        ))
        .bind(ticket_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(reservation_row).collect())
    }

    /// Releases (`consume = false`) or consumes an active reservation.
    pub async fn finish_reservation(
        &self,
        who: &Principal,
        id: &str,
        consume: bool,
    ) -> Result<Reservation> {
        who.require(Action::Parts)?;
        let r = self.reservation(id).await?;
        match &r.ticket_id {
            Some(t) => {
                self.ticket(who, t).await.map_err(|e| match e {
                    // Another provider's reservation is absent, not another ticket.
                    ServiceError::NotFound { .. } => ServiceError::not_found("reservation", id),
                    e => e,
                })?;
                self.require_location(who, &r.location_id, true).await?;
            }
            None => self.require_location(who, &r.location_id, false).await?,
        }
        let mut tx = self.begin_write().await?;
        if !finish_reservation(&mut tx, id, consume, self.now_ms()).await? {
            return Err(ServiceError::Conflict(format!(
                "reservation {id} is {}, not active",
                r.state
            )));
        }
        tx.commit().await?;
        self.reservation(id).await
    }

    /// Transfers the caller takes part in: to or from one of its own locations (a provider:
    /// its subtree's, a technician: its van); the OEM side sees all.
    pub async fn transfers(
        &self,
        who: &Principal,
        ticket_id: Option<&str>,
    ) -> Result<Vec<Transfer>> {
        who.require(Action::Parts)?;
        // A location is the caller's when its owner lies in the provider subtree ($2) and,
        // for a technician ($3), it is that technician's van.
        let mine = |alias: &str| {
            format!(
                "EXISTS (SELECT 1 FROM stock_locations l {LOCATION_OWNER}
                   WHERE l.location_id = x.{alias} AND {}
                     AND ($3 IS NULL OR l.technician_id = $3))",
                within("p.path", "$2")
            )
        };
        let restricted = who.scope().is_some() || who.technician().is_some();
        let rows = sqlx::query(&format!(
            "SELECT x.transfer_id, x.sku, x.from_location_id, x.to_location_id, x.quantity,
                    x.ticket_id, x.state, x.eta_ms
             FROM transfers x
             WHERE ($1 IS NULL OR x.ticket_id = $1)
               AND ($4 = 0 OR {} OR {})
             ORDER BY x.created_at_ms, x.transfer_id",
            mine("from_location_id"),
            mine("to_location_id")
        ))
        .bind(ticket_id)
        .bind(who.scope())
        .bind(who.technician())
        .bind(i64::from(restricted))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Transfer {
                transfer_id: r.get(0),
                sku: r.get(1),
                from_location_id: r.get(2),
                to_location_id: r.get(3),
                quantity: r.get(4),
                ticket_id: r.get(5),
                state: r.get(6),
                eta: ms_to_rfc3339(r.get(7)),
                eta_ms: r.get(7),
            })
            .collect())
    }

    /// A transfer arrived: stock moves from source to destination, the reservation follows the
    /// goods, and a ticket waiting only for these parts goes back to `assigned`. Only the
    /// receiving side (the owner of the destination) or the OEM side confirms an arrival.
    pub async fn receive_transfer(&self, who: &Principal, transfer_id: &str) -> Result<Transfer> {
        who.require(Action::Parts)?;
        let destination: Option<String> =
            sqlx::query_scalar("SELECT to_location_id FROM transfers WHERE transfer_id = $1")
                .bind(transfer_id)
                .fetch_optional(self.pool())
                .await?;
        let Some(destination) = destination else {
            return Err(ServiceError::not_found("transfer", transfer_id));
        };
        if self.location_access(who, &destination).await? != LocationAccess::Own {
            // Someone else's goods: absent, like another provider's ticket.
            return Err(ServiceError::not_found("transfer", transfer_id));
        }
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE transfers SET state = 'received', received_at_ms = $2
             WHERE transfer_id = $1 AND state = 'in_transit'
             RETURNING sku, from_location_id, to_location_id, quantity, ticket_id, reservation_id",
        )
        .bind(transfer_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(r) = row else {
            drop(tx);
            let known = self
                .transfers(&Principal::system("service"), None)
                .await?
                .into_iter()
                .any(|t| t.transfer_id == transfer_id);
            return Err(if known {
                ServiceError::Conflict(format!("transfer {transfer_id} was already received"))
            } else {
                ServiceError::not_found("transfer", transfer_id)
            });
        };
        let (sku, _from, to, q, ticket, reservation): (
            String,
            String,
            String,
            i64,
            Option<String>,
            Option<String>,
        ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        if let Some(res) = &reservation {
            finish_reservation(&mut tx, res, true, now).await?;
        }
        sqlx::query(
            "INSERT INTO stock (location_id, sku, on_hand, reserved, reorder_point) VALUES ($1, $2, $3, 0, 0)
             ON CONFLICT (location_id, sku) DO UPDATE SET on_hand = stock.on_hand + excluded.on_hand",
        )
        .bind(&to)
        .bind(&sku)
        .bind(q)
        .execute(&mut *tx)
        .await?;
        if let Some(ticket_id) = &ticket {
            let held = try_reserve(&mut tx, &sku, &to, q).await?;
            if held {
                insert_reservation(&mut tx, Some(ticket_id), &sku, &to, q, now).await?;
            }
            let t = lock_ticket(&mut tx, ticket_id, now).await?;
            append_event(
                &mut tx,
                &AuditEntry {
                    ticket_id,
                    at_ms: now,
                    actor: &who.actor(),
                    kind: "parts",
                    from: None,
                    to: None,
                    note: Some(&format!(
                        "transfer {transfer_id}: {q} × {sku} arrived at {to}"
                    )),
                },
            )
            .await?;
            let pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM transfers WHERE ticket_id = $1 AND state = 'in_transit'",
            )
            .bind(ticket_id)
            .fetch_one(&mut *tx)
            .await?;
            if t.state == TicketState::WaitingParts && pending == 0 {
                let next = if t.technician_id.is_some() {
                    TicketState::Assigned
                } else {
                    TicketState::Triaged
                };
                apply_transition(
                    &mut tx,
                    &t,
                    next,
                    &who.actor(),
                    Some("all parts arrived"),
                    None,
                    now,
                )
                .await?;
            }
        }
        tx.commit().await?;
        self.transfers(&Principal::system("service"), None)
            .await?
            .into_iter()
            .find(|t| t.transfer_id == transfer_id)
            .ok_or_else(|| ServiceError::not_found("transfer", transfer_id))
    }

    /// Stock at or below its reorder point, with the quantity to order (by ABC class), at the
    /// caller's own locations (everywhere for the OEM side).
    pub async fn reorder_report(&self, who: &Principal) -> Result<Vec<ReorderLine>> {
        who.require(Action::Parts)?;
        let rows = sqlx::query(&format!(
            "SELECT s.location_id, s.sku, k.abc_class, s.on_hand - s.reserved, s.reorder_point
             FROM stock s JOIN parts k ON k.sku = s.sku
             JOIN stock_locations l ON l.location_id = s.location_id {LOCATION_OWNER}
             WHERE s.reorder_point > 0 AND s.on_hand - s.reserved <= s.reorder_point
               AND {} AND ($2 IS NULL OR l.technician_id = $2)
             ORDER BY k.abc_class, s.location_id, s.sku",
            within("p.path", "$1")
        ))
        .bind(who.scope())
        .bind(who.technician())
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let abc: String = r.get(2);
                let available: i64 = r.get(3);
                let rop: i64 = r.get(4);
                // Saturating: a row written before reorder points were bounded must not
                // overflow.
                let target = match abc.as_str() {
                    "A" => rop.saturating_add(rop / 2),
                    "B" => rop.saturating_mul(2),
                    _ => rop.saturating_mul(3),
                }
                .max(rop.saturating_add(1));
                ReorderLine {
                    location_id: r.get(0),
                    sku: r.get(1),
                    abc_class: abc,
                    available,
                    reorder_point: rop,
                    order_quantity: target.saturating_sub(available),
                }
            })
            .collect())
    }

    /// Where to move parts before predicted failures arrive: open predictive tickets whose
    /// parts are not yet held, grouped by the stocking location nearest their site; where that
    /// location's free stock is short of the demand, a transfer from the nearest location with
    /// surplus (above its reorder point), earliest need first. `horizon_hours` limits the RUL
    /// considered. A provider plans for the tickets it sees, into its own locations, from its
    /// own or the shared central stock.
    pub async fn preposition_proposals(
        &self,
        who: &Principal,
        horizon_hours: f64,
    ) -> Result<Vec<Preposition>> {
        who.require(Action::Parts)?;
        let now = self.now_ms();
        let rows = sqlx::query(&format!(
            "SELECT t.ticket_id, t.parts_needed, COALESCE(t.rul_lower_hours, t.rul_hours), s.lat, s.lon
             FROM tickets t JOIN sites s ON s.site_id = t.site_id
             LEFT JOIN providers p ON p.provider_id = t.provider_id
             WHERE t.source = 'predictive' AND t.state IN ('new', 'triaged')
               AND COALESCE(t.rul_lower_hours, t.rul_hours) IS NOT NULL
               AND COALESCE(t.rul_lower_hours, t.rul_hours) <= $1
               AND {} AND ($3 IS NULL OR t.technician_id = $3)
             ORDER BY 3",
            within("p.path", "$2")
        ))
        .bind(horizon_hours)
        .bind(who.scope())
        .bind(who.technician())
        .fetch_all(self.pool())
        .await?;
        let locations: Vec<_> = self
            .locations_in(who)
            .await?
            .into_iter()
            .filter(|l| l.kind != "van")
            .collect();
        // (location, sku) -> (demand, earliest need, tickets)
        let mut demand: std::collections::BTreeMap<(String, String), (i64, i64, Vec<String>)> =
            Default::default();
        for r in &rows {
            let ticket_id: String = r.get(0);
            let parts = super::json_list(&r.get::<String, _>(1));
            let rul: f64 = r.get(2);
            let (lat, lon): (f64, f64) = (r.get(3), r.get(4));
            let Some(near) = locations.iter().min_by(|a, b| {
                haversine_km(a.lat, a.lon, lat, lon)
                    .total_cmp(&haversine_km(b.lat, b.lon, lat, lon))
            }) else {
                continue;
            };
            let need_ms = now.saturating_add((rul * 3_600_000.0) as i64);
            for sku in parts {
                let e = demand.entry((near.location_id.clone(), sku)).or_insert((
                    0,
                    i64::MAX,
                    Vec::new(),
                ));
                e.0 += 1;
                e.1 = e.1.min(need_ms);
                e.2.push(ticket_id.clone());
            }
        }
        let mut out = Vec::new();
        let mut conn = self.pool().acquire().await?;
        for ((loc, sku), (qty, need_ms, tickets)) in demand {
            let available: i64 = sqlx::query_scalar(
                "SELECT on_hand - reserved FROM stock WHERE location_id = $1 AND sku = $2",
            )
            .bind(&loc)
            .bind(&sku)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(0);
            let short = qty - available;
            if short <= 0 {
                continue;
            }
            let Some(target) = locations.iter().find(|l| l.location_id == loc) else {
                continue;
            };
            // The nearest location with stock above its reorder point that the caller may
            // draw from.
            let sources = sqlx::query(&format!(
                "SELECT l.location_id, l.kind, l.lat, l.lon, s.on_hand - s.reserved - s.reorder_point
                 FROM stock s JOIN stock_locations l ON l.location_id = s.location_id
                 {LOCATION_OWNER}
                 WHERE s.sku = $1 AND l.kind <> 'van' AND l.location_id <> $2
                   AND s.on_hand - s.reserved - s.reorder_point > 0
                   AND (p.path IS NULL OR {})",
                within("p.path", "$3")
            ))
            .bind(&sku)
            .bind(&loc)
            .bind(who.scope())
            .fetch_all(&mut *conn)
            .await?;
            let best = sources
                .iter()
                .map(|r| {
                    let kind = LocationKind::parse(&r.get::<String, _>(1))
                        .unwrap_or(LocationKind::Central);
                    let km = haversine_km(r.get(2), r.get(3), target.lat, target.lon);
                    (
                        r.get::<String, _>(0),
                        transfer_eta_hours(kind, km),
                        r.get::<i64, _>(4),
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            out.push(Preposition {
                sku,
                to_location_id: loc,
                from_location_id: best.as_ref().map(|b| b.0.clone()),
                quantity: best.as_ref().map(|b| short.min(b.2)).unwrap_or(short),
                needed_by: ms_to_rfc3339(need_ms),
                eta: best.map(|b| ms_to_rfc3339(now.saturating_add((b.1 * 3_600_000.0) as i64))),
                tickets,
            });
        }
        out.sort_by(|a, b| a.needed_by.cmp(&b.needed_by));
        Ok(out)
    }
}
