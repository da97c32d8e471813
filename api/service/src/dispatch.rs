//! Dispatch: rank technicians for a ticket with an explained score, and assign a batch of
//! tickets optimally (a min-cost flow: each ticket to at most one technician, each technician
//! up to their remaining daily capacity, maximising the urgency-weighted sum of scores), then
//! assign and reserve parts in one transaction.
//!
//! Score = 0.30 skill + 0.20 distance + 0.15 load + 0.20 parts + 0.05 shift + 0.10 SLA, each
//! in [0, 1]:
//! - skill: level / 5 of the skill the failure mode needs (1 when none is needed);
//! - distance: 1 / (1 + km / 50), haversine from home base to the site;
//! - load: 1 − open assigned tickets / max daily load;
//! - parts: 1 when the van holds every part, 1 / (1 + ETA h / 12) for a transfer from the
//!   nearest location with stock, 0 when a part is nowhere;
//! - shift: 1 on shift now, 1 / (1 + hours until the next shift / 4) otherwise;
//! - SLA: 1 when arrival (wait for the shift + travel + part ETA) beats the on-site deadline,
//!   falling to 0 at 12 h late.
//!
//! In a batch each ticket's score is weighted by urgency (normal 1, major 2, emergency 3, +1
//! once its SLA is in warning), so scarce capacity goes to urgent work first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::auth::{Action, Principal, within};
use super::{Priority, Result, Service, ServiceError, TRAVEL_KMH, haversine_km};
use crate::network::{LOCATION_OWNER, LocationKind};
use crate::stock::{PartPlan, secure_parts, transfer_eta_hours};
use crate::ticket_log::{Ticket, TicketState, apply_transition, lock_ticket};

pub const W_SKILL: f64 = 0.30;
pub const W_DISTANCE: f64 = 0.20;
pub const W_LOAD: f64 = 0.15;
pub const W_PARTS: f64 = 0.20;
pub const W_SLA: f64 = 0.10;
pub const W_SHIFT: f64 = 0.05;

/// Hours until a technician is next on shift (0 when on shift now). Shift hours are minutes
/// of the local day at the home base; without a time-zone database, local time is taken as
/// UTC plus the home longitude / 15 h (solar time, within an hour of civil time in most
/// places). A shift that ends before it starts runs over midnight; equal ends mean always on.
pub fn shift_wait_hours(now_ms: i64, home_lon: f64, start_min: i64, end_min: i64) -> f64 {
    let offset_min = (home_lon / 15.0 * 60.0).round() as i64;
    let minute = (now_ms.div_euclid(60_000) + offset_min).rem_euclid(1440);
    let (start, end) = (start_min.rem_euclid(1440), end_min.rem_euclid(1440));
    let on_shift = match start.cmp(&end) {
        std::cmp::Ordering::Equal => true,
        std::cmp::Ordering::Less => (start..end).contains(&minute),
        std::cmp::Ordering::Greater => minute >= start || minute < end,
    };
    if on_shift {
        0.0
    } else {
        (start - minute).rem_euclid(1440) as f64 / 60.0
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct Factor {
    pub factor: &'static str,
    pub value: f64,
    pub weight: f64,
    pub contribution: f64,
    pub detail: String,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize, PartialEq)]
pub struct Candidate {
    pub technician_id: String,
    pub provider_id: String,
    pub eligible: bool,
    /// Why not, when not eligible.
    pub reasons: Vec<String>,
    pub score: f64,
    pub distance_km: f64,
    pub travel_minutes: f64,
    pub load: i64,
    pub capacity: i64,
    pub parts_eta_hours: Option<f64>,
    pub factors: Vec<Factor>,
}

/// A technician as dispatch sees them.
#[derive(Debug, Clone)]
pub struct TechSnapshot {
    pub technician_id: String,
    pub provider_id: String,
    pub provider_path: String,
    pub provider_regions: Vec<String>,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
    pub active: bool,
    pub max_daily_load: i64,
    pub load: i64,
    pub skills: HashMap<String, i64>,
    pub van: Option<String>,
    pub shift_start_min: i64,
    pub shift_end_min: i64,
}

#[derive(Debug, Clone)]
struct StockPoint {
    location_id: String,
    kind: LocationKind,
    lat: f64,
    lon: f64,
}

/// Everything scoring needs, read once.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub techs: Vec<TechSnapshot>,
    /// (location, sku) -> available
    available: HashMap<(String, String), i64>,
    /// sku -> non-van locations holding it
    holders: HashMap<String, Vec<StockPoint>>,
    /// site id -> (lat, lon)
    sites: HashMap<String, (f64, f64)>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Deserialize)]
