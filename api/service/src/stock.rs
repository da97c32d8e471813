//! Stock primitives inside a transaction: reservations that cannot oversell (one conditional UPDATE is the whole
//! check: `reserved + q` only where `on_hand - reserved >= q`), release and consumption,
//! transfers from the nearest location with stock, reorder points and pre-positioning.

use serde::{Deserialize, Serialize};
use sqlx::{Row, SqliteConnection};

use crate::auth::within;
use crate::network::{LOCATION_OWNER, LocationKind};
use crate::{Result, ServiceError, TRAVEL_KMH, haversine_km, ms_to_rfc3339, new_id};

#[derive(utoipa::ToSchema, Debug, Clone, Deserialize)]
pub struct ReserveRequest {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub sku: String,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub location_id: String,
    #[schema(minimum = 1, maximum = 1000000)]
    pub quantity: i64,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub ticket_id: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
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

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
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
#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct PartPlan {
    pub sku: String,
    /// `van`, `transfer` (on its way from `location_id`), `reserved` (already held) or
    /// `unavailable` (nowhere in the network).
    pub source: String,
    pub location_id: Option<String>,
    pub eta: Option<String>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct ReorderLine {
    pub location_id: String,
    pub sku: String,
    pub abc_class: String,
    pub available: i64,
    pub reorder_point: i64,
    /// Order up to the target level (A ×1.5, B ×2, C ×3 the reorder point, at least +1).
    pub order_quantity: i64,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
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

pub(crate) fn reservation_row(r: &sqlx::sqlite::SqliteRow) -> Reservation {
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

pub(crate) const RES_COLS: &str =
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
pub(crate) async fn finish_reservation(
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
/// (lat, lon) in hours. With a provider subtree `scope`, only its own locations and the
/// shared (unowned) central stock are sources.
pub(crate) async fn nearest_source(
    conn: &mut SqliteConnection,
    sku: &str,
    quantity: i64,
    (lat, lon): (f64, f64),
    exclude: Option<&str>,
    scope: Option<&str>,
) -> Result<Option<(String, f64)>> {
    let rows = sqlx::query(&format!(
        "SELECT l.location_id, l.kind, l.lat, l.lon FROM stock s
         JOIN stock_locations l ON l.location_id = s.location_id {LOCATION_OWNER}
         WHERE s.sku = $1 AND s.on_hand - s.reserved >= $2 AND l.kind <> 'van'
           AND ($3 IS NULL OR l.location_id <> $3) AND (p.path IS NULL OR {})",
        within("p.path", "$4")
    ))
    .bind(sku)
    .bind(quantity)
    .bind(exclude)
    .bind(scope)
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
/// ticket must wait. `scope` limits the sources as in [`nearest_source`].
pub(crate) async fn secure_parts(
    conn: &mut SqliteConnection,
    ticket_id: &str,
    parts: &[String],
    technician_id: &str,
    site: Option<(f64, f64)>,
    scope: Option<&str>,
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
            nearest_source(conn, sku, 1, (lat, lon), Some(&dest), scope).await?
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
