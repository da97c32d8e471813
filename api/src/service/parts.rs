//! The parts network: reservations that cannot oversell (one conditional UPDATE is the whole
//! check: `reserved + q` only where `on_hand - reserved >= q`), release and consumption,
//! transfers from the nearest location with stock, reorder points and pre-positioning.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use super::auth::{Action, Principal};
use super::registry::LocationKind;
use super::tickets::{TicketState, append_event, apply_transition, lock_ticket};
use super::{Result, Service, ServiceError, TRAVEL_KMH, haversine_km, ms_to_rfc3339, new_id};

#[derive(Debug, Clone, Deserialize)]
pub struct ReserveRequest {
    pub sku: String,
    pub location_id: String,
    pub quantity: i64,
    pub ticket_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reservation {
    pub reservation_id: String,
    pub ticket_id: Option<String>,
    pub sku: String,
    pub location_id: String,
    pub quantity: i64,
    /// `active`, `released` or `consumed`.
    pub state: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Transfer {
    pub transfer_id: String,
    pub sku: String,
    pub from_location_id: String,
    pub to_location_id: String,
    pub quantity: i64,
    pub ticket_id: Option<String>,
    /// `in_transit` or `received`.
    pub state: String,
    pub eta: String,
    pub eta_ms: i64,
}

/// How a ticket's parts were secured when it was assigned.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PartPlan {
    pub sku: String,
    /// `van`, `transfer` (on its way from `location_id`), `reserved` (already held) or
    /// `unavailable` (nowhere in the network).
    pub source: String,
    pub location_id: Option<String>,
    pub eta: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReorderLine {
    pub location_id: String,
    pub sku: String,
    pub abc_class: String,
    pub available: i64,
    pub reorder_point: i64,
    /// Order up to the target level (A ×1.5, B ×2, C ×3 the reorder point, at least +1).
    pub order_quantity: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Preposition {
    pub sku: String,
    pub to_location_id: String,
    pub from_location_id: Option<String>,
    pub quantity: i64,
    /// When the earliest predicted failure needing it is due (now + pessimistic RUL).
    pub needed_by: String,
    pub eta: Option<String>,
    pub tickets: Vec<String>,
}

fn reservation_row(r: &sqlx::sqlite::SqliteRow) -> Reservation {
    Reservation {
        reservation_id: r.get(0),
        ticket_id: r.get(1),
        sku: r.get(2),
        location_id: r.get(3),
        quantity: r.get(4),
        state: r.get(5),
        created_at: ms_to_rfc3339(r.get(6)),
    }
}

const RES_COLS: &str =
    "reservation_id, ticket_id, sku, location_id, quantity, state, created_at_ms";

/// The atomic reservation: true when `quantity` was available and is now held.
pub(crate) async fn try_reserve(
    conn: &mut SqliteConnection,
    sku: &str,
    location_id: &str,
    quantity: i64,
) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE stock SET reserved = reserved + $3
         WHERE location_id = $1 AND sku = $2 AND on_hand - reserved >= $3",
    )
    .bind(location_id)
    .bind(sku)
    .bind(quantity)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

pub(crate) async fn insert_reservation(
    conn: &mut SqliteConnection,
    ticket_id: Option<&str>,
    sku: &str,
    location_id: &str,
    quantity: i64,
    now_ms: i64,
) -> Result<String> {
    let id = new_id("R")?;
    sqlx::query(
        "INSERT INTO reservations (reservation_id, ticket_id, sku, location_id, quantity, state,
            created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, 'active', $6, $6)",
    )
    .bind(&id)
    .bind(ticket_id)
    .bind(sku)
    .bind(location_id)
    .bind(quantity)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Ends an active reservation: `released` puts it back, `consumed` takes it off the shelf.
async fn finish_reservation(
    conn: &mut SqliteConnection,
    reservation_id: &str,
    consume: bool,
    now_ms: i64,
) -> Result<bool> {
    let row = sqlx::query(
        "UPDATE reservations SET state = $2, updated_at_ms = $3
         WHERE reservation_id = $1 AND state = 'active'
         RETURNING sku, location_id, quantity",
    )
    .bind(reservation_id)
    .bind(if consume { "consumed" } else { "released" })
    .bind(now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else {
        return Ok(false);
    };
    let (sku, location, q): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
    sqlx::query(
        "UPDATE stock SET reserved = reserved - $3, on_hand = on_hand - $4
         WHERE location_id = $1 AND sku = $2",
    )
    .bind(&location)
    .bind(&sku)
    .bind(q)
    .bind(if consume { q } else { 0 })
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

pub(crate) async fn release_ticket_reservations(
    conn: &mut SqliteConnection,
    ticket_id: &str,
    now_ms: i64,
) -> Result<()> {
    // Reservations backing a transfer in flight stay: the goods are on the road.
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT reservation_id FROM reservations r WHERE r.ticket_id = $1 AND r.state = 'active'
           AND NOT EXISTS (SELECT 1 FROM transfers x WHERE x.reservation_id = r.reservation_id
                           AND x.state = 'in_transit')",
    )
    .bind(ticket_id)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        finish_reservation(conn, &id, false, now_ms).await?;
    }
    Ok(())
}

/// Takes `quantity` of `sku` used on a ticket off the shelf: first from its reservations,
/// then from the assigned technician's van.
pub(crate) async fn consume_for_ticket(
    conn: &mut SqliteConnection,
    ticket_id: &str,
    sku: &str,
    quantity: i64,
    now_ms: i64,
) -> Result<()> {
    let rows = sqlx::query(
        "SELECT reservation_id, quantity FROM reservations
         WHERE ticket_id = $1 AND sku = $2 AND state = 'active'
           AND NOT EXISTS (SELECT 1 FROM transfers x WHERE x.reservation_id = reservations.reservation_id
                           AND x.state = 'in_transit')
         ORDER BY created_at_ms",
    )
    .bind(ticket_id)
    .bind(sku)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = quantity;
    for r in rows {
        if left <= 0 {
            break;
        }
        let (id, q): (String, i64) = (r.get(0), r.get(1));
        finish_reservation(conn, &id, true, now_ms).await?;
        left -= q;
    }
    if left > 0 {
        let van: Option<String> = sqlx::query_scalar(
            "SELECT l.location_id FROM tickets t JOIN stock_locations l ON l.technician_id = t.technician_id
             WHERE t.ticket_id = $1",
        )
        .bind(ticket_id)
        .fetch_optional(&mut *conn)
        .await?;
        let taken = match &van {
            Some(van) => {
                sqlx::query(
                    "UPDATE stock SET on_hand = on_hand - $3
                     WHERE location_id = $1 AND sku = $2 AND on_hand - reserved >= $3",
                )
                .bind(van)
                .bind(sku)
                .bind(left)
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 1
            }
            None => false,
        };
        if !taken {
            return Err(ServiceError::Conflict(format!(
                "{left} × {sku} were neither reserved for the ticket nor in the technician's van"
            )));
        }
    }
    Ok(())
}

/// The nearest non-van location with `quantity` of `sku` available, and the transfer ETA to
/// (lat, lon) in hours.
pub(crate) async fn nearest_source(
    conn: &mut SqliteConnection,
    sku: &str,
    quantity: i64,
    lat: f64,
    lon: f64,
    exclude: Option<&str>,
) -> Result<Option<(String, f64)>> {
    let rows = sqlx::query(
        "SELECT l.location_id, l.kind, l.lat, l.lon FROM stock s
         JOIN stock_locations l ON l.location_id = s.location_id
         WHERE s.sku = $1 AND s.on_hand - s.reserved >= $2 AND l.kind <> 'van'
           AND ($3 IS NULL OR l.location_id <> $3)",
    )
    .bind(sku)
    .bind(quantity)
    .bind(exclude)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let kind = LocationKind::parse(&r.get::<String, _>(1)).unwrap_or(LocationKind::Central);
            let km = haversine_km(r.get(2), r.get(3), lat, lon);
            (r.get::<String, _>(0), transfer_eta_hours(kind, km))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0))))
}

