//! `prognos client add|list|remove`: named MQTT clients with their own topic rules.

use std::process::ExitCode;

use clap::Subcommand;
use prognos_service::{Database, MqttClientRegistry, NewMqttClient};

use crate::config::Settings;
use crate::device::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Add a named MQTT client (an integration, a gateway, a test client) with topic rules;
    /// prints {"name", "secret"} (the secret is shown only once). It logs in with username =
    /// its name and password = the secret. Devices keep their own-prefix rule.
    Add {
        name: String,
        /// A topic filter it may publish to (repeatable; none: it may not publish).
        #[arg(long = "publish", value_name = "FILTER")]
        publish: Vec<String>,
        /// A topic filter it may subscribe to (repeatable); a subscription must lie inside one.
        #[arg(long = "subscribe", value_name = "FILTER")]
        subscribe: Vec<String>,
        /// A topic filter denied for both, whatever the others allow (repeatable).
        #[arg(long = "deny", value_name = "FILTER")]
        deny: Vec<String>,
        /// A client id it may use: exact, or ending in '*' for a prefix ('*': any). Default:
        /// its name and "<name>-*". A registered device's id is never allowed.
        #[arg(long = "client-id", value_name = "PATTERN")]
        client_ids: Vec<String>,
        /// No login at all: anyone who reaches the MQTT port gets these rules. For test
        /// clients and interoperability suites on loopback only.
        #[arg(long)]
        anonymous: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List named clients as a JSON array (never their secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a named client; it can no longer log in (connected sessions end at their next
    /// reconnect).
    Remove {
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

async fn open(store: &StoreArgs) -> anyhow::Result<MqttClientRegistry> {
    let settings = Settings::resolve(store.config.as_deref(), store.data_dir.clone(), None, None)?;
    std::fs::create_dir_all(&settings.data_dir)?;
    let db = Database::open_file(&settings.data_dir.join("prognos.db")).await?;
    Ok(MqttClientRegistry::new(db))
}

pub async fn run(command: ClientCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientCommand::Add {
            name,
            publish,
            subscribe,
            deny,
            client_ids,
            anonymous,
            store,
        } => {
            let registry = open(&store).await?;
            let issued = registry
                .add(&NewMqttClient {
                    name,
                    client_ids,
                    publish,
                    subscribe,
                    deny,
                    anonymous,
                })
                .await?;
            if anonymous {
                eprintln!(
                    "warning: client {:?} is anonymous: anyone who reaches the MQTT port gets its rules",
                    issued.name
                );
            }
            println!("{}", serde_json::to_string(&issued)?);
        }
        ClientCommand::List { store } => {
            let registry = open(&store).await?;
            println!("{}", serde_json::to_string_pretty(&registry.list().await?)?);
        }
        ClientCommand::Remove { name, store } => {
            open(&store).await?.remove(&name).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
