//! Domain tests against a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use prognos_models::alert::{Alert, AlertEvent, AlertEventKind, AlertState, Evidence, Severity};
use prognos_models::rul::RulEstimate;

use super::auth::{Principal, Role};
use super::dispatch::BatchRequest;
use super::parts::ReserveRequest;
use super::testutil::service;
use super::tickets::*;
use super::*;
use crate::alerts::AlertStore;
use crate::network::*;

fn admin() -> Principal {
    Principal::system("test")
}

fn as_role(role: Role, provider: Option<(&str, &str)>) -> Principal {
    Principal {
        key_id: format!("k-{}", role.as_str()),
        role,
        provider_id: provider.map(|p| p.0.to_owned()),
        provider_path: provider.map(|p| p.1.to_owned()),
        technician_id: None,
    }
}

/// A technician key bound to `technician` (of sp-north in [`network`]).
fn as_technician(technician: &str) -> Principal {
    Principal {
        key_id: format!("k-{technician}"),
        role: Role::Technician,
        provider_id: Some("sp-north".into()),
        provider_path: Some("/oem/agent-a/sp-north/".into()),
        technician_id: Some(technician.into()),
    }
}

/// oem → agent-a → sp-north (region north), oem → agent-b → sp-south (region south);
/// a north site with devices dev-1 (criticality 2) and dev-vip (VIP, criticality 3);
/// technicians n1 (bearing 5, near), n2 (bearing 2, far), s1 (south).
async fn network(svc: &Service) {
    for (id, kind, parent, regions) in [
        ("oem", ProviderKind::Oem, None, vec!["north", "south"]),
        ("agent-a", ProviderKind::Agent, Some("oem"), vec!["north"]),
        (
            "sp-north",
            ProviderKind::Provider,
            Some("agent-a"),
            vec!["north"],
        ),
        ("agent-b", ProviderKind::Agent, Some("oem"), vec!["south"]),
        (
            "sp-south",
            ProviderKind::Provider,
            Some("agent-b"),
            vec!["south"],
        ),
    ] {
        svc.create_provider(
            &admin(),
            &NewProvider {
                provider_id: Some(id.into()),
                name: id.into(),
                kind,
                parent_id: parent.map(Into::into),
                regions: regions.into_iter().map(Into::into).collect(),
            },
        )
        .await
        .unwrap();
    }
    for (id, vip) in [("cust", false), ("cust-vip", true)] {
        svc.create_customer(
            &admin(),
            &NewCustomer {
                customer_id: Some(id.into()),
                name: format!("Customer {id}"),
                tier: "standard".into(),
                vip,
                contact_email: Some("ops@example.com".into()),
            },
        )
        .await
        .unwrap();
    }
    for (site, cust, region, lat, lon) in [
        ("site-n", "cust", "north", 53.55, 10.0),
        ("site-vip", "cust-vip", "north", 53.6, 10.1),
        ("site-s", "cust", "south", 48.1, 11.6),
    ] {
        svc.create_site(
            &admin(),
            &NewSite {
                site_id: Some(site.into()),
                customer_id: cust.into(),
                name: site.into(),
                region: region.into(),
                lat,
                lon,
                address: None,
            },
        )
        .await
        .unwrap();
    }
    for (dev, site, crit) in [
        ("dev-1", "site-n", 2),
        ("dev-2", "site-n", 2),
        ("dev-vip", "site-vip", 3),
        ("dev-s", "site-s", 1),
    ] {
        svc.create_device(
            &admin(),
            &NewServiceDevice {
                device_id: dev.into(),
                site_id: site.into(),
                serial: format!("SN-{dev}"),
                model: "P100".into(),
                batch: Some("B1".into()),
                firmware: None,
                install_date: None,
                warranty_end: None,
                criticality: crit,
                vip: false,
            },
        )
        .await
        .unwrap();
    }
    for (id, prov, region, lat, lon, level, load) in [
        ("n1", "sp-north", "north", 53.5, 10.0, 5, 2),
        ("n2", "sp-north", "north", 52.0, 9.0, 2, 2),
        ("s1", "sp-south", "south", 48.1, 11.6, 5, 2),
    ] {
        svc.create_technician(
            &admin(),
            &NewTechnician {
                technician_id: Some(id.into()),
                provider_id: prov.into(),
                name: format!("Tech {id}"),
                region: region.into(),
                home_lat: lat,
                home_lon: lon,
                skills: vec![Skill {
                    skill: "bearing_wear".into(),
                    level,
                }],
                shift_start_min: 480,
                shift_end_min: 1020,
                max_daily_load: load,
            },
        )
        .await
        .unwrap();
    }
    svc.create_part(
        &admin(),
        &Part {
            sku: "BRG".into(),
            name: "Bearing kit".into(),
            compatible_models: vec!["P100".into()],
            fixes_modes: vec!["bearing_wear".into()],
            unit_cost: 180.0,
            abc_class: "A".into(),
        },
    )
    .await
    .unwrap();
    for (id, kind, lat, lon) in [
        ("central", LocationKind::Central, 51.0, 10.0),
        ("wh-north", LocationKind::Regional, 53.4, 10.0),
    ] {
        svc.create_location(
            &admin(),
            &NewLocation {
                location_id: Some(id.into()),
                kind,
                name: id.into(),
                region: None,
                lat,
                lon,
                provider_id: None,
            },
        )
        .await
        .unwrap();
    }
    svc.set_stock(&admin(), "central", "BRG", 20, None)
        .await
        .unwrap();
    svc.set_stock(&admin(), "wh-north", "BRG", 2, None)
        .await
        .unwrap();
    svc.set_stock(&admin(), "van-n1", "BRG", 1, None)
        .await
        .unwrap();
}

fn api_ticket(device: &str) -> NewTicket {
    NewTicket {
        source: Some(TicketSource::Api),
        title: Some("Noisy bearing".into()),
        device_id: Some(device.into()),
        failure_mode: Some("bearing_wear".into()),
        ..Default::default()
    }
}

fn alert(device: &str, kind: AlertEventKind, rul_lower: Option<f64>, sev: Severity) -> AlertEvent {
    AlertEvent {
        kind,
        alert: Alert {
            id: 1,
            device_id: device.into(),
            failure_mode: "bearing_wear".into(),
            state: AlertState::Open,
            severity: sev,
            started_at_ms: 1_000,
            opened_at_ms: 2_000,
            acknowledged_at_ms: None,
            resolved_at_ms: None,
            last_anomalous_ms: 2_000,
            occurrences: 1,
            peak_score: 0.9,
            evidence: Evidence {
                detector: "robust_z".into(),
                score: 0.9,
                ratio: 2.0,
                rul_hours: rul_lower.map(|l| RulEstimate {
                    rul: l * 2.0,
                    lower: l,
                    upper: l * 4.0,
                }),
                ..Default::default()
            },
        },
    }
}

async fn events(svc: &Service, id: &str) -> Vec<TicketEvent> {
    svc.ticket_events(&admin(), id).await.unwrap()
}

#[test]
fn state_machine_table() {
    use TicketState::*;
    let legal = [
        (New, Triaged),
        (Triaged, Assigned),
        (Assigned, EnRoute),
        (EnRoute, OnSite),
        (OnSite, Resolved),
        (Resolved, Closed),
        (Triaged, WaitingParts),
        (WaitingParts, Assigned),
        (OnSite, WaitingParts),
        (New, Cancelled),
        (Assigned, Cancelled),
    ];
    for (a, b) in legal {
        assert!(a.can_move_to(b), "{a:?} → {b:?} should be legal");
    }
    let illegal = [
        (New, Assigned),
        (New, Closed),
        (Triaged, OnSite),
        (Closed, New),
        (Cancelled, Triaged),
        (OnSite, Cancelled),
        (Resolved, Cancelled),
    ];
    for (a, b) in illegal {
        assert!(!a.can_move_to(b), "{a:?} → {b:?} should be illegal");
    }
    for s in TicketState::ALL {
        assert!(!s.can_move_to(s), "no self loops");
        assert_eq!(TicketState::parse(s.as_str()), Some(s));
    }
}

