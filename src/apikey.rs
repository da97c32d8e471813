//! `prognos apikey create|revoke`: API keys for the service API (stored hashed; the key is
//! printed once).

use std::process::ExitCode;

use clap::Subcommand;
use prognos_service::Database;
use prognos_service::Service;
use prognos_service::auth::{NewApiKey, Role};

use crate::config::Settings;
use crate::device::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Issue a key; prints {"key_id", "key", "role", "provider_id", "technician_id"} (the key
    /// is shown only once).
    Create {
        /// admin, scheduler, engineer, technician or provider.
        #[arg(long, value_parser = ["admin", "scheduler", "engineer", "technician", "provider"])]
        role: String,
        /// The provider a `provider` key is scoped to (it sees only that provider's subtree).
        #[arg(long)]
        provider: Option<String>,
        /// The technician a `technician` key belongs to (required for that role): it sees and
        /// moves only that technician's jobs.
        #[arg(long)]
        technician: Option<String>,
        /// A note on who holds the key.
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key by its id.
    Revoke {
        key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

async fn open(store: &StoreArgs) -> anyhow::Result<Service> {
    let settings = Settings::resolve(store.config.as_deref(), store.data_dir.clone(), None, None)?;
    std::fs::create_dir_all(&settings.data_dir)?;
    let db = Database::open_file(&settings.data_dir.join("prognos.db")).await?;
    Ok(Service::new(db))
}

pub async fn run(command: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        ApiKeyCommand::Create {
            role,
            provider,
            technician,
            label,
            store,
        } => {
            let role = Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?;
            let svc = open(&store).await?;
            let new = NewApiKey {
                role,
                provider_id: provider,
                technician_id: technician,
                label,
            };
            let issued = svc
                .create_api_key(&prognos_service::auth::Principal::system("cli"), &new)
                .await
                .map_err(|e| {
                    // Name the flag, not the JSON field.
                    let flag = |field: &str| match field {
                        "provider_id" => "--provider",
                        "technician_id" => "--technician",
                        "label" => "--label",
                        _ => "--role",
                    };
                    match e {
                        prognos_service::ServiceError::Validation { field, message } => {
                            anyhow::anyhow!("{}: {message}", flag(&field))
                        }
                        prognos_service::ServiceError::UnknownReference { field, kind, id } => {
                            anyhow::anyhow!("{}: unknown {kind} {id:?}", flag(&field))
                        }
                        e => e.into(),
                    }
                })?;
            println!("{}", serde_json::to_string(&issued)?);
        }
        ApiKeyCommand::Revoke { key_id, store } => {
            open(&store).await?.revoke_api_key(&key_id).await?;
            println!("{}", serde_json::json!({"revoked": key_id}));
        }
    }
    Ok(ExitCode::SUCCESS)
}