pub struct BatchRequest {
    #[schema(min_items = 1, max_items = 5000)]
    pub ticket_ids: Vec<String>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct Assignment {
    pub ticket_id: String,
    pub technician_id: String,
    pub score: f64,
    pub state: TicketState,
    pub parts: Vec<PartPlan>,
}

#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct BatchResult {
    pub assignments: Vec<Assignment>,
    pub unassigned: Vec<String>,
    /// Σ urgency × score of the chosen assignment.
    pub objective: f64,
    pub solve_ms: f64,
}

pub fn urgency_weight(priority: Priority, sla_status: &str) -> f64 {
    let base = match priority {
        Priority::Normal => 1.0,
        Priority::Major => 2.0,
        Priority::Emergency => 3.0,
    };
    base + if sla_status == "ok" { 0.0 } else { 1.0 }
}

impl Snapshot {
    /// Scores one (ticket, technician) pair.
    pub fn score(&self, t: &Ticket, k: &TechSnapshot, now_ms: i64) -> Candidate {
        let mut reasons = Vec::new();
        if !k.active {
            reasons.push("inactive".to_owned());
        }
        let site = t.site_id.as_ref().and_then(|s| self.sites.get(s)).copied();
        let region_ok = t
            .region
            .as_ref()
            .is_some_and(|r| *r == k.region || k.provider_regions.contains(r));
        if !region_ok {
            reasons.push("does not serve the site's region".to_owned());
        }
        let level = match &t.skill {
            None => Some(5),
            Some(s) => k.skills.get(s).copied(),
        };
        if level.is_none() {
            reasons.push(format!(
                "lacks skill {}",
                t.skill.as_deref().unwrap_or_default()
            ));
        }
        let capacity = (k.max_daily_load - k.load).max(0);
        if capacity == 0 {
            reasons.push("no capacity left today".to_owned());
        }
        let (lat, lon) = site.unwrap_or((k.lat, k.lon));
        let km = if site.is_some() {
            haversine_km(k.lat, k.lon, lat, lon)
        } else {
            reasons.push("ticket has no site".to_owned());
            0.0
        };
        let travel_h = km / TRAVEL_KMH;
        // Parts: the van, else the nearest holder.
        let mut parts_eta: Option<f64> = Some(0.0);
        let mut parts_detail = Vec::new();
        for sku in &t.parts_needed {
            let in_van = k.van.as_ref().is_some_and(|v| {
                self.available
                    .get(&(v.clone(), sku.clone()))
                    .is_some_and(|a| *a >= 1)
            });
            if in_van {
                parts_detail.push(format!("{sku} in van"));
                continue;
            }
            let best = self.holders.get(sku).and_then(|hs| {
                hs.iter()
                    .filter(|h| {
                        self.available
                            .get(&(h.location_id.clone(), sku.clone()))
                            .is_some_and(|a| *a >= 1)
                    })
                    .map(|h| {
                        (
                            h.location_id.as_str(),
                            transfer_eta_hours(h.kind, haversine_km(h.lat, h.lon, k.lat, k.lon)),
                        )
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
            });
            match best {
                Some((loc, eta)) => {
                    parts_detail.push(format!("{sku} from {loc} in {eta:.1} h"));
                    parts_eta = parts_eta.map(|e| e.max(eta));
                }
                None => {
                    parts_detail.push(format!("{sku} nowhere in stock"));
                    parts_eta = None;
                }
            }
        }
        let skill_v = level.map(|l| l as f64 / 5.0).unwrap_or(0.0);
        let dist_v = 1.0 / (1.0 + km / 50.0);
        let load_v = 1.0 - (k.load as f64 / k.max_daily_load.max(1) as f64).min(1.0);
        let parts_v = match parts_eta {
            Some(e) if e <= 0.0 => 1.0,
            Some(e) => 1.0 / (1.0 + e / 12.0),
            None => 0.0,
        };
        // Off shift, the job starts when the shift does: the wait delays the arrival too.
        let wait_h = shift_wait_hours(now_ms, k.lon, k.shift_start_min, k.shift_end_min);
        let shift_v = 1.0 / (1.0 + wait_h / 4.0);
        let arrival_ms =
            now_ms + ((wait_h + travel_h + parts_eta.unwrap_or(72.0)) * 3_600_000.0) as i64;
        let late_h = (arrival_ms - t.raw.onsite_due_ms) as f64 / 3_600_000.0;
        let sla_v = if late_h <= 0.0 {
            1.0
        } else {
            (1.0 - late_h / 12.0).max(0.0)
        };
        let f = |factor, value: f64, weight, detail: String| Factor {
            factor,
            value,
            weight,
            contribution: value * weight,
            detail,
        };
        let factors = vec![
            f(
                "skill",
                skill_v,
                W_SKILL,
                match (&t.skill, level) {
                    (None, _) => "no special skill needed".to_owned(),
                    (Some(s), Some(l)) => format!("{s} level {l}/5"),
                    (Some(s), None) => format!("no {s} skill"),
                },
            ),
            f(
                "distance",
                dist_v,
                W_DISTANCE,
                format!("{km:.1} km, {:.0} min", travel_h * 60.0),
            ),
            f(
                "load",
                load_v,
                W_LOAD,
                format!("{} of {} today", k.load, k.max_daily_load),
            ),
            f(
                "parts",
                parts_v,
                W_PARTS,
                if parts_detail.is_empty() {
                    "no parts needed".to_owned()
                } else {
                    parts_detail.join("; ")
                },
            ),
            f(
                "shift",
                shift_v,
                W_SHIFT,
                if wait_h <= 0.0 {
                    "on shift now".to_owned()
                } else {
                    format!("off shift, next shift in {wait_h:.1} h")
                },
            ),
            f(
                "sla",
                sla_v,
                W_SLA,
                if late_h <= 0.0 {
                    format!("arrives {:.1} h before the on-site deadline", -late_h)
                } else {
                    format!("arrives {late_h:.1} h after the on-site deadline")
                },
            ),
        ];
        let score = factors.iter().map(|x| x.contribution).sum::<f64>();
        Candidate {
            technician_id: k.technician_id.clone(),
            provider_id: k.provider_id.clone(),
            eligible: reasons.is_empty(),
            reasons,
            score: (score * 1e6).round() / 1e6,
            distance_km: (km * 10.0).round() / 10.0,
            travel_minutes: (travel_h * 60.0).round(),
            load: k.load,
            capacity,
            parts_eta_hours: parts_eta,
            factors,
        }
    }
}

/// Optimal assignment by successive shortest paths on a min-cost flow network
/// (source → ticket → technician → sink, plus ticket → sink "leave unassigned").
///
/// `value[t][k]` is the (non-negative, integer) value of giving ticket t to technician k, `None`
/// when not allowed; technician k takes at most `capacity[k]` tickets. Returns, per ticket,
/// the technician chosen, maximising the total value.
pub fn optimal_assignment(value: &[Vec<Option<i64>>], capacity: &[i64]) -> Vec<Option<usize>> {
    let n = value.len();
    let m = capacity.len();
    let max_v = value
        .iter()
        .flatten()
        .flatten()
        .copied()
        .max()
        .unwrap_or(0)
        .max(0);
    // Node ids: 0 source, 1..=n tickets, n+1..=n+m technicians, n+m+1 sink.
    let (src, sink) = (0, n + m + 1);
    let nodes = n + m + 2;
    struct Edge {
        to: usize,
        cap: i64,
        cost: i64,
    }
    let mut edges: Vec<Edge> = Vec::new();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); nodes];
    let add = |edges: &mut Vec<Edge>,
               adj: &mut Vec<Vec<usize>>,
               a: usize,
               b: usize,
               cap: i64,
               cost: i64| {
        adj[a].push(edges.len());
        edges.push(Edge { to: b, cap, cost });
        adj[b].push(edges.len());
        edges.push(Edge {
            to: a,
            cap: 0,
            cost: -cost,
        });
    };
    let mut pair_edge: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (t, row) in value.iter().enumerate() {
        add(&mut edges, &mut adj, src, 1 + t, 1, 0);
        for (k, v) in row.iter().enumerate().take(m) {
            if let Some(v) = v
                && capacity[k] > 0
            {
                pair_edge[t].push((k, edges.len()));
                add(
                    &mut edges,
                    &mut adj,
                    1 + t,
                    1 + n + k,
                    1,
                    max_v - (*v).max(0),
                );
            }
        }
        add(&mut edges, &mut adj, 1 + t, sink, 1, max_v);
    }
    for (k, c) in capacity.iter().enumerate() {
        if *c > 0 {
            add(&mut edges, &mut adj, 1 + n + k, sink, (*c).min(n as i64), 0);
        }
    }
    // All costs start non-negative, so zero potentials are feasible.
    let mut potential = vec![0i64; nodes];
    let inf = i64::MAX / 4;
    for _ in 0..n {
        let mut dist = vec![inf; nodes];
        let mut prev_edge = vec![usize::MAX; nodes];
        let mut done = vec![false; nodes];
        dist[src] = 0;
        let mut heap = BinaryHeap::new();
        heap.push(Reverse((0i64, src)));
        while let Some(Reverse((d, u))) = heap.pop() {
            if done[u] {
                continue;
            }
            done[u] = true;
            if u == sink {
                break;
            }
            for &e in &adj[u] {
                let edge = &edges[e];
                if edge.cap <= 0 || done[edge.to] {
                    continue;
                }
                let nd = d + edge.cost + potential[u] - potential[edge.to];
                if nd < dist[edge.to] {
                    dist[edge.to] = nd;
                    prev_edge[edge.to] = e;
                    heap.push(Reverse((nd, edge.to)));
                }
            }
        }
        if dist[sink] >= inf {
            break;
        }
        // Early exit: nodes not settled get the sink's distance, which keeps reduced costs ≥ 0.
        let ds = dist[sink];
        for v in 0..nodes {
            potential[v] += if done[v] { dist[v] } else { ds };
        }
        let mut v = sink;
        while v != src {
            let e = prev_edge[v];
            edges[e].cap -= 1;
            edges[e ^ 1].cap += 1;
            v = edges[e ^ 1].to;
        }
    }
    pair_edge
        .iter()
        .map(|pairs| {
            pairs
                .iter()
                .find(|(_, e)| edges[*e].cap == 0)
                .map(|(k, _)| *k)
        })
        .collect()
}