pub fn transfer_eta_hours(from: LocationKind, km: f64) -> f64 {
    from.handling_hours() + km / TRAVEL_KMH
}

/// Starts a transfer: the goods are reserved at the source now and arrive at `to` at the ETA.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_transfer(
    conn: &mut SqliteConnection,
    sku: &str,
    from: &str,
    to: &str,
    quantity: i64,
    ticket_id: Option<&str>,
    eta_ms: i64,
    now_ms: i64,
) -> Result<Option<Transfer>> {
    if !try_reserve(conn, sku, from, quantity).await? {
        return Ok(None);
    }
    let reservation = insert_reservation(conn, ticket_id, sku, from, quantity, now_ms).await?;
    let id = new_id("X")?;
    sqlx::query(
        "INSERT INTO transfers (transfer_id, sku, from_location_id, to_location_id, quantity,
            ticket_id, reservation_id, state, eta_ms, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'in_transit', $8, $9)",
    )
    .bind(&id)
    .bind(sku)
    .bind(from)
    .bind(to)
    .bind(quantity)
    .bind(ticket_id)
    .bind(&reservation)
    .bind(eta_ms)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Some(Transfer {
        transfer_id: id,
        sku: sku.to_owned(),
        from_location_id: from.to_owned(),
        to_location_id: to.to_owned(),
        quantity,
        ticket_id: ticket_id.map(str::to_owned),
        state: "in_transit".into(),
        eta: ms_to_rfc3339(eta_ms),
        eta_ms,
    }))
}

