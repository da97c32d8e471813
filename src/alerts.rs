//! `prognos alerts list`: predictive alerts from the SQL store, as JSON.

use std::process::ExitCode;

use clap::Subcommand;
use prognos_service::{AlertStore, Database};

use crate::config::Settings;
use crate::device::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first, as a JSON array.
    List {
        /// Only alerts in this state: open, acknowledged or resolved.
        #[arg(long, value_parser = ["open", "acknowledged", "resolved"])]
        state: Option<String>,
        /// Only alerts of this device.
        #[arg(long)]
        device: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: AlertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AlertsCommand::List {
            state,
            device,
            limit,
            store,
        } => {
            let settings =
                Settings::resolve(store.config.as_deref(), store.data_dir.clone(), None, None)?;
            let db = Database::open_file(&settings.data_dir.join("prognos.db")).await?;
            let alerts = AlertStore::new(db)
                .list(state.as_deref(), device.as_deref(), limit.max(1))
                .await?;
            println!("{}", serde_json::to_string_pretty(&alerts)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}
