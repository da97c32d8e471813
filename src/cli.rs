//! Command-line shape and dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::{
    alerts, apikey, bench, client, demo, device, evaluate, evaluate_fleet, query, serve, simulate,
    user,
};

#[derive(Debug, Parser)]
#[command(
    name = "prognos",
    version,
    about = "Predictive maintenance: MQTT telemetry → Parquet → models → service tickets"
)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// TOML config file (see README); flags override it.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Where Parquet, WAL, dead letters and the SQLite database live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// MQTT 3.1.1 listen address [default: 127.0.0.1:1883].
    #[arg(long)]
    pub mqtt_addr: Option<SocketAddr>,
    /// HTTP listen address for /healthz and /metrics [default: 127.0.0.1:8080].
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
}

impl ServerArgs {
    pub fn settings(&self) -> anyhow::Result<Settings> {
        Settings::resolve(
            self.config.as_deref(),
            self.data_dir.clone(),
            self.mqtt_addr,
            self.http_addr,
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker, ingest and HTTP server until SIGTERM/SIGINT.
    Serve(ServerArgs),
    /// Register and list devices.
    Device {
        #[command(subcommand)]
        command: device::DeviceCommand,
    },
    /// Named MQTT clients with their own topic rules (integrations, gateways, test clients).
    Client {
        #[command(subcommand)]
        command: client::ClientCommand,
    },
    /// API keys for the service API.
    Apikey {
        #[command(subcommand)]
        command: apikey::ApiKeyCommand,
    },
    /// People who sign in to the web console.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Predictive alerts raised by the online models.
    Alerts {
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// Evaluate the models on public benchmarks.
    Evaluate {
        #[command(subcommand)]
        benchmark: Benchmark,
    },
    /// Run everything embedded on loopback with a simulated fleet, then print a summary.
    Demo(demo::DemoArgs),
    /// Simulate a fleet: publish over MQTT, or write Parquet in accelerated time.
    Simulate(simulate::SimulateArgs),
    /// Benchmarks (run them on a release build; figures go to BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Replay a CSV through a detector: prints time, anomaly_score, is_anomaly.
    Score(evaluate::ScoreArgs),
    /// Failure analytics and telemetry queries on a data dir.
    Query {
        #[command(subcommand)]
        command: query::QueryCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum Benchmark {
    /// SKAB valve anomalies: precision, recall, F1, FAR, MAR on the `anomaly` column.
    Skab(evaluate::SkabArgs),
    /// NASA C-MAPSS FD001 remaining useful life: RMSE and PHM08 score.
    Cmapss(evaluate::CmapssArgs),
    /// The simulated fleet through the online monitor: failures caught, lead time, false alerts.
    Fleet(evaluate_fleet::FleetArgs),
}

pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,prognos=info,prognos_ingest=info,prognos_broker=info,rumqttd=off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let settings = args.settings()?;
            runtime()?.block_on(serve_until_signal(settings))
        }
        Command::Alerts { command } => runtime()?.block_on(alerts::run(command)),
        Command::Query { command } => runtime()?.block_on(query::run(command)),
        Command::Apikey { command } => runtime()?.block_on(apikey::run(command)),
        Command::User { command } => runtime()?.block_on(user::run(command)),
        Command::Bench { command } => runtime()?.block_on(bench::run(command)),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Simulate(args) => runtime()?.block_on(simulate::run(args)),
        Command::Device { command } => runtime()?.block_on(device::run(command)),
        Command::Client { command } => runtime()?.block_on(client::run(command)),
        Command::Evaluate { benchmark } => {
            match benchmark {
                Benchmark::Skab(args) => evaluate::run_skab(&args)?,
                Benchmark::Cmapss(args) => evaluate::run_cmapss(&args)?,
                Benchmark::Fleet(args) => evaluate_fleet::run_fleet(&args)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Score(args) => {
            evaluate::run_score(&args)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve_until_signal(settings: Settings) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    crate::signals::cancel_on_signal(shutdown.clone())?;
    let running = serve::start(&settings, Vec::new(), shutdown.clone()).await?;
    println!(
        "prognos: serving MQTT on {} and HTTP on {}, data in {}",
        running
            .mqtt_addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        running.http_addr,
        running.data_dir.display()
    );
    let summary = running.wait().await?;
    info!(points = summary.stats.points, "stopped");
    Ok(ExitCode::SUCCESS)
}