/// Secures the parts a freshly assigned ticket needs: from the technician's van when there,
/// otherwise by a transfer from the nearest location with stock (the ticket then waits for
/// parts). SKUs already held for the ticket are skipped. Returns the plan and whether the
/// ticket must wait.
pub(crate) async fn secure_parts(
    conn: &mut SqliteConnection,
    ticket_id: &str,
    parts: &[String],
    technician_id: &str,
    site: Option<(f64, f64)>,
    now_ms: i64,
) -> Result<(Vec<PartPlan>, bool)> {
    let van: Option<(String, f64, f64)> =
        sqlx::query("SELECT location_id, lat, lon FROM stock_locations WHERE technician_id = $1")
            .bind(technician_id)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| (r.get(0), r.get(1), r.get(2)));
    let mut plan = Vec::new();
    let mut wait = false;
    for sku in parts {
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM reservations WHERE ticket_id = $1 AND sku = $2 AND state = 'active'",
        )
        .bind(ticket_id)
        .bind(sku)
        .fetch_one(&mut *conn)
        .await?;
        if held > 0 {
            plan.push(PartPlan {
                sku: sku.clone(),
                source: "reserved".into(),
                location_id: None,
                eta: None,
            });
            continue;
        }
        if let Some((van_id, _, _)) = &van
            && try_reserve(conn, sku, van_id, 1).await?
        {
            insert_reservation(conn, Some(ticket_id), sku, van_id, 1, now_ms).await?;
            plan.push(PartPlan {
                sku: sku.clone(),
                source: "van".into(),
                location_id: Some(van_id.clone()),
                eta: None,
            });
            continue;
        }
        // Deliver to the van (or the site when the technician has none).
        let (dest, lat, lon) = match (&van, site) {
            (Some((v, lat, lon)), _) => (v.clone(), *lat, *lon),
            (None, Some((lat, lon))) => (String::new(), lat, lon),
            (None, None) => (String::new(), 0.0, 0.0),
        };
        let source = if dest.is_empty() {
            None
        } else {
            nearest_source(conn, sku, 1, lat, lon, Some(&dest)).await?
        };
        let transfer = match source {
            Some((from, eta_h)) => {
                let eta_ms = now_ms + (eta_h * 3_600_000.0) as i64;
                start_transfer(conn, sku, &from, &dest, 1, Some(ticket_id), eta_ms, now_ms).await?
            }
            None => None,
        };
        wait = true;
        plan.push(match transfer {
            Some(t) => PartPlan {
                sku: sku.clone(),
                source: "transfer".into(),
                location_id: Some(t.from_location_id),
                eta: Some(t.eta),
            },
            None => PartPlan {
                sku: sku.clone(),
                source: "unavailable".into(),
                location_id: None,
                eta: None,
            },
        });
    }
    Ok((plan, wait))
}

