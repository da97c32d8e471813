//! Prints failure statistics and generation speed of a fleet run:
//! `cargo run --release -p prognos-simulators --example fleet_stats -- [devices] [days] [seed]`.

use std::time::Instant;

use prognos_simulators::{Fleet, FleetConfig, Tick};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let devices = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(200);
    let days: f64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(90.0);
    let seed = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let cfg = FleetConfig {
        devices,
        seed,
        ..FleetConfig::default()
    };
    let mut fleet = Fleet::new(cfg)?;
    let ticks = fleet.ticks_per_days(days);
    let t0 = Instant::now();
    let mut tick = Tick::default();
    let mut readings = 0u64;
    let mut values = 0u64;
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    // FNV-1a over all payloads, to compare builds/platforms (HASH=1).
    let hash_payloads = std::env::var_os("HASH").is_some();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for _ in 0..ticks {
        fleet.next_tick_into(&mut tick);
        readings += tick.readings.len() as u64;
        for r in &tick.readings {
            values += r.metrics.len() as u64;
            if hash_payloads {
                buf.clear();
                r.write_json(r.seq, &mut buf);
                for b in &buf {
                    hash = (hash ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
                }
            }
        }
    }
    let gen_time = t0.elapsed();
    if hash_payloads {
        println!("payload hash {hash:016x}");
    }
    // JSON encoding speed on the last tick, repeated.
    let t1 = Instant::now();
    for _ in 0..1000 {
        for r in &tick.readings {
            buf.clear();
            r.write_json(r.seq, &mut buf);
            bytes += buf.len() as u64;
        }
    }
    let json_time = t1.elapsed();
    let specs = fleet.devices();
    let defective = specs.iter().filter(|d| d.defective_batch).count();
    let labels = fleet.labels();
    let def_fail = labels
        .iter()
        .filter(|l| specs[l.device].defective_batch)
        .count();
    println!("devices {devices} ({defective} in defective batch), days {days}, seed {seed}");
    println!("ticks {ticks}, readings {readings}, values {values}, generated in {gen_time:?}");
    println!(
        "json: {} payloads, {bytes} bytes in {json_time:?}",
        1000 * tick.readings.len()
    );
    println!("failures {} ({def_fail} in defective batch)", labels.len());
    let mut modes = std::collections::BTreeMap::new();
    let mut durs = Vec::new();
    for l in labels {
        *modes.entry(l.failure_mode.as_str()).or_insert(0) += 1;
        durs.push((l.failure_ms - l.onset_ms) as f64 / 86_400_000.0);
    }
    durs.sort_by(f64::total_cmp);
    println!("by mode {modes:?}");
    if !durs.is_empty() {
        println!(
            "onset->failure days: min {:.1} median {:.1} max {:.1}",
            durs[0],
            durs[durs.len() / 2],
            durs[durs.len() - 1]
        );
    }
    let pm = fleet.maintenance();
    let interrupted = pm.iter().filter(|m| m.interrupted_mode.is_some()).count();
    println!(
        "preventive visits {} ({interrupted} cut a degradation short)",
        pm.len()
    );
    println!(
        "active degradations at end {}",
        fleet.active_degradations().len()
    );
    let t2 = Instant::now();
    let history = fleet.history_before_start();
    let history_time = t2.elapsed();
    let hist_def = history
        .failures
        .iter()
        .filter(|l| specs[l.device].defective_batch)
        .count();
    let hist_cut = history
        .maintenance
        .iter()
        .filter(|m| m.interrupted_mode.is_some())
        .count();
    println!(
        "history before start: failures {} ({hist_def} in defective batch), preventive visits {} \
         ({hist_cut} cut a degradation short), drawn in {history_time:?}",
        history.failures.len(),
        history.maintenance.len()
    );
    Ok(())
}