/// Scales a score in [0, ~4] to integer value units for the flow.
fn to_units(x: f64) -> i64 {
    (x * 1e6).round() as i64
}

impl Service {
    /// Reads technicians, loads, stock and sites once for scoring. With a provider subtree
    /// `scope`, only its technicians, and only stock it may draw from: its own locations and
    /// the shared central stock (never another provider's shelves).
    pub async fn dispatch_snapshot(&self, scope: Option<&str>) -> Result<Snapshot> {
        let rows = sqlx::query(&format!(
            "SELECT t.technician_id, t.provider_id, p.path, p.regions, t.region, t.home_lat,
                    t.home_lon, t.active, t.max_daily_load,
                    (SELECT COUNT(*) FROM tickets x WHERE x.technician_id = t.technician_id
                       AND x.state IN ('assigned', 'en_route', 'on_site', 'waiting_parts')),
                    (SELECT l.location_id FROM stock_locations l WHERE l.technician_id = t.technician_id),
                    t.shift_start_min, t.shift_end_min
             FROM technicians t JOIN providers p ON p.provider_id = t.provider_id
             WHERE {}
             ORDER BY t.technician_id",
            within("p.path", "$1")
        ))
        .bind(scope)
        .fetch_all(self.pool())
        .await?;
        let mut skills: HashMap<String, HashMap<String, i64>> = HashMap::new();
        for r in sqlx::query("SELECT technician_id, skill, level FROM technician_skills")
            .fetch_all(self.pool())
            .await?
        {
            skills
                .entry(r.get(0))
                .or_default()
                .insert(r.get(1), r.get(2));
        }
        let techs = rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                TechSnapshot {
                    skills: skills.remove(&id).unwrap_or_default(),
                    technician_id: id,
                    provider_id: r.get(1),
                    provider_path: r.get(2),
                    provider_regions: super::json_list(&r.get::<String, _>(3)),
                    region: r.get(4),
                    lat: r.get(5),
                    lon: r.get(6),
                    active: r.get::<i64, _>(7) != 0,
                    max_daily_load: r.get(8),
                    load: r.get(9),
                    van: r.get(10),
                    shift_start_min: r.get(11),
                    shift_end_min: r.get(12),
                }
            })
            .collect();
        let mut snap = Snapshot {
            techs,
            ..Default::default()
        };
        for r in sqlx::query(&format!(
            "SELECT s.location_id, s.sku, s.on_hand - s.reserved, l.kind, l.lat, l.lon
             FROM stock s JOIN stock_locations l ON l.location_id = s.location_id {LOCATION_OWNER}
             WHERE p.path IS NULL OR {}",
            within("p.path", "$1")
        ))
        .bind(scope)
        .fetch_all(self.pool())
        .await?
        {
            let loc: String = r.get(0);
            let sku: String = r.get(1);
            let kind: String = r.get(3);
            snap.available.insert((loc.clone(), sku.clone()), r.get(2));
            if kind != "van" {
                snap.holders.entry(sku).or_default().push(StockPoint {
                    location_id: loc,
                    kind: LocationKind::parse(&kind).unwrap_or(LocationKind::Central),
                    lat: r.get(4),
                    lon: r.get(5),
                });
            }
        }
        for r in sqlx::query("SELECT site_id, lat, lon FROM sites")
            .fetch_all(self.pool())
            .await?
        {
            snap.sites.insert(r.get(0), (r.get(1), r.get(2)));
        }
        Ok(snap)
    }

    /// Technicians ranked for a ticket, eligible first, best first. `limit: None` = all
    /// technicians, including ineligible ones with the reasons.
    pub async fn candidates(
        &self,
        who: &Principal,
        ticket_id: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Candidate>> {
        who.require(Action::Dispatch)?;
        let ticket = self.ticket(who, ticket_id).await?;
        let snap = self.dispatch_snapshot(who.scope()).await?;
        let now = self.now_ms();
        let mut out: Vec<Candidate> = snap
            .techs
            .iter()
            .map(|k| snap.score(&ticket, k, now))
            .collect();
        out.sort_by(|a, b| {
            b.eligible
                .cmp(&a.eligible)
                .then(b.score.total_cmp(&a.score))
                .then_with(|| a.technician_id.cmp(&b.technician_id))
        });
        if let Some(limit) = limit {
            out.retain(|c| c.eligible);
            out.truncate(limit);
        }
        Ok(out)
    }

    /// Assigns a batch of open tickets optimally and reserves their parts, all in one
    /// transaction: either every assignment is written or none is.
    pub async fn dispatch_batch(&self, who: &Principal, req: &BatchRequest) -> Result<BatchResult> {
        who.require(Action::Dispatch)?;
        if req.ticket_ids.is_empty() {
            return Err(ServiceError::invalid("ticket_ids", "must not be empty"));
        }
        if req.ticket_ids.len() > 5000 {
            return Err(ServiceError::invalid(
                "ticket_ids",
                "at most 5000 per batch",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut tickets = Vec::with_capacity(req.ticket_ids.len());
        for (i, id) in req.ticket_ids.iter().enumerate() {
            if !seen.insert(id) {
                return Err(ServiceError::invalid(
                    &format!("ticket_ids[{i}]"),
                    "duplicate ticket id",
                ));
            }
            let t = self.ticket(who, id).await?;
            if !matches!(t.state, TicketState::New | TicketState::Triaged) {
                return Err(ServiceError::Conflict(format!(
                    "ticket {id} is {}: only new or triaged tickets can be dispatched",
                    t.state.as_str()
                )));
            }
            tickets.push(t);
        }
        let snap = self.dispatch_snapshot(who.scope()).await?;
        let now = self.now_ms();
        let started = Instant::now();
        let mut scores = vec![vec![None; snap.techs.len()]; tickets.len()];
        let mut value = vec![vec![None; snap.techs.len()]; tickets.len()];
        for (i, t) in tickets.iter().enumerate() {
            let w = urgency_weight(t.priority, &t.sla.status);
            for (j, k) in snap.techs.iter().enumerate() {
                let c = snap.score(t, k, now);
                if c.eligible {
                    scores[i][j] = Some(c.score);
                    value[i][j] = Some(to_units(w * c.score));
                }
            }
        }
        let capacity: Vec<i64> = snap
            .techs
            .iter()
            .map(|k| (k.max_daily_load - k.load).max(0))
            .collect();
        let chosen = optimal_assignment(&value, &capacity);
        let solve_ms = started.elapsed().as_secs_f64() * 1000.0;

        let actor = who.actor();
        let mut tx = self.begin_write().await?;
        let mut assignments = Vec::new();
        let mut unassigned = Vec::new();
        let mut objective = 0.0;
        for (i, t) in tickets.iter().enumerate() {
            let Some(j) = chosen[i] else {
                unassigned.push(t.ticket_id.clone());
                continue;
            };
            let k = &snap.techs[j];
            let score = scores[i][j].unwrap_or(0.0);
            objective += urgency_weight(t.priority, &t.sla.status) * score;
            let (state, parts) = self
                .assign_in_tx(
                    &mut tx,
                    &t.ticket_id,
                    &k.technician_id,
                    &actor,
                    &format!("dispatch batch: score {score:.3}"),
                    who.scope(),
                    now,
                )
                .await?;
            assignments.push(Assignment {
                ticket_id: t.ticket_id.clone(),
                technician_id: k.technician_id.clone(),
                score,
                state,
                parts,
            });
        }
        tx.commit().await?;
        Ok(BatchResult {
            assignments,
            unassigned,
            objective: (objective * 1e6).round() / 1e6,
            solve_ms,
        })
    }

    /// Assigns one ticket to a technician (triaging it first when new), checks the
    /// technician's capacity, and secures its parts; a part not in the van starts a transfer and
    /// the ticket waits for parts. Transfers come only from stock the dispatcher may draw
    /// from (`scope`: a provider's subtree and the shared central stock).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn assign_in_tx(
        &self,
        conn: &mut sqlx::SqliteConnection,
        ticket_id: &str,
        technician_id: &str,
        actor: &str,
        note: &str,
        scope: Option<&str>,
        now: i64,
    ) -> Result<(TicketState, Vec<PartPlan>)> {
        let mut t = lock_ticket(conn, ticket_id, now).await?;
        if t.state == TicketState::New {
            apply_transition(
                conn,
                &t,
                TicketState::Triaged,
                actor,
                Some("triaged by dispatch"),
                None,
                now,
            )
            .await?;
            t = lock_ticket(conn, ticket_id, now).await?;
        }
        let row = sqlx::query(
            "SELECT max_daily_load,
                    (SELECT COUNT(*) FROM tickets x WHERE x.technician_id = $1
                       AND x.ticket_id <> $2
                       AND x.state IN ('assigned', 'en_route', 'on_site', 'waiting_parts'))
             FROM technicians WHERE technician_id = $1",
        )
        .bind(technician_id)
        .bind(ticket_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ServiceError::unknown("technician_id", "technician", technician_id))?;
        let (max, load): (i64, i64) = (row.get(0), row.get(1));
        if load >= max {
            return Err(ServiceError::Conflict(format!(
                "technician {technician_id} has no capacity left ({load}/{max})"
            )));
        }
        apply_transition(
            conn,
            &t,
            TicketState::Assigned,
            actor,
            Some(note),
            Some(technician_id),
            now,
        )
        .await?;
        let site: Option<(f64, f64)> = match &t.site_id {
            Some(s) => sqlx::query("SELECT lat, lon FROM sites WHERE site_id = $1")
                .bind(s)
                .fetch_optional(&mut *conn)
                .await?
                .map(|r| (r.get(0), r.get(1))),
            None => None,
        };
        let (plan, wait) = secure_parts(
            conn,
            ticket_id,
            &t.parts_needed,
            technician_id,
            site,
            scope,
            now,
        )
        .await?;
        if wait {
            let t = lock_ticket(conn, ticket_id, now).await?;
            let detail: Vec<String> = plan
                .iter()
                .filter(|p| p.source == "transfer" || p.source == "unavailable")
                .map(|p| match (&p.location_id, &p.eta) {
                    (Some(l), Some(eta)) => format!("{} from {l}, ETA {eta}", p.sku),
                    _ => format!("{} not in stock anywhere", p.sku),
                })
                .collect();
            apply_transition(
                conn,
                &t,
                TicketState::WaitingParts,
                actor,
                Some(&format!("waiting for parts: {}", detail.join("; "))),
                None,
                now,
            )
            .await?;
            return Ok((TicketState::WaitingParts, plan));
        }
        Ok((TicketState::Assigned, plan))
    }

    /// Assigns one ticket to a chosen technician, reserving parts like a batch does.
    pub async fn assign(
        &self,
        who: &Principal,
        ticket_id: &str,
        technician_id: &str,
        note: Option<&str>,
    ) -> Result<(Ticket, Vec<PartPlan>)> {
        who.require(Action::Dispatch)?;
        crate::bounded("note", note, crate::MAX_TEXT)?;
        self.ticket(who, ticket_id).await?;
        let tech = self
            .technician(technician_id)
            .await
            .map_err(|_| ServiceError::unknown("technician_id", "technician", technician_id))?;
        if let Some(scope) = who.scope() {
            let path = self.provider(&tech.provider_id).await?.path;
            if !path.starts_with(scope) {
                return Err(ServiceError::unknown(
                    "technician_id",
                    "technician",
                    technician_id,
                ));
            }
        }
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let (_, plan) = self
            .assign_in_tx(
                &mut tx,
                ticket_id,
                technician_id,
                &who.actor(),
                note.unwrap_or("assigned"),
                who.scope(),
                now,
            )
            .await?;
        tx.commit().await?;
        Ok((self.ticket_unscoped(ticket_id).await?, plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand::{Rng, SeedableRng};

    /// The workspace's seeded generator.
    struct Lcg(rand_chacha::ChaCha8Rng);
    impl Lcg {
        fn new(seed: u64) -> Lcg {
            Lcg(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
        }
        fn next(&mut self) -> u64 {
            self.0.random::<u64>() >> 33
        }
    }

    fn brute(value: &[Vec<Option<i64>>], cap: &mut [i64], t: usize) -> i64 {
        if t == value.len() {
            return 0;
        }
        let mut best = brute(value, cap, t + 1);
        for k in 0..cap.len() {
            if let Some(v) = value[t][k]
                && cap[k] > 0
            {
                cap[k] -= 1;
                best = best.max(v + brute(value, cap, t + 1));
                cap[k] += 1;
            }
        }
        best
    }

    #[test]
    fn shift_wait_follows_the_local_day() {
        let h = |hour: i64| hour * 3_600_000;
        // Lon 0: local = UTC. Day shift 08:00–17:00.
        assert_eq!(shift_wait_hours(h(10), 0.0, 480, 1020), 0.0);
        assert_eq!(shift_wait_hours(h(6), 0.0, 480, 1020), 2.0);
        assert_eq!(shift_wait_hours(h(18), 0.0, 480, 1020), 14.0);
        // Lon 30 (UTC+2): 06:00 UTC is 08:00 local, on shift.
        assert_eq!(shift_wait_hours(h(6), 30.0, 480, 1020), 0.0);
        // Night shift 22:00–06:00 runs over midnight.
        assert_eq!(shift_wait_hours(h(23), 0.0, 1320, 360), 0.0);
        assert_eq!(shift_wait_hours(h(3), 0.0, 1320, 360), 0.0);
        assert_eq!(shift_wait_hours(h(12), 0.0, 1320, 360), 10.0);
        // Equal ends: always on.
        assert_eq!(shift_wait_hours(h(12), 0.0, 0, 0), 0.0);
    }

    #[test]
    fn flow_assignment_equals_brute_force_optimum() {
        let mut rng = Lcg::new(42);
        for case in 0..300 {
            let n = 1 + (rng.next() % 6) as usize;
            let m = 1 + (rng.next() % 4) as usize;
            let value: Vec<Vec<Option<i64>>> = (0..n)
                .map(|_| {
                    (0..m)
                        .map(|_| {
                            (!rng.next().is_multiple_of(4)).then(|| (rng.next() % 1000) as i64)
                        })
                        .collect()
                })
                .collect();
            let mut cap: Vec<i64> = (0..m).map(|_| (rng.next() % 3) as i64).collect();
            let chosen = optimal_assignment(&value, &cap);
            // Feasible…
            let mut used = vec![0; m];
            let mut total = 0;
            for (t, c) in chosen.iter().enumerate() {
                if let Some(k) = c {
                    used[*k] += 1;
                    total += value[t][*k].expect("only allowed pairs");
                }
            }
            for k in 0..m {
                assert!(used[k] <= cap[k], "case {case}: capacity exceeded");
            }
            // …and optimal.
            let best = brute(&value, &mut cap, 0);
            assert_eq!(total, best, "case {case}: {value:?} cap {cap:?}");
        }
    }

    #[test]
    fn urgent_tickets_win_scarce_capacity() {
        // One technician, one slot; the emergency is worth more even with a lower raw score.
        let value = vec![
            vec![Some(to_units(1.0 * 0.9))],
            vec![Some(to_units(3.0 * 0.5))],
        ];
        assert_eq!(optimal_assignment(&value, &[1]), vec![None, Some(0)]);
    }
}