impl Service {
    /// Reserves stock; `InsufficientStock` when short (nothing is written then).
    pub async fn reserve(&self, who: &Principal, req: &ReserveRequest) -> Result<Reservation> {
        who.require(Action::Parts)?;
        if req.quantity < 1 {
            return Err(ServiceError::invalid("quantity", "must be ≥ 1"));
        }
        match &req.ticket_id {
            // Visibility first: another provider's ticket is "not found".
            Some(t) => {
                self.ticket(who, t).await?;
            }
            // Stock held for no ticket: a provider key only at its own subtree's locations.
            None => {
                self.require_location_in_scope(who, &req.location_id)
                    .await?
            }
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
                t,
                now,
                &who.actor(),
                "parts",
                None,
                None,
                Some(&format!(
                    "reserved {} × {} at {}",
                    req.quantity, req.sku, req.location_id
                )),
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
                self.ticket(who, t).await?;
            }
            None => self.require_location_in_scope(who, &r.location_id).await?,
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

    pub async fn transfers(&self, ticket_id: Option<&str>) -> Result<Vec<Transfer>> {
        let rows = sqlx::query(
            "SELECT transfer_id, sku, from_location_id, to_location_id, quantity, ticket_id, state, eta_ms
             FROM transfers WHERE ($1 IS NULL OR ticket_id = $1) ORDER BY created_at_ms, transfer_id",
        )
        .bind(ticket_id)
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
    /// goods, and a ticket waiting only for these parts goes back to `assigned`.
    pub async fn receive_transfer(&self, who: &Principal, transfer_id: &str) -> Result<Transfer> {
        who.require(Action::Parts)?;
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
                .transfers(None)
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
                ticket_id,
                now,
                &who.actor(),
                "parts",
                None,
                None,
                Some(&format!(
                    "transfer {transfer_id}: {q} × {sku} arrived at {to}"
                )),
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
        self.transfers(None)
            .await?
            .into_iter()
            .find(|t| t.transfer_id == transfer_id)
            .ok_or_else(|| ServiceError::not_found("transfer", transfer_id))
    }

    /// Stock at or below its reorder point, with the quantity to order (by ABC class).
    pub async fn reorder_report(&self) -> Result<Vec<ReorderLine>> {
        let rows = sqlx::query(
            "SELECT s.location_id, s.sku, p.abc_class, s.on_hand - s.reserved, s.reorder_point
             FROM stock s JOIN parts p ON p.sku = s.sku
             WHERE s.reorder_point > 0 AND s.on_hand - s.reserved <= s.reorder_point
             ORDER BY p.abc_class, s.location_id, s.sku",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let abc: String = r.get(2);
                let available: i64 = r.get(3);
                let rop: i64 = r.get(4);
                let target = match abc.as_str() {
                    "A" => rop + rop / 2,
                    "B" => rop * 2,
                    _ => rop * 3,
                }
                .max(rop + 1);
                ReorderLine {
                    location_id: r.get(0),
                    sku: r.get(1),
                    abc_class: abc,
                    available,
                    reorder_point: rop,
                    order_quantity: target - available,
                }
            })
            .collect())
    }

    /// Where to move parts before predicted failures arrive: open predictive tickets whose
    /// parts are not yet held, grouped by the stocking location nearest their site; where that
    /// location's free stock is short of the demand, a transfer from the nearest location with
    /// surplus (above its reorder point), earliest need first. `horizon_hours` limits the RUL
    /// considered.
    pub async fn preposition_proposals(&self, horizon_hours: f64) -> Result<Vec<Preposition>> {
        let now = self.now_ms();
        let rows = sqlx::query(
            "SELECT t.ticket_id, t.parts_needed, COALESCE(t.rul_lower_hours, t.rul_hours), s.lat, s.lon
             FROM tickets t JOIN sites s ON s.site_id = t.site_id
             WHERE t.source = 'predictive' AND t.state IN ('new', 'triaged')
               AND COALESCE(t.rul_lower_hours, t.rul_hours) IS NOT NULL
               AND COALESCE(t.rul_lower_hours, t.rul_hours) <= $1
             ORDER BY 3",
        )
        .bind(horizon_hours)
        .fetch_all(self.pool())
        .await?;
        let locations: Vec<_> = self
            .locations()
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
            let need_ms = now + (rul * 3_600_000.0) as i64;
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
            // The nearest location with stock above its reorder point.
            let sources = sqlx::query(
                "SELECT l.location_id, l.kind, l.lat, l.lon, s.on_hand - s.reserved - s.reorder_point
                 FROM stock s JOIN stock_locations l ON l.location_id = s.location_id
                 WHERE s.sku = $1 AND l.kind <> 'van' AND l.location_id <> $2
                   AND s.on_hand - s.reserved - s.reorder_point > 0",
            )
            .bind(&sku)
            .bind(&loc)
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
                eta: best.map(|b| ms_to_rfc3339(now + (b.1 * 3_600_000.0) as i64)),
                tickets,
            });
        }
        out.sort_by(|a, b| a.needed_by.cmp(&b.needed_by));
        Ok(out)
    }
}
