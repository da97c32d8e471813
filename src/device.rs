//! `prognos device add|list`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use prognos_service::{Database, DeviceRegistry, NewDevice};

use crate::config::Settings;

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device; prints {"device_id", "secret"} (the secret is shown only once).
    Add {
        device_id: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        batch: Option<String>,
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List registered devices as a JSON array.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

async fn open(store: &StoreArgs) -> anyhow::Result<DeviceRegistry> {
    let settings = Settings::resolve(store.config.as_deref(), store.data_dir.clone(), None, None)?;
    std::fs::create_dir_all(&settings.data_dir)?;
    let db = Database::open_file(&settings.data_dir.join("prognos.db")).await?;
    Ok(DeviceRegistry::new(db))
}

pub async fn run(command: DeviceCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeviceCommand::Add {
            device_id,
            model,
            serial,
            batch,
            site,
            store,
        } => {
            let registry = open(&store).await?;
            let issued = registry
                .add(&NewDevice {
                    device_id,
                    model,
                    serial,
                    batch,
                    site,
                })
                .await?;
            println!("{}", serde_json::to_string(&issued)?);
        }
        DeviceCommand::List { store } => {
            let registry = open(&store).await?;
            println!("{}", serde_json::to_string_pretty(&registry.list().await?)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