#[tokio::test]
async fn ticket_lifecycle_audit_and_tracking() {
    let (_d, svc, clock) = service().await;
    network(&svc).await;
    // Mandatory fields by channel.
    let err = svc
        .create_ticket(
            &admin(),
            &NewTicket {
                source: Some(TicketSource::CustomerForm),
                device_id: Some("dev-1".into()),
                description: Some("it rattles".into()),
                contact_name: Some("Ann".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "contact_phone"));
    let err = svc
        .create_ticket(&admin(), &NewTicket::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "title"));
    let err = svc
        .create_ticket(&admin(), &api_ticket("nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::UnknownReference { ref field, .. } if field == "device_id")
    );

    let t = svc
        .create_ticket(
            &admin(),
            &NewTicket {
                source: Some(TicketSource::CustomerForm),
                device_id: Some("dev-1".into()),
                description: Some("it rattles".into()),
                contact_name: Some("Ann Example".into()),
                contact_phone: Some("+49 40 123456".into()),
                failure_mode: Some("bearing_wear".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.state, TicketState::New);
    assert_eq!(t.provider_id.as_deref(), Some("sp-north"));
    assert_eq!(t.priority, Priority::Normal);
    assert_eq!(t.parts_needed, vec!["BRG".to_owned()]);
    assert_eq!(t.sla.phase, "response");
    // Normal: 8 h response.
    assert_eq!(t.raw.response_due_ms - t.raw.created_at_ms, 8 * 3600 * 1000);

    // Illegal move: rejected with the allowed ones, nothing written.
    let before = events(&svc, &t.ticket_id).await.len();
    let err = svc
        .transition(&admin(), &t.ticket_id, TicketState::OnSite, None, None)
        .await
        .unwrap_err();
    match err {
        ServiceError::IllegalTransition { from, allowed, .. } => {
            assert_eq!(from, "new");
            assert_eq!(allowed, vec!["triaged", "cancelled"]);
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(events(&svc, &t.ticket_id).await.len(), before);
    // Assigning without a technician names the field.
    svc.transition(
        &admin(),
        &t.ticket_id,
        TicketState::Triaged,
        Some("looked"),
        None,
    )
    .await
    .unwrap();
    let err = svc
        .transition(&admin(), &t.ticket_id, TicketState::Assigned, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "technician_id"));
    clock.advance_secs(60);
    svc.transition(
        &admin(),
        &t.ticket_id,
        TicketState::Assigned,
        None,
        Some("n1"),
    )
    .await
    .unwrap();
    for to in [
        TicketState::EnRoute,
        TicketState::OnSite,
        TicketState::Resolved,
    ] {
        clock.advance_secs(60);
        svc.transition(&as_technician("n1"), &t.ticket_id, to, None, None)
            .await
            .unwrap();
    }
    // Closing goes through the report.
    let err = svc
        .transition(&admin(), &t.ticket_id, TicketState::Closed, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "to"));
    let closed = svc
        .close_ticket(
            &admin(),
            &t.ticket_id,
            &ServiceReport {
                cause: "worn bearing".into(),
                fix: "replaced".into(),
                parts_used: vec![],
                signed_off_by: "Ann Example".into(),
                close_code: CloseCode::Confirmed,
                satisfaction: Some(5),
            },
        )
        .await
        .unwrap();
    assert_eq!(closed.state, TicketState::Closed);
    assert_eq!(closed.satisfaction, Some(5));
    assert_eq!(closed.sla.phase, "stopped");

    let trail = events(&svc, &t.ticket_id).await;
    let moves: Vec<_> = trail
        .iter()
        .filter(|e| e.kind == "transition")
        .map(|e| (e.from_state.clone().unwrap(), e.to_state.clone().unwrap()))
        .collect();
    assert_eq!(moves.len(), 6);
    assert_eq!(moves[0], ("new".into(), "triaged".into()));
    assert_eq!(moves[5], ("resolved".into(), "closed".into()));
    assert!(
        trail
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].at_ms <= w[1].at_ms)
    );
    assert!(trail.iter().all(|e| !e.actor.is_empty()));

    // The public page: timeline, no personal data.
    let tracking = svc
        .track(&closed.tracking_code.to_lowercase())
        .await
        .unwrap();
    assert_eq!(tracking.state, TicketState::Closed);
    assert_eq!(tracking.timeline.len(), 7);
    let text = serde_json::to_string(&tracking).unwrap();
    for secret in ["Ann", "+49", "example.com", "looked", "n1", "dev-1"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(matches!(
        svc.track("NOPE").await,
        Err(ServiceError::NotFound { .. })
    ));
}

#[tokio::test]
async fn vip_raises_priority_and_premium_tier_tightens_sla() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let t = svc
        .create_ticket(&admin(), &api_ticket("dev-vip"))
        .await
        .unwrap();
    assert_eq!(t.priority, Priority::Major);
    assert_eq!(t.raw.response_due_ms - t.raw.created_at_ms, 4 * 3600 * 1000);
}

#[tokio::test]
async fn predictive_tickets_one_per_problem_with_evidence_and_feedback() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let store = AlertStore::new(svc.db.clone());
    let ev = alert(
        "dev-1",
        AlertEventKind::Opened,
        Some(100.0),
        Severity::Medium,
    );
    let alert_id = store.apply(&ev).await.unwrap();
    let id = svc.apply_alert_event(&ev).await.unwrap().unwrap();
    let t = svc.ticket(&admin(), &id).await.unwrap();
    assert_eq!(t.source, "predictive");
    assert_eq!(t.priority, Priority::Major, "RUL lower 100 h < 7 days");
    assert_eq!(t.rul_lower_hours, Some(100.0));
    assert_eq!(t.alert_id.as_deref(), Some(alert_id.as_str()));
    assert_eq!(t.evidence.as_ref().unwrap()["detector"], "robust_z");
    assert_eq!(t.parts_needed, vec!["BRG".to_owned()]);

    // The same problem again: the open ticket is updated, priority only rises.
    let worse = alert(
        "dev-1",
        AlertEventKind::Escalated,
        Some(10.0),
        Severity::High,
    );
    assert_eq!(
        svc.apply_alert_event(&worse).await.unwrap(),
        Some(id.clone())
    );
    let t = svc.ticket(&admin(), &id).await.unwrap();
    assert_eq!(t.priority, Priority::Emergency);
    assert_eq!(t.rul_lower_hours, Some(10.0));
    let again = alert("dev-1", AlertEventKind::Opened, Some(500.0), Severity::Low);
    assert_eq!(
        svc.apply_alert_event(&again).await.unwrap(),
        Some(id.clone())
    );
    assert_eq!(
        svc.ticket(&admin(), &id).await.unwrap().priority,
        Priority::Emergency
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tickets")
        .fetch_one(svc.pool())
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Concurrent openings for another device still give one ticket.
    let ev2 = alert("dev-2", AlertEventKind::Opened, None, Severity::High);
    let (a, b) = tokio::join!(svc.apply_alert_event(&ev2), svc.apply_alert_event(&ev2));
    assert_eq!(a.unwrap(), b.unwrap());

    // Criticality 3 raises, criticality 1 lowers.
    let vip = svc
        .apply_alert_event(&alert(
            "dev-s",
            AlertEventKind::Opened,
            Some(100.0),
            Severity::Medium,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        svc.ticket(&admin(), &vip).await.unwrap().priority,
        Priority::Normal
    );

    // Close as a false alarm: the code flows back to the alert row.
    for to in [TicketState::Triaged] {
        svc.transition(&admin(), &id, to, None, None).await.unwrap();
    }
    svc.transition(&admin(), &id, TicketState::Assigned, None, Some("n1"))
        .await
        .unwrap();
    for to in [
        TicketState::EnRoute,
        TicketState::OnSite,
        TicketState::Resolved,
    ] {
        svc.transition(&admin(), &id, to, None, None).await.unwrap();
    }
    svc.close_ticket(
        &admin(),
        &id,
        &ServiceReport {
            cause: "sensor loose".into(),
            fix: "re-mounted sensor".into(),
            parts_used: vec![],
            signed_off_by: "site lead".into(),
            close_code: CloseCode::FalseAlarm,
            satisfaction: None,
        },
    )
    .await
    .unwrap();
    let rows = store.list(None, Some("dev-1"), 10).await.unwrap();
    assert_eq!(rows[0].close_code.as_deref(), Some("false_alarm"));
    // A new alert after closing is a new ticket.
    let next = svc.apply_alert_event(&ev).await.unwrap().unwrap();
    assert_ne!(next, id);
}

/// A technician's report on a learned (generic) alert reaches the online
/// monitor with the alert's pattern and, when the cause names one, the
/// failure found.
#[tokio::test]
async fn repair_reports_feed_the_pattern_and_the_failure_found_back() {
    use crate::online::{Control, repair_feedback};
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let store = AlertStore::new(svc.db.clone());
    let mut ids = Vec::new();
    for (device, cause, code) in [
        ("dev-1", "spindle_wear", CloseCode::Confirmed),
        ("dev-2", "Loose cable on the sensor", CloseCode::FalseAlarm),
    ] {
        let mut ev = alert(device, AlertEventKind::Opened, None, Severity::Medium);
        ev.alert.failure_mode = "anomaly".into();
        ev.alert.evidence.detector = "learned/regime".into();
        ev.alert.evidence.metrics = [
            ("score_sigma.amps".to_string(), 2.5),
            ("score_sigma.spindle_temp".to_string(), -6.0),
            ("deviation_sigma.spindle_temp".to_string(), -6.0),
        ]
        .into_iter()
        .collect();
        store.apply(&ev).await.unwrap();
        let id = svc.apply_alert_event(&ev).await.unwrap().unwrap();
        svc.transition(&admin(), &id, TicketState::Triaged, None, None)
            .await
            .unwrap();
        svc.transition(&admin(), &id, TicketState::Assigned, None, Some("n1"))
            .await
            .unwrap();
        for to in [
            TicketState::EnRoute,
            TicketState::OnSite,
            TicketState::Resolved,
        ] {
            svc.transition(&admin(), &id, to, None, None).await.unwrap();
        }
        svc.close_ticket(
            &admin(),
            &id,
            &ServiceReport {
                cause: cause.into(),
                fix: "done".into(),
                parts_used: vec![],
                signed_off_by: "site lead".into(),
                close_code: code,
                satisfaction: None,
            },
        )
        .await
        .unwrap();
        ids.push(id);
    }
    let (controls, cursor) = repair_feedback(&svc, &(i64::MIN, String::new()))
        .await
        .unwrap();
    let got: Vec<(String, Option<String>, Option<String>)> = controls
        .into_iter()
        .map(|c| match c {
            Control::Feedback {
                close_code,
                pattern,
                found_mode,
                failure_mode,
                ..
            } => {
                assert_eq!(failure_mode, "anomaly");
                (close_code, pattern, found_mode)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&(
        "confirmed".into(),
        Some("spindle_temp-".into()),
        Some("spindle_wear".into())
    )));
    assert!(got.contains(&("false_alarm".into(), Some("spindle_temp-".into()), None)));
    // Read once: the cursor moved past both reports.
    assert!(repair_feedback(&svc, &cursor).await.unwrap().0.is_empty());
}

#[tokio::test]
async fn the_sla_clock_stops_while_waiting_for_parts() {
    let (_d, svc, clock) = service().await;
    network(&svc).await;
    svc.set_sla_policy(
        &admin(),
        &sla::SlaPolicy {
            priority: Priority::Normal,
            tier: "standard".into(),
            response_secs: 100,
            onsite_secs: 1000,
        },
    )
    .await
    .unwrap();
    let t = svc
        .create_ticket(&admin(), &api_ticket("dev-1"))
        .await
        .unwrap();
    let onsite_due = t.raw.onsite_due_ms;
    for to in [TicketState::Triaged, TicketState::WaitingParts] {
        svc.transition(&admin(), &t.ticket_id, to, None, None)
            .await
            .unwrap();
    }
    // Far past the on-site window while the part is on its way: no warning, no breach.
    clock.advance_secs(5000);
    assert_eq!(svc.sla_tick().await.unwrap(), sla::SlaTick::default());
    let waiting = svc.ticket(&admin(), &t.ticket_id).await.unwrap();
    assert_eq!(waiting.sla.phase, "paused");
    // The part arrived: the deadline moved back by exactly the time spent waiting.
    let resumed = svc
        .transition(&admin(), &t.ticket_id, TicketState::Triaged, None, None)
        .await
        .unwrap();
    assert_eq!(resumed.raw.onsite_due_ms, onsite_due + 5_000_000);
    assert_eq!(resumed.sla.status, "ok");
}

#[tokio::test]
async fn sla_warns_at_80_percent_and_escalates_at_breach() {
    let (_d, svc, clock) = service().await;
    network(&svc).await;
    // Configurable down to seconds.
    svc.set_sla_policy(
        &admin(),
        &sla::SlaPolicy {
            priority: Priority::Normal,
            tier: "standard".into(),
            response_secs: 100,
            onsite_secs: 1000,
        },
    )
    .await
    .unwrap();
    let t = svc
        .create_ticket(&admin(), &api_ticket("dev-1"))
        .await
        .unwrap();
    assert_eq!(t.raw.response_due_ms - t.raw.created_at_ms, 100_000);
    clock.advance_secs(79);
    assert_eq!(svc.sla_tick().await.unwrap(), sla::SlaTick::default());
    clock.advance_secs(1);
    let tick = svc.sla_tick().await.unwrap();
    assert_eq!((tick.warnings, tick.breaches), (1, 0));
    assert_eq!(
        svc.sla_tick().await.unwrap(),
        sla::SlaTick::default(),
        "warn once"
    );
    let t1 = svc.ticket(&admin(), &t.ticket_id).await.unwrap();
    assert_eq!(t1.sla.status, "warning");
    clock.advance_secs(20);
    let tick = svc.sla_tick().await.unwrap();
    assert_eq!((tick.warnings, tick.breaches), (0, 1));
    let t2 = svc.ticket(&admin(), &t.ticket_id).await.unwrap();
    assert_eq!(t2.priority, Priority::Major);
    assert_eq!(t2.escalated_to.as_deref(), Some("agent-a"));
    assert!(t2.sla.response_breached);
    assert_eq!(t2.sla.escalation_level, 1);
    let trail = events(&svc, &t.ticket_id).await;
    assert!(trail.iter().any(|e| e.kind == "sla_warning"));
    assert!(trail.iter().any(|e| e.kind == "sla_breach"));
    assert!(
        trail
            .iter()
            .any(|e| e.kind == "escalation" && e.note.as_deref().unwrap_or("").contains("agent-a"))
    );
    // Responding stops the response clock; the on-site one keeps running and escalates again.
    svc.transition(&admin(), &t.ticket_id, TicketState::Triaged, None, None)
        .await
        .unwrap();
    clock.advance_secs(900);
    let tick = svc.sla_tick().await.unwrap();
    assert_eq!(tick.breaches, 1);
    let t3 = svc.ticket(&admin(), &t.ticket_id).await.unwrap();
    assert_eq!(t3.priority, Priority::Emergency);
    assert_eq!(t3.escalated_to.as_deref(), Some("oem"));
    assert!(t3.sla.onsite_breached);
    // The agent sees the escalated ticket (its subtree), the other agent does not.
    let agent_a = as_role(Role::Provider, Some(("agent-a", "/oem/agent-a/")));
    let agent_b = as_role(Role::Provider, Some(("agent-b", "/oem/agent-b/")));
    assert!(svc.ticket(&agent_a, &t.ticket_id).await.is_ok());
    assert!(matches!(
        svc.ticket(&agent_b, &t.ticket_id).await,
        Err(ServiceError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_oversell() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    svc.set_stock(&admin(), "central", "BRG", 10, None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.reserve(
                &admin(),
                &ReserveRequest {
                    sku: "BRG".into(),
                    location_id: "central".into(),
                    quantity: 1,
                    ticket_id: None,
                },
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut short = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(ServiceError::InsufficientStock { available, .. }) => {
                assert_eq!(available, 0);
                short += 1
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!((ok, short), (10, 40));
    let level = svc.stock_level("central", "BRG").await.unwrap();
    assert_eq!(
        (level.on_hand, level.reserved, level.available),
        (10, 10, 0)
    );
    let active: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0) FROM reservations WHERE state = 'active'",
    )
    .fetch_one(svc.pool())
    .await
    .unwrap();
    assert_eq!(active, 10);
}

#[tokio::test]
async fn reserve_release_consume_and_errors() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let req = |q| ReserveRequest {
        sku: "BRG".into(),
        location_id: "wh-north".into(),
        quantity: q,
        ticket_id: None,
    };
    assert!(matches!(
        svc.reserve(&admin(), &req(0)).await,
        Err(ServiceError::Validation { .. })
    ));
    assert!(matches!(
        svc.reserve(&admin(), &req(3)).await,
        Err(ServiceError::InsufficientStock { available: 2, .. })
    ));
    let r = svc.reserve(&admin(), &req(2)).await.unwrap();
    assert_eq!(
        svc.stock_level("wh-north", "BRG").await.unwrap().available,
        0
    );
    svc.finish_reservation(&admin(), &r.reservation_id, false)
        .await
        .unwrap();
    assert!(matches!(
        svc.finish_reservation(&admin(), &r.reservation_id, true)
            .await,
        Err(ServiceError::Conflict(_))
    ));
    let r = svc.reserve(&admin(), &req(1)).await.unwrap();
    svc.finish_reservation(&admin(), &r.reservation_id, true)
        .await
        .unwrap();
    let l = svc.stock_level("wh-north", "BRG").await.unwrap();
    assert_eq!((l.on_hand, l.reserved), (1, 0));
    // Unknown part or location: not found.
    let bad = ReserveRequest {
        sku: "NOPE".into(),
        ..req(1)
    };
    assert!(matches!(
        svc.reserve(&admin(), &bad).await,
        Err(ServiceError::NotFound { .. })
    ));
    // Below the reorder point (A class, regional: 2) → a reorder line.
    let lines = svc.reorder_report(&admin()).await.unwrap();
    let line = lines.iter().find(|l| l.location_id == "wh-north").unwrap();
    assert_eq!(line.available, 1);
    assert!(line.order_quantity >= 2);
}

#[tokio::test]
async fn candidates_are_ranked_and_explained() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let t = svc
        .create_ticket(&admin(), &api_ticket("dev-1"))
        .await
        .unwrap();
    let ranked = svc
        .candidates(&admin(), &t.ticket_id, Some(10))
        .await
        .unwrap();
    let ids: Vec<_> = ranked.iter().map(|c| c.technician_id.as_str()).collect();
    assert_eq!(ids, vec!["n1", "n2"], "south technician is not eligible");
    let best = &ranked[0];
    assert_eq!(best.factors.len(), 6);
    assert!(best.factors.iter().any(|f| f.factor == "shift"));
    let sum: f64 = best.factors.iter().map(|f| f.contribution).sum();
    assert!((sum - best.score).abs() < 1e-6);
    assert!(
        best.factors
            .iter()
            .any(|f| f.factor == "parts" && f.value == 1.0)
    );
    assert!(
        ranked[1]
            .factors
            .iter()
            .any(|f| f.factor == "parts" && f.value < 1.0)
    );
    let all = svc.candidates(&admin(), &t.ticket_id, None).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(!all[2].eligible && all[2].reasons.iter().any(|r| r.contains("region")));
}

#[tokio::test]
async fn batch_dispatch_respects_capacity_reserves_parts_and_transfers() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let mut ids = Vec::new();
    for dev in ["dev-1", "dev-2", "dev-vip", "dev-1", "dev-2"] {
        ids.push(
            svc.create_ticket(&admin(), &api_ticket(dev))
                .await
                .unwrap()
                .ticket_id,
        );
    }
    // North has n1 (2 slots) and n2 (2 slots): 4 of 5 tickets can be assigned.
    let result = svc
        .dispatch_batch(
            &admin(),
            &BatchRequest {
                ticket_ids: ids.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(result.assignments.len(), 4);
    assert_eq!(result.unassigned.len(), 1);
    for tech in ["n1", "n2"] {
        assert_eq!(
            result
                .assignments
                .iter()
                .filter(|a| a.technician_id == tech)
                .count(),
            2
        );
    }
    // The VIP (major) ticket is never the one left out.
    let vip = &ids[2];
    assert!(!result.unassigned.contains(vip));
    // n1's van had one kit: one ticket got it, the others wait for transfers.
    let from_van = result
        .assignments
        .iter()
        .flat_map(|a| &a.parts)
        .filter(|p| p.source == "van")
        .count();
    assert_eq!(from_van, 1);
    let waiting: Vec<_> = result
        .assignments
        .iter()
        .filter(|a| a.state == TicketState::WaitingParts)
        .collect();
    assert_eq!(waiting.len(), 3);
    let transfers = svc.transfers(&admin(), None).await.unwrap();
    assert_eq!(transfers.len(), 3);
    // The nearest holder (wh-north, 2 in stock) ships first, then central.
    assert_eq!(
        transfers
            .iter()
            .filter(|t| t.from_location_id == "wh-north")
            .count(),
        2
    );
    assert_eq!(
        svc.stock_level("wh-north", "BRG").await.unwrap().available,
        0
    );
    // Receiving a transfer moves stock to the van and the ticket back to assigned.
    let tr = &transfers[0];
    let reserved_before = svc
        .stock_level(&tr.to_location_id, "BRG")
        .await
        .map(|l| l.reserved)
        .unwrap_or(0);
    svc.receive_transfer(&admin(), &tr.transfer_id)
        .await
        .unwrap();
    let t = svc
        .ticket(&admin(), tr.ticket_id.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(t.state, TicketState::Assigned);
    let van = svc.stock_level(&tr.to_location_id, "BRG").await.unwrap();
    assert_eq!(van.reserved, reserved_before + 1);
    assert!(matches!(
        svc.receive_transfer(&admin(), &tr.transfer_id).await,
        Err(ServiceError::Conflict(_))
    ));
    // Dispatching an already assigned ticket again is a conflict and writes nothing.
    let before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ticket_events")
        .fetch_one(svc.pool())
        .await
        .unwrap();
    let err = svc
        .dispatch_batch(
            &admin(),
            &BatchRequest {
                ticket_ids: ids.clone(),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Conflict(_)));
    let after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ticket_events")
        .fetch_one(svc.pool())
        .await
        .unwrap();
    assert_eq!(before, after);
    // Cancelling releases held parts.
    let a = result
        .assignments
        .iter()
        .find(|a| a.parts.iter().any(|p| p.source == "van"))
        .unwrap();
    let held = svc.stock_level("van-n1", "BRG").await.unwrap().reserved;
    svc.transition(&admin(), &a.ticket_id, TicketState::Cancelled, None, None)
        .await
        .unwrap();
    assert_eq!(
        svc.stock_level("van-n1", "BRG").await.unwrap().reserved,
        held - 1
    );
}

#[tokio::test]
async fn close_consumes_parts_and_low_satisfaction_opens_follow_up() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let t = svc
        .create_ticket(&admin(), &api_ticket("dev-1"))
        .await
        .unwrap();
    let (t, plan) = svc
        .assign(&admin(), &t.ticket_id, "n1", None)
        .await
        .unwrap();
    assert_eq!(t.state, TicketState::Assigned);
    assert_eq!(plan[0].source, "van");
    for to in [
        TicketState::EnRoute,
        TicketState::OnSite,
        TicketState::Resolved,
    ] {
        svc.transition(&admin(), &t.ticket_id, to, None, None)
            .await
            .unwrap();
    }
    // More parts than held and carried: refused, nothing written.
    let too_many = ServiceReport {
        cause: "bearing".into(),
        fix: "replaced".into(),
        parts_used: vec![PartUsed {
            sku: "BRG".into(),
            quantity: 5,
        }],
        signed_off_by: "cust".into(),
        close_code: CloseCode::Confirmed,
        satisfaction: None,
    };
    let err = svc
        .close_ticket(&admin(), &t.ticket_id, &too_many)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "parts_used[0]"));
    assert_eq!(
        svc.ticket(&admin(), &t.ticket_id).await.unwrap().state,
        TicketState::Resolved
    );
    let report = ServiceReport {
        parts_used: vec![PartUsed {
            sku: "BRG".into(),
            quantity: 1,
        }],
        ..too_many
    };
    svc.close_ticket(&admin(), &t.ticket_id, &report)
        .await
        .unwrap();
    let van = svc.stock_level("van-n1", "BRG").await.unwrap();
    assert_eq!((van.on_hand, van.reserved), (0, 0));
    let follow = svc
        .rate_by_tracking_code(&t.tracking_code, 2, Some("came late"))
        .await
        .unwrap()
        .unwrap();
    let f = svc.ticket(&admin(), &follow).await.unwrap();
    assert_eq!(f.source, "follow_up");
    assert_eq!(f.parent_ticket_id.as_deref(), Some(t.ticket_id.as_str()));
    assert_eq!(f.priority, Priority::Major);
    assert!(matches!(
        svc.rate_by_tracking_code(&t.tracking_code, 5, None).await,
        Err(ServiceError::Conflict(_))
    ));
    assert!(matches!(
        svc.rate_by_tracking_code(&t.tracking_code, 9, None).await,
        Err(ServiceError::Validation { .. })
    ));
}

#[tokio::test]
async fn authorisation_matrix_and_provider_subtrees() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let north = as_role(Role::Provider, Some(("sp-north", "/oem/agent-a/sp-north/")));
    let south = as_role(Role::Provider, Some(("sp-south", "/oem/agent-b/sp-south/")));
    let oem = as_role(Role::Provider, Some(("oem", "/oem/")));
    let engineer = as_role(Role::Engineer, None);
    let technician = as_role(Role::Technician, None);
    let scheduler = as_role(Role::Scheduler, None);

    let t = svc
        .create_ticket(&north, &api_ticket("dev-1"))
        .await
        .unwrap();
    assert!(matches!(
        svc.create_ticket(&south, &api_ticket("dev-1")).await,
        Err(ServiceError::Forbidden(_))
    ));
    // Visibility.
    assert!(svc.ticket(&north, &t.ticket_id).await.is_ok());
    assert!(svc.ticket(&oem, &t.ticket_id).await.is_ok());
    assert!(matches!(
        svc.ticket(&south, &t.ticket_id).await,
        Err(ServiceError::NotFound { .. })
    ));
    let f = TicketFilter::default();
    assert_eq!(
        svc.tickets(&north, &f, Page::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        svc.tickets(&south, &f, Page::default())
            .await
            .unwrap()
            .items
            .len(),
        0
    );
    assert!(matches!(
        svc.transition(&south, &t.ticket_id, TicketState::Triaged, None, None)
            .await,
        Err(ServiceError::NotFound { .. })
    ));
    // Roles.
    assert!(matches!(
        svc.transition(&engineer, &t.ticket_id, TicketState::Triaged, None, None)
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(
        svc.transition(&technician, &t.ticket_id, TicketState::Triaged, None, None)
            .await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(
        svc.candidates(&engineer, &t.ticket_id, None).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(matches!(
        svc.candidates(&technician, &t.ticket_id, None).await,
        Err(ServiceError::Forbidden(_))
    ));
    assert!(svc.candidates(&scheduler, &t.ticket_id, None).await.is_ok());
    // A provider dispatches only its own technicians.
    let c = svc.candidates(&north, &t.ticket_id, None).await.unwrap();
    assert!(c.iter().all(|c| c.provider_id == "sp-north"));
    assert!(matches!(
        svc.assign(&north, &t.ticket_id, "s1", None).await,
        Err(ServiceError::UnknownReference { ref field, .. }) if field == "technician_id"
    ));
    assert!(matches!(
        svc.dispatch_batch(
            &south,
            &BatchRequest {
                ticket_ids: vec![t.ticket_id.clone()]
            }
        )
        .await,
        Err(ServiceError::NotFound { .. })
    ));
    svc.transition(&north, &t.ticket_id, TicketState::Triaged, None, None)
        .await
        .unwrap();
    // Reservations against another provider's ticket: not found.
    assert!(matches!(
        svc.reserve(
            &south,
            &ReserveRequest {
                sku: "BRG".into(),
                location_id: "central".into(),
                quantity: 1,
                ticket_id: Some(t.ticket_id.clone()),
            }
        )
        .await,
        Err(ServiceError::NotFound { .. })
    ));
    assert!(matches!(
        svc.reserve(
            &engineer,
            &ReserveRequest {
                sku: "BRG".into(),
                location_id: "central".into(),
                quantity: 1,
                ticket_id: None,
            }
        )
        .await,
        Err(ServiceError::Forbidden(_))
    ));
}

// Webhook delivery (signing, backoff, order) needs the real transport, which lives in
// prognos-http: see `webhooks_are_signed_and_retried_with_backoff` in api/http/src/tests.rs.

#[tokio::test]
async fn prepositioning_moves_stock_toward_predicted_failures() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    // Empty the regional warehouse; two predicted bearing failures near it.
    svc.set_stock(&admin(), "wh-north", "BRG", 0, Some(0))
        .await
        .unwrap();
    svc.set_stock(&admin(), "van-n1", "BRG", 0, None)
        .await
        .unwrap();
    for dev in ["dev-1", "dev-2"] {
        svc.apply_alert_event(&alert(
            dev,
            AlertEventKind::Opened,
            Some(200.0),
            Severity::Medium,
        ))
        .await
        .unwrap();
    }
    let proposals = svc.preposition_proposals(&admin(), 720.0).await.unwrap();
    assert_eq!(proposals.len(), 1, "{proposals:?}");
    let p = &proposals[0];
    assert_eq!(p.to_location_id, "wh-north");
    assert_eq!(p.from_location_id.as_deref(), Some("central"));
    assert_eq!(p.quantity, 2);
    assert_eq!(p.tickets.len(), 2);
    assert!(
        svc.preposition_proposals(&admin(), 100.0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn clock_is_injectable() {
    let clock = Arc::new(ManualClock::new(5));
    clock.advance_secs(2);
    assert_eq!(clock.now_ms(), 2005);
}

/// Throughput and latency at scale; run with
/// `cargo test -p prognos-api --release -- --ignored --nocapture scale_numbers`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn scale_numbers() {
    use std::time::Instant;
    let (_d, svc, _c) = service().await;
    let regions = ["r0", "r1", "r2", "r3", "r4"];
    svc.create_provider(
        &admin(),
        &NewProvider {
            provider_id: Some("oem".into()),
            name: "oem".into(),
            kind: ProviderKind::Oem,
            parent_id: None,
            regions: regions.iter().map(|r| r.to_string()).collect(),
        },
    )
    .await
    .unwrap();
    svc.create_customer(
        &admin(),
        &NewCustomer {
            customer_id: Some("c".into()),
            name: "c".into(),
            tier: "standard".into(),
            vip: false,
            contact_email: None,
        },
    )
    .await
    .unwrap();
    svc.create_part(
        &admin(),
        &Part {
            sku: "BRG".into(),
            name: "kit".into(),
            compatible_models: vec![],
            fixes_modes: vec!["bearing_wear".into()],
            unit_cost: 1.0,
            abc_class: "C".into(),
        },
    )
    .await
    .unwrap();
    svc.create_location(
        &admin(),
        &NewLocation {
            location_id: Some("central".into()),
            kind: LocationKind::Central,
            name: "c".into(),
            region: None,
            lat: 50.0,
            lon: 10.0,
            provider_id: None,
        },
    )
    .await
    .unwrap();
    svc.set_stock(&admin(), "central", "BRG", 5000, None)
        .await
        .unwrap();
    for (ri, r) in regions.iter().enumerate() {
        let sp = format!("sp-{r}");
        svc.create_provider(
            &admin(),
            &NewProvider {
                provider_id: Some(sp.clone()),
                name: sp.clone(),
                kind: ProviderKind::Provider,
                parent_id: Some("oem".into()),
                regions: vec![r.to_string()],
            },
        )
        .await
        .unwrap();
        for i in 0..40 {
            let t = svc
                .create_technician(
                    &admin(),
                    &NewTechnician {
                        technician_id: Some(format!("t-{r}-{i}")),
                        provider_id: sp.clone(),
                        name: "t".into(),
                        region: r.to_string(),
                        home_lat: 48.0 + ri as f64 + (i as f64 * 0.37) % 1.0,
                        home_lon: 8.0 + (i as f64 * 0.61) % 2.0,
                        skills: vec![Skill {
                            skill: "bearing_wear".into(),
                            level: 1 + i % 5,
                        }],
                        shift_start_min: 480,
                        shift_end_min: 1020,
                        max_daily_load: 5,
                    },
                )
                .await
                .unwrap();
            if i % 3 == 0 {
                svc.set_stock(&admin(), &t.van_location_id, "BRG", 2, None)
                    .await
                    .unwrap();
            }
        }
        for s in 0..20 {
            svc.create_site(
                &admin(),
                &NewSite {
                    site_id: Some(format!("s-{r}-{s}")),
                    customer_id: "c".into(),
                    name: "s".into(),
                    region: r.to_string(),
                    lat: 48.0 + ri as f64 + (s as f64 * 0.13) % 1.0,
                    lon: 8.0 + (s as f64 * 0.29) % 2.0,
                    address: None,
                },
            )
            .await
            .unwrap();
        }
    }
    for d in 0..1000 {
        svc.create_device(
            &admin(),
            &NewServiceDevice {
                device_id: format!("d{d}"),
                site_id: format!("s-{}-{}", regions[d % 5], d % 20),
                serial: format!("SN{d}"),
                model: "P".into(),
                batch: None,
                firmware: None,
                install_date: None,
                warranty_end: None,
                criticality: 1 + (d % 3) as i64,
                vip: false,
            },
        )
        .await
        .unwrap();
    }
    let started = Instant::now();
    let mut ids = Vec::new();
    for d in 0..1000 {
        let ev = alert(
            &format!("d{d}"),
            AlertEventKind::Opened,
            Some(10.0 + d as f64),
            Severity::High,
        );
        ids.push(svc.apply_alert_event(&ev).await.unwrap().unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "predictive tickets: 1000 in {:.2} s = {:.0}/s",
        secs,
        1000.0 / secs
    );
    let started = Instant::now();
    let c = svc.candidates(&admin(), &ids[0], Some(10)).await.unwrap();
    println!(
        "candidates for one ticket (200 technicians): {:.1} ms, best {}",
        started.elapsed().as_secs_f64() * 1000.0,
        c[0].technician_id
    );
    let started = Instant::now();
    let r = svc
        .dispatch_batch(&admin(), &BatchRequest { ticket_ids: ids })
        .await
        .unwrap();
    println!(
        "dispatch batch 1000 tickets × 200 technicians: total {:.0} ms (solve {:.0} ms), assigned {}, unassigned {}, objective {:.1}",
        started.elapsed().as_secs_f64() * 1000.0,
        r.solve_ms,
        r.assignments.len(),
        r.unassigned.len(),
        r.objective
    );
    assert_eq!(r.assignments.len() + r.unassigned.len(), 1000);
}

/// One asset row per device: the MQTT credential and the placement in the service network
/// are two facts about the same row, whichever comes first.
#[tokio::test]
async fn one_device_row_for_the_credential_and_the_placement() {
    use crate::devices::{DeviceRegistry, NewDevice};
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let registry = DeviceRegistry::new(svc.db.clone());
    // Placed first (dev-1), credential second: the network's record wins.
    let issued = registry
        .add(&NewDevice {
            device_id: "dev-1".into(),
            model: Some("other".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(registry.verify_secret("dev-1", &issued.secret).await);
    assert!(!registry.verify_secret("dev-1", "wrong").await);
    // Credential first, placed second.
    registry
        .add(&NewDevice {
            device_id: "mqtt-1".into(),
            serial: Some("S-9".into()),
            site: Some("hall 3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let place = NewServiceDevice {
        device_id: "mqtt-1".into(),
        site_id: "site-n".into(),
        serial: "S-9".into(),
        model: "P100".into(),
        batch: None,
        firmware: None,
        install_date: None,
        warranty_end: None,
        criticality: 2,
        vip: false,
    };
    svc.create_device(&admin(), &place).await.unwrap();
    assert!(matches!(
        svc.create_device(&admin(), &place).await,
        Err(ServiceError::Conflict(_))
    ));
    let rows: Vec<(String, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT device_id, model, site_id FROM devices WHERE device_id IN ('dev-1', 'mqtt-1') ORDER BY device_id")
            .fetch_all(svc.db.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            ("dev-1".into(), Some("P100".into()), Some("site-n".into())),
            ("mqtt-1".into(), Some("P100".into()), Some("site-n".into())),
        ]
    );
    let listed = registry.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].site.as_deref(), Some("hall 3"));
}

// ---------------------------------------------------------------- attack findings

fn provider_key(id: &str, path: &str) -> Principal {
    as_role(Role::Provider, Some((id, path)))
}

async fn add_provider(svc: &Service, id: &str, parent: &str, region: &str) {
    svc.create_provider(
        &admin(),
        &NewProvider {
            provider_id: Some(id.into()),
            name: id.into(),
            kind: ProviderKind::Provider,
            parent_id: Some(parent.into()),
            regions: vec![region.into()],
        },
    )
    .await
    .unwrap();
}

async fn add_device_in(svc: &Service, device: &str, region: &str) {
    svc.create_site(
        &admin(),
        &NewSite {
            site_id: Some(format!("site-{device}")),
            customer_id: "cust".into(),
            name: device.into(),
            region: region.into(),
            lat: 53.5,
            lon: 10.0,
            address: None,
        },
    )
    .await
    .unwrap();
    svc.create_device(
        &admin(),
        &NewServiceDevice {
            device_id: device.into(),
            site_id: format!("site-{device}"),
            serial: device.into(),
            model: "P100".into(),
            batch: None,
            firmware: None,
            install_date: None,
            warranty_end: None,
            criticality: 2,
            vip: false,
        },
    )
    .await
    .unwrap();
}

async fn add_technician(svc: &Service, id: &str, provider: &str, region: &str) {
    svc.create_technician(
        &admin(),
        &NewTechnician {
            technician_id: Some(id.into()),
            provider_id: provider.into(),
            name: id.into(),
            region: region.into(),
            home_lat: 53.5,
            home_lon: 10.0,
            skills: vec![Skill {
                skill: "bearing_wear".into(),
                level: 5,
            }],
            shift_start_min: 0,
            shift_end_min: 1440,
            max_daily_load: 5,
        },
    )
    .await
    .unwrap();
}

async fn add_location(svc: &Service, id: &str, provider: Option<&str>, lat: f64, lon: f64) {
    svc.create_location(
        &admin(),
        &NewLocation {
            location_id: Some(id.into()),
            kind: LocationKind::Regional,
            name: id.into(),
            region: None,
            lat,
            lon,
            provider_id: provider.map(Into::into),
        },
    )
    .await
    .unwrap();
}

/// Finding 5: `sp_1`'s scope was `LIKE '/oem/agent-a/sp_1/%'`, where `_` matches the `-` of
/// `sp-1` (and `SP-1` matched it ignoring case). Exact prefixes on `/`-terminated paths keep
/// look-alike ids apart, and `sp-1` does not contain `sp-10`.
#[tokio::test]
async fn look_alike_provider_ids_see_only_their_own_subtree() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let svc = svc.with_webhook_policy(webhooks::DestinationPolicy::allow_private());
    for (id, region) in [
        ("sp-1", "r1"),
        ("sp_1", "r2"),
        ("SP-1", "r3"),
        ("sp-10", "r4"),
    ] {
        add_provider(&svc, id, "agent-a", region).await;
        add_device_in(&svc, &format!("d-{region}"), region).await;
    }
    // sp-1's technician also serves r2, so it would be eligible for sp_1's ticket there.
    add_technician(&svc, "tech-1", "sp-1", "r2").await;
    add_location(&svc, "wh-sp-1", Some("sp-1"), 53.5, 10.0).await;
    svc.set_stock(&admin(), "wh-sp-1", "BRG", 5, None)
        .await
        .unwrap();
    let sp1 = provider_key("sp-1", "/oem/agent-a/sp-1/");
    let sp_1 = provider_key("sp_1", "/oem/agent-a/sp_1/");
    let big = provider_key("SP-1", "/oem/agent-a/SP-1/");
    let hook = svc
        .create_webhook(
            &sp_1,
            &webhooks::NewWebhook {
                url: "http://127.0.0.1:9/hook".into(),
                secret: "0123456789abcdef".into(),
                provider_id: None,
            },
        )
        .await
        .unwrap();
    let t1 = svc.create_ticket(&sp1, &api_ticket("d-r1")).await.unwrap();
    let t2 = svc.create_ticket(&sp_1, &api_ticket("d-r2")).await.unwrap();
    let t10 = svc
        .create_ticket(&admin(), &api_ticket("d-r4"))
        .await
        .unwrap();
    // The webhook of sp_1 got its own ticket's event, not sp-1's.
    let events: Vec<_> = svc
        .outbox(&admin(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.webhook_id == hook.webhook_id)
        .map(|e| {
            e.payload["data"]["ticket_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(events, vec![t2.ticket_id.clone()]);
    let listed = |who: Principal| {
        let svc = svc.clone();
        async move {
            svc.tickets(&who, &TicketFilter::default(), Page::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|t| t.ticket_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(sp_1.clone()).await, vec![t2.ticket_id.clone()]);
    assert!(listed(big.clone()).await.is_empty());
    assert_eq!(listed(sp1.clone()).await, vec![t1.ticket_id.clone()]);
    assert!(!listed(sp1.clone()).await.contains(&t10.ticket_id));
    for who in [&sp_1, &big] {
        let techs = svc
            .technicians_where(who, None, Page::default())
            .await
            .unwrap();
        assert!(techs.items.is_empty(), "{:?}", techs.items);
        let providers = svc.providers(who).await.unwrap();
        assert_eq!(providers.len(), 1, "{providers:?}");
        assert!(svc.locations_in(who).await.unwrap().is_empty());
        assert!(
            svc.stock(who, None, None, Page::default())
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }
    // sp_1 cannot rank or dispatch to sp-1's technician.
    let c = svc.candidates(&sp_1, &t2.ticket_id, None).await.unwrap();
    assert!(c.is_empty(), "{c:?}");
    let r = svc
        .dispatch_batch(
            &sp_1,
            &BatchRequest {
                ticket_ids: vec![t2.ticket_id.clone()],
            },
        )
        .await
        .unwrap();
    assert!(r.assignments.is_empty(), "{:?}", r.assignments);
    assert!(matches!(
        svc.assign(&sp_1, &t2.ticket_id, "tech-1", None).await,
        Err(ServiceError::UnknownReference { ref field, .. }) if field == "technician_id"
    ));
}

/// Finding 6: transfers, receiving, reserving by citing one's own ticket, the reorder
/// report, pre-positioning and batch dispatch all kept to the caller's locations (and the
/// shared central stock for its tickets).
#[tokio::test]
async fn parts_move_only_within_the_callers_network() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let north = provider_key("sp-north", "/oem/agent-a/sp-north/");
    // South's warehouse sits right next to the north technicians; north's own is further.
    add_location(&svc, "wh-south", Some("sp-south"), 53.5, 10.0).await;
    add_location(&svc, "wh-own", Some("sp-north"), 53.0, 9.5).await;
    svc.set_stock(&admin(), "wh-south", "BRG", 5, Some(8))
        .await
        .unwrap();
    for loc in ["van-n1", "wh-north"] {
        svc.set_stock(&admin(), loc, "BRG", 0, Some(0))
            .await
            .unwrap();
    }
    // North's batch: the part must not come off south's shelf.
    let t = svc
        .create_ticket(&north, &api_ticket("dev-1"))
        .await
        .unwrap();
    let r = svc
        .dispatch_batch(
            &north,
            &BatchRequest {
                ticket_ids: vec![t.ticket_id.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(r.assignments.len(), 1);
    let plan = &r.assignments[0].parts;
    assert!(
        plan.iter()
            .all(|p| p.location_id.as_deref() != Some("wh-south")),
        "{plan:?}"
    );
    let c = svc.candidates(&north, &t.ticket_id, None).await.unwrap();
    assert!(
        c.iter()
            .flat_map(|c| &c.factors)
            .all(|f| !f.detail.contains("wh-south")),
        "{c:?}"
    );
    // A south transfer (made by the OEM side) is none of north's business.
    let s = svc
        .create_ticket(&admin(), &api_ticket("dev-s"))
        .await
        .unwrap();
    svc.assign(&admin(), &s.ticket_id, "s1", None)
        .await
        .unwrap();
    let all = svc.transfers(&admin(), None).await.unwrap();
    let south_transfer = all
        .iter()
        .find(|x| x.ticket_id.as_deref() == Some(s.ticket_id.as_str()))
        .unwrap()
        .clone();
    let seen = svc.transfers(&north, None).await.unwrap();
    assert!(
        seen.iter()
            .all(|x| x.transfer_id != south_transfer.transfer_id),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|x| x.ticket_id.as_deref() == Some(t.ticket_id.as_str())),
        "north sees its own transfer: {seen:?}"
    );
    assert!(matches!(
        svc.receive_transfer(&north, &south_transfer.transfer_id)
            .await,
        Err(ServiceError::NotFound { .. })
    ));
    assert_eq!(
        svc.transfers(&admin(), None)
            .await
            .unwrap()
            .iter()
            .find(|x| x.transfer_id == south_transfer.transfer_id)
            .unwrap()
            .state,
        "in_transit"
    );
    // Citing its own ticket does not open south's shelf; the shared central stock it does.
    let cite = |location: &str| ReserveRequest {
        sku: "BRG".into(),
        location_id: location.into(),
        quantity: 1,
        ticket_id: Some(t.ticket_id.clone()),
    };
    assert!(matches!(
        svc.reserve(&north, &cite("wh-south")).await,
        Err(ServiceError::Forbidden(_))
    ));
    svc.reserve(&north, &cite("central")).await.unwrap();
    // The reorder report lists only north's own locations.
    let admin_lines = svc.reorder_report(&admin()).await.unwrap();
    assert!(admin_lines.iter().any(|l| l.location_id == "wh-south"));
    let lines = svc.reorder_report(&north).await.unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l.location_id != "wh-south" && l.location_id != "central"),
        "{lines:?}"
    );
    // Pre-positioning: north's predicted failures, into north's own warehouse, never from
    // south's.
    for dev in ["dev-2", "dev-s"] {
        svc.apply_alert_event(&alert(
            dev,
            AlertEventKind::Opened,
            Some(200.0),
            Severity::Medium,
        ))
        .await
        .unwrap();
    }
    let proposals = svc.preposition_proposals(&north, 720.0).await.unwrap();
    assert!(!proposals.is_empty());
    for p in &proposals {
        assert_eq!(p.to_location_id, "wh-own", "{p:?}");
        assert_ne!(p.from_location_id.as_deref(), Some("wh-south"), "{p:?}");
        for id in &p.tickets {
            assert!(svc.ticket(&north, id).await.is_ok(), "{id} is not north's");
        }
    }
}

/// Finding 7: a technician key belongs to its technician: it sees its own jobs and moves
/// them through the field states only.
#[tokio::test]
async fn technician_keys_see_and_move_only_their_own_jobs() {
    use auth::NewApiKey;
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let mine = svc
        .create_ticket(&admin(), &api_ticket("dev-1"))
        .await
        .unwrap();
    let theirs = svc
        .create_ticket(&admin(), &api_ticket("dev-2"))
        .await
        .unwrap();
    let loose = svc
        .create_ticket(&admin(), &api_ticket("dev-1"))
        .await
        .unwrap();
    svc.assign(&admin(), &mine.ticket_id, "n1", None)
        .await
        .unwrap();
    svc.assign(&admin(), &theirs.ticket_id, "n2", None)
        .await
        .unwrap();
    // Issued through the domain: the key carries its technician and provider.
    let issued = svc
        .create_api_key(&admin(), &NewApiKey::of(Role::Technician).technician("n1"))
        .await
        .unwrap();
    assert_eq!(issued.technician_id.as_deref(), Some("n1"));
    let n1 = svc.authenticate(&issued.key).await.unwrap();
    assert_eq!(n1.technician_id.as_deref(), Some("n1"));
    assert_eq!(n1.provider_path.as_deref(), Some("/oem/agent-a/sp-north/"));
    let ids: Vec<String> = svc
        .tickets(&n1, &TicketFilter::default(), Page::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| t.ticket_id)
        .collect();
    assert_eq!(ids, vec![mine.ticket_id.clone()]);
    for other in [&theirs.ticket_id, &loose.ticket_id] {
        assert!(matches!(
            svc.ticket(&n1, other).await,
            Err(ServiceError::NotFound { .. })
        ));
        assert!(matches!(
            svc.transition(&n1, other, TicketState::EnRoute, None, None)
                .await,
            Err(ServiceError::NotFound { .. })
        ));
        assert!(matches!(
            svc.ticket_events(&n1, other).await,
            Err(ServiceError::NotFound { .. })
        ));
    }
    // Its own job: field moves yes, dispatcher moves no.
    for to in [TicketState::Triaged, TicketState::Cancelled] {
        assert!(matches!(
            svc.transition(&n1, &mine.ticket_id, to, None, None).await,
            Err(ServiceError::Forbidden(_))
        ));
    }
    svc.transition(&n1, &mine.ticket_id, TicketState::EnRoute, None, None)
        .await
        .unwrap();
    // The registry: itself, its van, the devices and customers of its jobs.
    let techs = svc
        .technicians_where(&n1, None, Page::default())
        .await
        .unwrap();
    assert_eq!(techs.items.len(), 1);
    assert_eq!(techs.items[0].technician_id, "n1");
    let locations: Vec<_> = svc
        .locations_in(&n1)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.location_id)
        .collect();
    assert_eq!(locations, vec!["van-n1".to_owned()]);
    let stock = svc.stock(&n1, None, None, Page::default()).await.unwrap();
    assert!(stock.items.iter().all(|s| s.location_id == "van-n1"));
    assert!(svc.device_context(&n1, "dev-1").await.is_ok());
    assert!(matches!(
        svc.device_context(&n1, "dev-s").await,
        Err(ServiceError::NotFound { .. })
    ));
    assert!(svc.customer(&n1, "cust").await.is_ok());
    assert!(matches!(
        svc.customer(&n1, "cust-vip").await,
        Err(ServiceError::NotFound { .. })
    ));
    assert!(matches!(
        svc.reserve(
            &n1,
            &ReserveRequest {
                sku: "BRG".into(),
                location_id: "van-n2".into(),
                quantity: 1,
                ticket_id: Some(mine.ticket_id.clone()),
            }
        )
        .await,
        Err(ServiceError::Forbidden(_))
    ));
    // Key creation checks the binding.
    for (new, field) in [
        (NewApiKey::of(Role::Technician), "technician_id"),
        (
            NewApiKey::of(Role::Technician).technician("nobody"),
            "technician_id",
        ),
        (
            NewApiKey::of(Role::Technician)
                .technician("n1")
                .provider("sp-south"),
            "provider_id",
        ),
        (
            NewApiKey::of(Role::Provider)
                .provider("sp-north")
                .technician("n1"),
            "technician_id",
        ),
        (
            NewApiKey::of(Role::Admin).provider("sp-north"),
            "provider_id",
        ),
        (
            NewApiKey::of(Role::Scheduler).technician("n1"),
            "technician_id",
        ),
    ] {
        // A missing or contradictory binding is a validation error; a well-formed id that
        // names no technician, or a technician of another provider, is a conflict with the
        // world (409 over HTTP). Each names the field.
        let err = svc.create_api_key(&admin(), &new).await.unwrap_err();
        let named = match &err {
            ServiceError::Validation { field: f, .. }
            | ServiceError::UnknownReference { field: f, .. } => f == field,
            ServiceError::Conflict(message) => message.starts_with(field),
            _ => false,
        };
        assert!(named, "{new:?}: {err:?}");
    }
    // No one but an admin issues keys, of any role.
    for who in [
        provider_key("sp-north", "/oem/agent-a/sp-north/"),
        n1.clone(),
        as_role(Role::Scheduler, None),
    ] {
        assert!(matches!(
            svc.create_api_key(&who, &NewApiKey::of(Role::Admin)).await,
            Err(ServiceError::Forbidden(_))
        ));
    }
    // A technician key from before the binding existed sees nothing.
    let legacy = as_role(Role::Technician, None);
    assert!(
        svc.tickets(&legacy, &TicketFilter::default(), Page::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(svc.locations_in(&legacy).await.unwrap().is_empty());
}

/// Finding 3 (the domain's half): webhook URLs are parsed and their destinations checked at
/// registration; the transport's half is tested in prognos-http.
#[tokio::test]
async fn webhook_registration_refuses_inside_destinations_and_raw_urls() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let north = provider_key("agent-a", "/oem/agent-a/");
    let hook = |url: &str| webhooks::NewWebhook {
        url: url.into(),
        secret: "0123456789abcdef".into(),
        provider_id: None,
    };
    for url in [
        "http://127.0.0.1:8080/api/v1/apikeys",
        "http://localhost:8080/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fd00::1]/",
        "http://2130706433/",
        "http://0.0.0.0:8080/",
        "http://8.8.8.8/a\r\nX-Injected: 1",
        "http://8.8.8.8/a HTTP/1.1",
        "ftp://8.8.8.8/",
    ] {
        // Malformed or raw: invalid; well formed but inside: refused by the policy.
        let err = svc.create_webhook(&north, &hook(url)).await.unwrap_err();
        assert!(
            matches!(&err, ServiceError::Validation { field, .. }
                | ServiceError::Refused { field, .. } if field == "url"),
            "{url:?}: {err:?}"
        );
    }
    // A public address literal is accepted, as the parser normalises it.
    let w = svc
        .create_webhook(&north, &hook("HTTP://8.8.8.8:80/a/../hook?x=1"))
        .await
        .unwrap();
    assert_eq!(w.url, "http://8.8.8.8/hook?x=1");
    // The configuration may let a loopback receiver through.
    let open = svc
        .clone()
        .with_webhook_policy(webhooks::DestinationPolicy::allow_private());
    open.create_webhook(&north, &hook("http://127.0.0.1:9/hook"))
        .await
        .unwrap();
    // A provider subscribes only within its subtree, and only so many times.
    let err = svc
        .create_webhook(
            &north,
            &webhooks::NewWebhook {
                provider_id: Some("agent-b".into()),
                ..hook("http://8.8.8.8/")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err:?}");
    for _ in 2..webhooks::MAX_WEBHOOKS_PER_OWNER {
        svc.create_webhook(&north, &hook("http://8.8.8.8/"))
            .await
            .unwrap();
    }
    assert!(matches!(
        svc.create_webhook(&north, &hook("http://8.8.8.8/")).await,
        Err(ServiceError::Conflict(_))
    ));
}

/// Quantities and offsets outside any real range are refused with the field named, before
/// they can overflow a sum (a panic in a debug build, a wrapped number in release).
#[tokio::test]
async fn quantities_and_offsets_are_bounded() {
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    for q in [0, -5, i64::MIN, MAX_QUANTITY + 1, i64::MAX] {
        let err = svc
            .reserve(
                &admin(),
                &ReserveRequest {
                    sku: "BRG".into(),
                    location_id: "central".into(),
                    quantity: q,
                    ticket_id: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ServiceError::Validation { field, .. } if field == "quantity"),
            "{q}: {err:?}"
        );
    }
    for (on_hand, rop, field) in [
        (MAX_QUANTITY + 1, None, "on_hand"),
        (-1, None, "on_hand"),
        (1, Some(-1), "reorder_point"),
        (1, Some(i64::MAX), "reorder_point"),
    ] {
        let err = svc
            .set_stock(&admin(), "central", "BRG", on_hand, rop)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ServiceError::Validation { field: f, .. } if f == field),
            "{err:?}"
        );
    }
    assert!(matches!(
        Page::new(Some(50), Some(i64::MAX)),
        Err(ServiceError::Validation { ref field, .. }) if field == "offset"
    ));
    let page = Page::new(Some(1), Some(MAX_OFFSET)).unwrap();
    assert!(
        svc.tickets(&admin(), &TicketFilter::default(), page)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let big = vec!["BRG".to_owned(); tickets::MAX_PARTS + 1];
    let err = svc
        .create_ticket(
            &admin(),
            &NewTicket {
                parts_needed: Some(big),
                ..api_ticket("dev-1")
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Validation { ref field, .. } if field == "parts_needed"));
}

/// A person acknowledges an alert and it stays acknowledged while the models keep reporting
/// it; resolving ends it; the roles and the provider scope are the dispatcher's.
#[tokio::test]
async fn people_acknowledge_and_resolve_alerts_and_the_models_do_not_undo_it() {
    use crate::alerts::AlertMove;
    let (_d, svc, _c) = service().await;
    network(&svc).await;
    let store = AlertStore::new(svc.db.clone());
    let id = store
        .apply(&alert(
            "dev-1",
            AlertEventKind::Opened,
            None,
            Severity::High,
        ))
        .await
        .unwrap();
    let sched = as_role(Role::Scheduler, None);
    // An engineer reads alerts but does not handle them; a provider of another region does
    // not see this one at all; an unknown id is "not found".
    let engineer = as_role(Role::Engineer, None);
    assert!(matches!(
        svc.move_alert(&engineer, &id, AlertMove::Acknowledge).await,
        Err(ServiceError::Forbidden(_))
    ));
    let south = provider_key("sp-south", "/oem/agent-b/sp-south/");
    assert!(matches!(
        svc.move_alert(&south, &id, AlertMove::Acknowledge).await,
        Err(ServiceError::NotFound { .. })
    ));
    assert!(matches!(
        svc.move_alert(&sched, "nope", AlertMove::Acknowledge).await,
        Err(ServiceError::NotFound { .. })
    ));
    let north = provider_key("sp-north", "/oem/agent-a/sp-north/");
    let acked = svc
        .move_alert(&north, &id, AlertMove::Acknowledge)
        .await
        .unwrap();
    assert_eq!(acked.state, "acknowledged");
    let at = acked.acknowledged_at_ms.unwrap();
    // The models re-report the open alert: still acknowledged, at the same time.
    let mut update = alert("dev-1", AlertEventKind::Escalated, None, Severity::Critical);
    update.alert.occurrences = 3;
    assert_eq!(store.apply(&update).await.unwrap(), id);
    let now = store.get(&id).await.unwrap().unwrap();
    assert_eq!(now.state, "acknowledged");
    assert_eq!(now.severity, "critical");
    assert_eq!(now.acknowledged_at_ms, Some(at));
    // Acknowledging again changes nothing; resolving ends it, and it cannot be acknowledged.
    let again = svc
        .move_alert(&sched, &id, AlertMove::Acknowledge)
        .await
        .unwrap();
    assert_eq!(again.acknowledged_at_ms, Some(at));
    let resolved = svc
        .move_alert(&sched, &id, AlertMove::Resolve)
        .await
        .unwrap();
    assert_eq!(resolved.state, "resolved");
    assert!(resolved.resolved_at_ms.is_some());
    assert!(matches!(
        svc.move_alert(&sched, &id, AlertMove::Acknowledge).await,
        Err(ServiceError::Conflict(_))
    ));
    // The models' next report of the same opening does not bring it back.
    store.apply(&update).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().unwrap().state, "resolved");
    let active = svc
        .alerts_visible(&sched, Some("open"), Some("dev-1"), 10)
        .await
        .unwrap();
    assert!(active.is_empty(), "{active:?}");
}
