//! A demo service network around a simulated fleet: regions from the devices' sites, an OEM
//! with agents and one authorised provider per region, dozens of technicians with skills and
//! stocked vans, a central warehouse, regional warehouses and service points with stock, and
//! the fleet's devices, sites and customers — so predictive tickets get dispatched and parts
//! move.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sqlx::Row;

use prognos_service::ManualClock;
use prognos_service::auth::Principal;
use prognos_service::db::Database;
use prognos_service::network::{
    LocationKind, NewCustomer, NewLocation, NewProvider, NewServiceDevice, NewSite, NewTechnician,
    Part, ProviderKind, Skill,
};
use prognos_service::tickets::{
    CloseCode, NewTicket, PartUsed, ServiceReport, TicketSource, TicketState,
};
use prognos_service::{Result, Service};

/// One simulated device as the demo knows it.
#[derive(Debug, Clone)]
pub struct DemoDevice {
    pub device_id: String,
    pub model: String,
    pub serial: String,
    pub batch: String,
    pub site: String,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
    /// 1 (low) … 3 (production-critical).
    pub criticality: u8,
    pub firmware: String,
    /// Installation time, epoch ms.
    pub install_ms: i64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct DemoNetwork {
    pub regions: usize,
    pub providers: usize,
    pub technicians: usize,
    pub locations: usize,
    pub parts: usize,
    pub devices: usize,
    /// An admin API key for the demo (shown once).
    pub admin_key: Option<String>,
}

const MODES: [&str; 3] = ["bearing_wear", "seal_leak", "overheating"];

/// The demo's seeded generator (the workspace's one: ChaCha8 from rand_chacha).
struct DemoRng(ChaCha8Rng);
impl DemoRng {
    fn seeded(seed: u64) -> DemoRng {
        DemoRng(ChaCha8Rng::seed_from_u64(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.random()
    }
    fn unit(&mut self) -> f64 {
        self.0.random()
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Seeds the network (once: a second call only adds devices not yet registered).
pub async fn seed_demo_network(db: &Database, devices: &[DemoDevice]) -> Result<DemoNetwork> {
    let svc = Service::new(db.clone());
    let mut out = DemoNetwork::default();
    let mut rng = DemoRng::seeded(20_260_101);
    // Regions and their centres, from the devices (or a default map).
    let mut regions: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for d in devices {
        let e = regions.entry(d.region.clone()).or_insert((0.0, 0.0, 0));
        e.0 += d.lat;
        e.1 += d.lon;
        e.2 += 1;
    }
    if regions.is_empty() {
        for (name, lat, lon) in [
            ("north", 53.5, 10.0),
            ("south", 48.1, 11.6),
            ("west", 50.9, 6.9),
            ("east", 52.5, 13.4),
        ] {
            regions.insert(name.into(), (lat, lon, 1));
        }
    }
    let centres: Vec<(String, f64, f64)> = regions
        .iter()
        .map(|(r, (la, lo, n))| (r.clone(), la / *n as f64, lo / *n as f64))
        .collect();
    out.regions = centres.len();
    let fresh = svc.providers(&Principal::system("demo")).await?.is_empty();
    if fresh {
        let all: Vec<String> = centres.iter().map(|c| c.0.clone()).collect();
        svc.create_provider(
            &Principal::system("demo"),
            &NewProvider {
                provider_id: Some("oem".into()),
                name: "Prognos Machines (OEM)".into(),
                kind: ProviderKind::Oem,
                parent_id: None,
                regions: all.clone(),
            },
        )
        .await?;
        out.providers += 1;
        // One agent per two regions, one authorised provider per region.
        for (i, chunk) in centres.chunks(2).enumerate() {
            let agent = format!("agent-{}", i + 1);
            svc.create_provider(
                &Principal::system("demo"),
                &NewProvider {
                    provider_id: Some(agent.clone()),
                    name: format!("Agent {}", i + 1),
                    kind: ProviderKind::Agent,
                    parent_id: Some("oem".into()),
                    regions: chunk.iter().map(|c| c.0.clone()).collect(),
                },
            )
            .await?;
            out.providers += 1;
            for (region, _, _) in chunk {
                svc.create_provider(
                    &Principal::system("demo"),
                    &NewProvider {
                        provider_id: Some(format!("sp-{}", slug(region))),
                        name: format!("Service partner {region}"),
                        kind: ProviderKind::Provider,
                        parent_id: Some(agent.clone()),
                        regions: vec![region.clone()],
                    },
                )
                .await?;
                out.providers += 1;
            }
        }
        // Parts: a kit per failure mode for every model, plus a universal consumable.
        let models: Vec<String> = {
            let mut m: Vec<String> = devices.iter().map(|d| d.model.clone()).collect();
            m.sort();
            m.dedup();
            m
        };
        let catalogue = [
            ("BRG-KIT", "Bearing kit", "bearing_wear", 180.0, "A"),
            ("SEAL-KIT", "Mechanical seal kit", "seal_leak", 95.0, "B"),
            (
                "COOL-KIT",
                "Cooling fan and thermal kit",
                "overheating",
                60.0,
                "B",
            ),
            (
                "GREASE",
                "Bearing grease cartridge",
                "bearing_wear",
                8.0,
                "C",
            ),
        ];
        for (sku, name, mode, cost, abc) in catalogue {
            svc.create_part(
                &Principal::system("demo"),
                &Part {
                    sku: sku.into(),
                    name: name.into(),
                    compatible_models: if abc == "C" { vec![] } else { models.clone() },
                    fixes_modes: vec![mode.into()],
                    unit_cost: cost,
                    abc_class: abc.into(),
                },
            )
            .await?;
            out.parts += 1;
        }
        let skus = ["BRG-KIT", "SEAL-KIT", "COOL-KIT", "GREASE"];
        // Warehouses: one central, one regional per region, two service points per region.
        let (clat, clon) = (
            centres.iter().map(|c| c.1).sum::<f64>() / centres.len() as f64,
            centres.iter().map(|c| c.2).sum::<f64>() / centres.len() as f64,
        );
        let mut stocked = vec![(
            svc.create_location(
                &Principal::system("demo"),
                &NewLocation {
                    location_id: Some("central".into()),
                    kind: LocationKind::Central,
                    name: "Central warehouse".into(),
                    region: None,
                    lat: clat,
                    lon: clon,
                    provider_id: Some("oem".into()),
                },
            )
            .await?
            .location_id,
            40,
        )];
        for (region, lat, lon) in &centres {
            let sp = format!("sp-{}", slug(region));
            stocked.push((
                svc.create_location(
                    &Principal::system("demo"),
                    &NewLocation {
                        location_id: Some(format!("wh-{}", slug(region))),
                        kind: LocationKind::Regional,
                        name: format!("Regional warehouse {region}"),
                        region: Some(region.clone()),
                        lat: *lat,
                        lon: *lon,
                        provider_id: Some(sp.clone()),
                    },
                )
                .await?
                .location_id,
                8,
            ));
            for i in 0..2 {
                stocked.push((
                    svc.create_location(
                        &Principal::system("demo"),
                        &NewLocation {
                            location_id: Some(format!("pt-{}-{}", slug(region), i + 1)),
                            kind: LocationKind::ServicePoint,
                            name: format!("Service point {region} {}", i + 1),
                            region: Some(region.clone()),
                            lat: lat + (rng.unit() - 0.5) * 0.8,
                            lon: lon + (rng.unit() - 0.5) * 0.8,
                            provider_id: Some(sp.clone()),
                        },
                    )
                    .await?
                    .location_id,
                    2,
                ));
            }
            // Six technicians per region, each strong in one mode and passable in another.
            for i in 0..6 {
                let main = MODES[i % 3];
                let second = MODES[(i + 1) % 3];
                let tech = svc
                    .create_technician(
                        &Principal::system("demo"),
                        &NewTechnician {
                            technician_id: Some(format!("tech-{}-{}", slug(region), i + 1)),
                            provider_id: sp.clone(),
                            name: format!("Technician {} {region}", i + 1),
                            region: region.clone(),
                            home_lat: lat + (rng.unit() - 0.5) * 1.0,
                            home_lon: lon + (rng.unit() - 0.5) * 1.0,
                            skills: vec![
                                Skill {
                                    skill: main.into(),
                                    level: 3 + (rng.next() % 3) as i64,
                                },
                                Skill {
                                    skill: second.into(),
                                    level: 1 + (rng.next() % 3) as i64,
                                },
                            ],
                            shift_start_min: 7 * 60,
                            shift_end_min: 17 * 60,
                            max_daily_load: 3 + (rng.next() % 3) as i64,
                        },
                    )
                    .await?;
                out.technicians += 1;
                // Half the vans carry the kit of their main skill.
                if i % 2 == 0 {
                    let sku = match main {
                        "bearing_wear" => "BRG-KIT",
                        "seal_leak" => "SEAL-KIT",
                        _ => "COOL-KIT",
                    };
                    svc.set_stock(
                        &Principal::system("demo"),
                        &tech.van_location_id,
                        sku,
                        1,
                        None,
                    )
                    .await?;
                }
                svc.set_stock(
                    &Principal::system("demo"),
                    &tech.van_location_id,
                    "GREASE",
                    2,
                    None,
                )
                .await?;
            }
        }
        for (loc, qty) in &stocked {
            for sku in skus {
                svc.set_stock(&Principal::system("demo"), loc, sku, *qty, None)
                    .await?;
            }
        }
    }
    out.locations = svc.locations().await?.len();
    out.providers = svc.providers(&Principal::system("demo")).await?.len();
    out.parts = svc.parts(&Principal::system("demo")).await?.len();
    // Sites, customers and devices.
    for d in devices {
        if svc
            .device_context(&Principal::system("demo"), &d.device_id)
            .await
            .is_ok()
        {
            continue;
        }
        let site_id = format!("site-{}", slug(&d.site));
        if svc.site(&site_id).await.is_err() {
            let customer_id = format!("cust-{}", slug(&d.site));
            if svc
                .customer(&Principal::system("demo"), &customer_id)
                .await
                .is_err()
            {
                svc.create_customer(
                    &Principal::system("demo"),
                    &NewCustomer {
                        customer_id: Some(customer_id.clone()),
                        name: format!("Operator of {}", d.site),
                        tier: if rng.next().is_multiple_of(3) {
                            "premium"
                        } else {
                            "standard"
                        }
                        .into(),
                        vip: false,
                        contact_email: None,
                    },
                )
                .await?;
            }
            svc.create_site(
                &Principal::system("demo"),
                &NewSite {
                    site_id: Some(site_id.clone()),
                    customer_id,
                    name: d.site.clone(),
                    region: d.region.clone(),
                    lat: d.lat,
                    lon: d.lon,
                    address: None,
                },
            )
            .await?;
        }
        svc.create_device(
            &Principal::system("demo"),
            &NewServiceDevice {
                device_id: d.device_id.clone(),
                site_id,
                serial: d.serial.clone(),
                model: d.model.clone(),
                batch: Some(d.batch.clone()),
                firmware: Some(d.firmware.clone()),
                install_date: Some(prognos_service::ms_to_rfc3339(d.install_ms)),
                warranty_end: None,
                criticality: i64::from(d.criticality.clamp(1, 3)),
                vip: d.criticality >= 3 && rng.next().is_multiple_of(4),
            },
        )
        .await?;
        out.devices += 1;
    }
    if fresh {
        out.admin_key = Some(
            svc.create_api_key(
                &Principal::system("demo"),
                &prognos_service::auth::NewApiKey::of(prognos_service::auth::Role::Admin)
                    .label("demo"),
            )
            .await?
            .key,
        );
    }
    Ok(out)
}

/// The technician with the most dispatched, unfinished tickets, and its provider.
pub async fn busiest_technician(db: &Database) -> Result<Option<(String, String)>> {
    let row = sqlx::query(
        "SELECT t.technician_id, MAX(x.provider_id) FROM tickets t
           JOIN technicians x ON x.technician_id = t.technician_id
          WHERE t.state IN ('assigned', 'waiting_parts')
          GROUP BY t.technician_id
          ORDER BY COUNT(*) DESC, t.technician_id
          LIMIT 1",
    )
    .fetch_optional(db.pool())
    .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// A console sign-in the demo created (the password is shown once, in the summary).
#[derive(Debug, Clone, Serialize)]
pub struct SignIn {
    pub role: &'static str,
    pub name: String,
    pub password: String,
}

/// Console users for the people of the demo: a scheduler, a reliability engineer, the
/// technician `technician` (its own jobs only) and a user of that technician's provider (its
/// subtree only), each with a generated password.
pub async fn console_users(
    db: &Database,
    technician: Option<&(String, String)>,
) -> Result<Vec<SignIn>> {
    use prognos_service::auth::Role;
    use prognos_service::users::{NewUser, generate_password};
    let svc = Service::new(db.clone());
    let mut wanted = vec![
        ("scheduler", Role::Scheduler, None, None),
        ("engineer", Role::Engineer, None, None),
    ];
    if let Some((tech, provider)) = technician {
        wanted.push(("technician", Role::Technician, None, Some(tech.clone())));
        wanted.push(("provider", Role::Provider, Some(provider.clone()), None));
    }
    let mut out = Vec::new();
    for (role, r, provider_id, technician_id) in wanted {
        let name = match (&provider_id, &technician_id) {
            (_, Some(t)) => t.clone(),
            (Some(p), _) => p.clone(),
            _ => role.to_owned(),
        };
        let password = generate_password()?;
        svc.create_user(
            &Principal::system("demo"),
            &NewUser {
                name: name.clone(),
                password: password.clone(),
                role: r,
                provider_id,
                technician_id,
            },
        )
        .await?;
        out.push(SignIn {
            role,
            name,
            password,
        });
    }
    Ok(out)
}

/// (alerts, tickets) in the store: the demo waits until these stop moving.
pub async fn activity_counts(db: &Database) -> Result<(i64, i64)> {
    let alerts: i64 = sqlx::query("SELECT COUNT(*) FROM alerts")
        .fetch_one(db.pool())
        .await?
        .get(0);
    let tickets: i64 = sqlx::query("SELECT COUNT(*) FROM tickets")
        .fetch_one(db.pool())
        .await?
        .get(0);
    Ok((alerts, tickets))
}

/// Ticket counts per state, for the demo's summary.
pub async fn tickets_by_state(db: &Database) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT state, COUNT(*) FROM tickets GROUP BY state ORDER BY state")
        .fetch_all(db.pool())
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Tickets waiting for a technician (new or triaged), oldest first.
pub async fn dispatchable_ticket_ids(db: &Database) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT ticket_id FROM tickets WHERE state IN ('new', 'triaged') ORDER BY created_at_ms, ticket_id",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A breakdown from before monitoring started, as the old service records tell it.
#[derive(Debug, Clone)]
pub struct PastRepair {
    pub device_id: String,
    pub failure_mode: String,
    pub failed_ms: i64,
    pub restored_ms: i64,
}

/// The clock of a demo job: a manual clock moved through the job's historic times, or the
/// system clock for work done now (then the steps are no-ops).
struct JobClock<'a> {
    manual: Option<(&'a ManualClock, i64)>,
}

impl JobClock<'_> {
    fn advance(&mut self, rng: &mut DemoRng, lo_min: f64, hi_min: f64) {
        if let Some((clock, now)) = &mut self.manual {
            *now += ((lo_min + (hi_min - lo_min) * rng.unit()) * 60_000.0) as i64;
            clock.set(*now);
        }
    }

    fn not_before(&mut self, t_ms: i64) {
        if let Some((clock, now)) = &mut self.manual {
            *now = (*now).max(t_ms);
            clock.set(*now);
        }
    }
}

/// Assigns (when `assign`) the best eligible technician, then plays the job through to the
/// close: parts that must travel are received, travel, on site, resolved (not before
/// `restored_ms`), closed with `close_code` and a 3–5 satisfaction score. Returns false when
/// no technician was eligible (the ticket is then cancelled).
#[allow(clippy::too_many_arguments)]
async fn work_job(
    svc: &Service,
    who: &Principal,
    id: &str,
    assign: bool,
    cause: &str,
    close_code: CloseCode,
    restored_ms: i64,
    clock: &mut JobClock<'_>,
    rng: &mut DemoRng,
) -> Result<bool> {
    let ticket = svc.ticket(who, id).await?;
    let (technician, travel_minutes) = if assign {
        let best = svc
            .candidates(who, id, None)
            .await?
            .into_iter()
            .find(|c| c.eligible);
        let Some(best) = best else {
            svc.transition(who, id, TicketState::Cancelled, Some("no technician"), None)
                .await?;
            return Ok(false);
        };
        clock.advance(rng, 5.0, 30.0);
        svc.assign(who, id, &best.technician_id, None).await?;
        (best.technician_id, best.travel_minutes)
    } else {
        (ticket.technician_id.clone().unwrap_or_default(), 30.0)
    };
    if svc.ticket(who, id).await?.state == TicketState::WaitingParts {
        for transfer in svc.transfers(&Principal::system("demo"), Some(id)).await? {
            if transfer.state == "in_transit" {
                clock.not_before(transfer.eta_ms);
                svc.receive_transfer(who, &transfer.transfer_id).await?;
            }
        }
    }
    clock.advance(rng, 10.0, 60.0);
    svc.transition(who, id, TicketState::EnRoute, None, None)
        .await?;
    clock.advance(rng, travel_minutes.max(5.0), travel_minutes.max(5.0));
    svc.transition(who, id, TicketState::OnSite, None, None)
        .await?;
    clock.not_before(restored_ms);
    clock.advance(rng, 30.0, 120.0);
    svc.transition(who, id, TicketState::Resolved, None, None)
        .await?;
    let parts_used = svc
        .reservations_of(id)
        .await?
        .into_iter()
        .filter(|r| r.state == "active")
        .map(|r| PartUsed {
            sku: r.sku,
            quantity: r.quantity,
        })
        .collect();
    clock.advance(rng, 30.0, 240.0);
    // Mostly satisfied customers, a few lukewarm ones (3); ≤ 2 would open follow-ups.
    let satisfaction = 3 + (rng.next() % 3) as i64;
    svc.close_ticket(
        who,
        id,
        &ServiceReport {
            cause: cause.to_owned(),
            fix: match close_code {
                CloseCode::FalseAlarm => "inspected, no fault found".into(),
                _ => "replaced the worn component".into(),
            },
            parts_used,
            signed_off_by: technician,
            close_code,
            satisfaction: Some(satisfaction),
        },
    )
    .await?;
    Ok(true)
}

fn breakdown_ticket(source: TicketSource, device_id: &str, mode: &str) -> NewTicket {
    NewTicket {
        source: Some(source),
        title: Some(format!("Breakdown: {}", mode.replace('_', " "))),
        description: Some(match source {
            TicketSource::Import => "Machine stopped (imported from the service records)".into(),
            _ => "Machine stopped".into(),
        }),
        device_id: Some(device_id.to_owned()),
        failure_mode: Some(mode.to_owned()),
        contact_name: Some("Site operator".into()),
        contact_phone: Some("+1 555 0100".into()),
        ..NewTicket::default()
    }
}

/// Imports past breakdowns as corrective tickets (source `import`) that go through the real
/// workflow at their historic times (a manual clock): report, triage, the best-ranked
/// technician, parts reserved, travel, on site, resolved when the machine ran again, closed
/// with a confirmed report and a satisfaction score. Stock consumed by the past is then put
/// back to its level before the import (the replenishment deliveries of those years), so the
/// demo's network starts full. Returns the number of tickets closed.
pub async fn import_history(db: &Database, repairs: &[PastRepair], seed: u64) -> Result<usize> {
    let before: Vec<(String, String, i64)> =
        sqlx::query("SELECT location_id, sku, on_hand FROM stock")
            .fetch_all(db.pool())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    let clock = Arc::new(ManualClock::new(0));
    let svc = Service::with_clock(db.clone(), clock.clone());
    let who = Principal::system("history-import");
    let mut rng = DemoRng::seeded(seed ^ 0x5eed_4157);
    let mut sorted: Vec<&PastRepair> = repairs.iter().collect();
    sorted.sort_by_key(|r| (r.failed_ms, r.device_id.clone()));
    let mut closed = 0;
    for repair in sorted {
        let mut job = JobClock {
            manual: Some((&clock, repair.failed_ms)),
        };
        job.not_before(repair.failed_ms);
        let ticket = svc
            .create_ticket(
                &who,
                &breakdown_ticket(
                    TicketSource::Import,
                    &repair.device_id,
                    &repair.failure_mode,
                ),
            )
            .await?;
        let id = ticket.ticket_id;
        job.advance(&mut rng, 5.0, 40.0);
        svc.transition(&who, &id, TicketState::Triaged, None, None)
            .await?;
        if work_job(
            &svc,
            &who,
            &id,
            true,
            &repair.failure_mode,
            CloseCode::Confirmed,
            repair.restored_ms,
            &mut job,
            &mut rng,
        )
        .await?
        {
            closed += 1;
        }
    }
    for (location, sku, on_hand) in before {
        sqlx::query(
            "UPDATE stock SET on_hand = $3 WHERE location_id = $1 AND sku = $2 AND reserved <= $3",
        )
        .bind(location)
        .bind(sku)
        .bind(on_hand)
        .execute(db.pool())
        .await?;
    }
    Ok(closed)
}

/// What really happened to a device in a failure mode during the monitored weeks (the
/// simulator's ground truth): it failed, or was still degrading at the end.
#[derive(Debug, Clone)]
pub struct Truth {
    pub device_id: String,
    pub failure_mode: String,
    pub failed: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldWork {
    pub confirmed: usize,
    pub other_cause: usize,
    pub false_alarms: usize,
    /// Failures no predictive ticket warned of, reported by the customer and repaired.
    pub missed_repaired: usize,
    /// Dispatched tickets left open for the console's technician to work.
    pub left_open: usize,
}

/// Plays the field technicians at the end of the demo: every dispatched predictive ticket is
/// worked and closed with the close code the ground truth implies — confirmed when the device
/// really was degrading in that mode, other cause when in another mode, false alarm otherwise
/// — which feeds model accuracy back to the alerts; every real failure no predictive ticket
/// warned of arrives as a customer report and is repaired. The jobs of `keep_open_for` (a
/// technician id) stay open, so a person signed in as that technician has work to do.
pub async fn complete_field_work(
    db: &Database,
    truth: &[Truth],
    seed: u64,
    keep_open_for: Option<&str>,
) -> Result<FieldWork> {
    let svc = Service::new(db.clone());
    let who = Principal::system("demo-technicians");
    let mut rng = DemoRng::seeded(seed ^ 0xf1e1_d0c5);
    let mut job = JobClock { manual: None };
    let mut out = FieldWork::default();
    let rows = sqlx::query(
        "SELECT ticket_id, device_id, failure_mode, state, technician_id FROM tickets
          WHERE source = 'predictive' ORDER BY created_at_ms, ticket_id",
    )
    .fetch_all(db.pool())
    .await?;
    let mut warned: Vec<(String, String)> = Vec::new();
    for r in &rows {
        let (id, device, mode, state): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let technician: Option<String> = r.get(4);
        warned.push((device.clone(), mode.clone()));
        if !matches!(state.as_str(), "assigned" | "waiting_parts") {
            continue;
        }
        if keep_open_for.is_some() && technician.as_deref() == keep_open_for {
            out.left_open += 1;
            continue;
        }
        let same = truth
            .iter()
            .any(|t| t.device_id == device && t.failure_mode == mode);
        let other = truth.iter().any(|t| t.device_id == device);
        let (code, cause) = if same {
            (CloseCode::Confirmed, mode.clone())
        } else if let (true, Some(t)) = (other, truth.iter().find(|t| t.device_id == device)) {
            (CloseCode::OtherCause, t.failure_mode.clone())
        } else {
            (CloseCode::FalseAlarm, "no fault found".to_owned())
        };
        if work_job(&svc, &who, &id, false, &cause, code, 0, &mut job, &mut rng).await? {
            match code {
                CloseCode::Confirmed => out.confirmed += 1,
                CloseCode::OtherCause => out.other_cause += 1,
                CloseCode::FalseAlarm => out.false_alarms += 1,
            }
        }
    }
    for t in truth.iter().filter(|t| t.failed) {
        if warned
            .iter()
            .any(|(d, m)| *d == t.device_id && *m == t.failure_mode)
        {
            continue;
        }
        let ticket = svc
            .create_ticket(
                &who,
                &breakdown_ticket(TicketSource::CustomerForm, &t.device_id, &t.failure_mode),
            )
            .await?;
        svc.transition(&who, &ticket.ticket_id, TicketState::Triaged, None, None)
            .await?;
        if work_job(
            &svc,
            &who,
            &ticket.ticket_id,
            true,
            &t.failure_mode,
            CloseCode::Confirmed,
            0,
            &mut job,
            &mut rng,
        )
        .await?
        {
            out.missed_repaired += 1;
        }
        warned.push((t.device_id.clone(), t.failure_mode.clone()));
    }
    Ok(out)
}
