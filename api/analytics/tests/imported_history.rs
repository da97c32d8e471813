//! The analytics over a service history imported through the real workflow (SQLite file).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prognos_analytics::{kpi, reliability};
use prognos_demo as demo;
use prognos_service::auth::{Principal, Role};
use prognos_service::db::Database;
use prognos_service::history::{GroupBy, History};
use prognos_service::tickets::{NewTicket, TicketSource};
use prognos_service::{Service, ServiceError};

async fn service() -> (tempfile::TempDir, Service) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_file(&dir.path().join("prognos.db"))
        .await
        .unwrap();
    (dir, Service::new(db))
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

fn api_ticket(device: &str) -> NewTicket {
    NewTicket {
        source: Some(TicketSource::Api),
        title: Some("Noisy bearing".into()),
        device_id: Some(device.into()),
        failure_mode: Some("bearing_wear".into()),
        ..Default::default()
    }
}

/// Past breakdowns imported through the real workflow become the service history the
/// analytics read: failures with restore times, provider KPIs, stock back to its levels.
#[tokio::test]
async fn imported_history_feeds_the_analytics() {
    let (_d, svc) = service().await;
    const DAY: i64 = 86_400_000;
    let t0 = 1_600_000_000_000;
    let devices: Vec<demo::DemoDevice> = (0..6)
        .map(|i| demo::DemoDevice {
            device_id: format!("pump-{i}"),
            model: "P100".into(),
            serial: format!("SN{i}"),
            batch: if i < 3 { "B1" } else { "B2" }.into(),
            site: format!("plant-{}", i % 2),
            region: ["north", "south"][i % 2].into(),
            lat: 50.0 + (i % 2) as f64,
            lon: 8.0,
            criticality: 2,
            firmware: "1.0".into(),
            install_ms: t0,
        })
        .collect();
    demo::seed_demo_network(&svc.db, &devices).await.unwrap();
    let stock_before: i64 = sqlx::query_scalar("SELECT SUM(on_hand) FROM stock")
        .fetch_one(svc.db.pool())
        .await
        .unwrap();
    // pump-0 fails twice (restored after 10 h and 20 h), pump-4 once (restored after 6 h).
    let repair = |d: &str, day: i64, hours: i64| demo::PastRepair {
        device_id: d.into(),
        failure_mode: "bearing_wear".into(),
        failed_ms: t0 + day * DAY,
        restored_ms: t0 + day * DAY + hours * 3_600_000,
    };
    let past = [
        repair("pump-0", 100, 10),
        repair("pump-4", 150, 6),
        repair("pump-0", 300, 20),
    ];
    assert_eq!(demo::import_history(&svc.db, &past, 1).await.unwrap(), 3);
    let stock_after: i64 = sqlx::query_scalar("SELECT SUM(on_hand) FROM stock")
        .fetch_one(svc.db.pool())
        .await
        .unwrap();
    assert_eq!(stock_after, stock_before);

    let history = History::load(&svc.db, t0 + 400 * DAY).await.unwrap();
    assert_eq!(history.devices.len(), 6);
    assert_eq!(history.failures.len(), 3);
    let fleet = &reliability::mtbf(&history, GroupBy::Fleet, i64::MIN, i64::MAX)[0];
    assert_eq!(fleet.failures, 3);
    // Restored = resolution, which the import puts 0.5–2 h after the machine ran again.
    let mttr = fleet.mttr_hours.unwrap();
    assert!((12.0..=16.0 + 2.0).contains(&mttr), "{mttr}");
    let by_batch = reliability::mtbf(&history, GroupBy::Batch, i64::MIN, i64::MAX);
    assert_eq!(
        by_batch.iter().map(|r| r.failures).collect::<Vec<_>>(),
        vec![2, 1]
    );

    let kpis = kpi::provider_kpis(&svc.db, None, 0, t0 + 400 * DAY)
        .await
        .unwrap();
    let oem = kpis.iter().find(|k| k.kind == "oem").unwrap();
    assert_eq!(oem.subtree.resolved, 3);
    assert!(oem.subtree.satisfaction.unwrap() >= 3.0);
    assert!(oem.subtree.parts_consumed_value > 0.0);
    let own_sum: u64 = kpis.iter().map(|k| k.own.resolved).sum();
    assert_eq!(own_sum, 3);

    // Imported history is not judged: no model watched those years.
    let acc = kpi::model_accuracy(&svc.db, 0, t0 + 400 * DAY, 60.0)
        .await
        .unwrap();
    let all = acc.iter().find(|a| a.failure_mode == "all").unwrap();
    assert_eq!((all.missed_failures, all.confirmed), (0, 0));
    assert_eq!(all.recall, None);
    // The import is the service's own: an API key cannot create such tickets.
    let forged = svc
        .create_ticket(
            &as_role(Role::Scheduler, None),
            &NewTicket {
                source: Some(TicketSource::Import),
                ..api_ticket("pump-1")
            },
        )
        .await;
    assert!(matches!(forged, Err(ServiceError::Validation { ref field, .. }) if field == "source"));
}
