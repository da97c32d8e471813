//! Drives a broker from the command line (anonymous connections):
//! `mqtt_run load HOST:PORT DEVICES MESSAGES [METRICS] [qos0]` runs the load
//! generator; `mqtt_run fleet HOST:PORT DEVICES TICKS [SPEEDUP]` publishes a
//! simulated fleet, as fast as possible unless a speedup is given.

use std::time::Duration;

use prognos_simulators::mqtt::{
    BrokerAddr, LoadConfig, Pace, PublishConfig, publish_fleet, run_load,
};
use prognos_simulators::{Fleet, FleetConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: mqtt_run load|fleet HOST:PORT DEVICES COUNT [METRICS] [qos0]";
    let (Some(mode), Some(addr), Some(devices), Some(count)) =
        (args.get(1), args.get(2), args.get(3), args.get(4))
    else {
        return Err(usage.into());
    };
    let addr: BrokerAddr = addr.parse()?;
    let devices: usize = devices.parse()?;
    let count: u64 = count.parse()?;
    match mode.as_str() {
        "load" => {
            let mut cfg = LoadConfig::new(addr, devices, count);
            if let Some(m) = args.get(5) {
                cfg.metrics_per_message = m.parse()?;
            }
            cfg.qos1 = args.get(6).map(String::as_str) != Some("qos0");
            cfg.time_limit = Duration::from_secs(120);
            let r = run_load(&cfg).await?;
            println!(
                "sent {} acked {} errors {} failed {} timed_out {} elapsed {:?} rate {:.0}/s latency {:?} last_error {:?}",
                r.sent,
                r.acked,
                r.errors,
                r.connections_failed,
                r.timed_out,
                r.elapsed,
                r.throughput_per_sec(),
                r.latency,
                r.last_error
            );
        }
        "fleet" => {
            let mut fleet = Fleet::new(FleetConfig {
                devices,
                ..FleetConfig::default()
            })?;
            let mut cfg = PublishConfig::new(addr, count);
            cfg.time_limit = Duration::from_secs(120);
            if let Some(x) = args.get(5) {
                cfg.pace = Pace::Speedup(x.parse()?);
            }
            let r = publish_fleet(&mut fleet, &cfg).await?;
            println!("{r:#?}");
            println!("labels so far: {}", fleet.labels().len());
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
