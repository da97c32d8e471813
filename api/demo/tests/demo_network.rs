//! The demo's service network and history import through the real service domain (SQLite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use prognos_demo as demo;
use prognos_models::alert::{Alert, AlertEvent, AlertEventKind, AlertState, Evidence, Severity};
use prognos_models::rul::RulEstimate;
use prognos_service::auth::{Principal, Role};
use prognos_service::dispatch::BatchRequest;
use prognos_service::{Database, ManualClock, Service};

async fn service() -> (tempfile::TempDir, Service, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_file(&dir.path().join("prognos.db"))
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(1_767_225_600_000)); // 2026-01-01T00:00:00Z
    let svc = Service::with_clock(db, clock.clone());
    (dir, svc, clock)
}

fn admin() -> Principal {
    Principal::system("test")
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

#[tokio::test]
async fn demo_network_seeds_and_dispatches() {
    let (_d, svc, _c) = service().await;
    let devices: Vec<demo::DemoDevice> = (0..12)
        .map(|i| demo::DemoDevice {
            device_id: format!("pump-{i}"),
            model: if i % 2 == 0 { "P100" } else { "M200" }.into(),
            serial: format!("SN{i}"),
            batch: "B1".into(),
            site: format!("plant-{}", i % 4),
            region: ["north", "south", "east"][i % 3].into(),
            lat: 50.0 + (i % 3) as f64,
            lon: 8.0 + (i % 4) as f64,
            criticality: (i % 3 + 1) as u8,
            firmware: "1.0".into(),
            install_ms: 1_600_000_000_000,
        })
        .collect();
    let net = demo::seed_demo_network(&svc.db, &devices).await.unwrap();
    assert_eq!(net.devices, 12);
    assert!(net.technicians >= 18 && net.providers >= 5);
    let key = net.admin_key.unwrap();
    assert_eq!(svc.authenticate(&key).await.unwrap().role, Role::Admin);
    // Idempotent.
    let again = demo::seed_demo_network(&svc.db, &devices).await.unwrap();
    assert_eq!(again.devices, 0);
    let mut ids = Vec::new();
    for d in &devices {
        let mut ev = alert(
            &d.device_id,
            AlertEventKind::Opened,
            Some(60.0),
            Severity::High,
        );
        ev.alert.failure_mode = "seal_leak".into();
        ids.push(svc.apply_alert_event(&ev).await.unwrap().unwrap());
    }
    let r = svc
        .dispatch_batch(&admin(), &BatchRequest { ticket_ids: ids })
        .await
        .unwrap();
    assert_eq!(r.assignments.len(), 12);
}

/// A burst of one failure mode in the last days over a quiet baseline raises one surge
/// alert, once, with a webhook event; a steady mode raises nothing.
#[tokio::test]
async fn surges_are_raised_once_with_a_webhook() {
    let (_d, svc, clock) = service().await;
    const DAY: i64 = 86_400_000;
    let now = 1_700_000_000_000;
    let devices: Vec<demo::DemoDevice> = (0..8)
        .map(|i| demo::DemoDevice {
            device_id: format!("pump-{i}"),
            model: "P100".into(),
            serial: format!("SN{i}"),
            batch: if i % 2 == 0 { "B1" } else { "B2" }.into(),
            site: format!("plant-{i}"),
            region: "north".into(),
            lat: 50.0,
            lon: 8.0,
            criticality: 2,
            firmware: "1.0".into(),
            install_ms: now - 400 * DAY,
        })
        .collect();
    demo::seed_demo_network(&svc.db, &devices).await.unwrap();
    // The webhook points at loopback: allowed only by configuration.
    let svc =
        svc.with_webhook_policy(prognos_service::webhooks::DestinationPolicy::allow_private());
    svc.create_webhook(
        &admin(),
        &prognos_service::webhooks::NewWebhook {
            url: "http://127.0.0.1:9/hooks".into(),
            secret: "0123456789abcdef".into(),
            provider_id: None,
        },
    )
    .await
    .unwrap();
    let repair = |d: usize, mode: &str, at: i64| demo::PastRepair {
        device_id: format!("pump-{d}"),
        failure_mode: mode.into(),
        failed_ms: at,
        restored_ms: at + 6 * 3_600_000,
    };
    // One seal leak a week for ten weeks; five overheating failures of batch B2 in 3 days.
    let mut past: Vec<_> = (0..10)
        .map(|w| repair(w % 8, "seal_leak", now - (w as i64 * 7 + 3) * DAY))
        .collect();
    past.extend(
        (0..5).map(|k| repair(2 * k % 8 + 1, "overheating", now - (3 - k as i64 / 2) * DAY)),
    );
    demo::import_history(&svc.db, &past, 3).await.unwrap();
    clock.set(now);
    let raised = svc.raise_surge_alerts().await.unwrap();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].failure_mode, "overheating");
    assert_eq!(raised[0].top_batch.as_deref(), Some("B2"));
    // Raised once: the next pass is quiet.
    clock.advance_secs(3600);
    assert!(svc.raise_surge_alerts().await.unwrap().is_empty());
    let listed = svc.surge_alerts(&admin(), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].failures, 5);
    let events: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE payload LIKE '%surge.raised%'")
            .fetch_one(svc.db.pool())
            .await
            .unwrap();
    assert_eq!(events, 1);
}
