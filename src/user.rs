//! `prognos user add`: people who sign in to the web console (argon2id-hashed passwords).

use std::io::{BufRead, Read};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use prognos_service::auth::{Principal, Role};
use prognos_service::users::{NewUser, generate_password};
use prognos_service::{Database, Service};

use crate::config::Settings;
use crate::device::StoreArgs;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a console user; prints {"user_id", "name", "role", …} and, when generated, the
    /// password (shown only once).
    Add {
        /// The sign-in name: letters, digits and . _ - @ (at most 64).
        name: String,
        /// admin, scheduler, engineer, technician or provider.
        #[arg(long, value_parser = ["admin", "scheduler", "engineer", "technician", "provider"])]
        role: String,
        /// The provider a `provider` user is scoped to (it sees only that subtree).
        #[arg(long)]
        provider: Option<String>,
        /// The technician a `technician` user is (it sees only its own jobs).
        #[arg(long)]
        technician: Option<String>,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: UserCommand) -> anyhow::Result<ExitCode> {
    match command {
        UserCommand::Add {
            name,
            role,
            provider,
            technician,
            password_stdin,
            store,
        } => {
            let role = Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role}"))?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .take(4096)
                    .read_line(&mut line)
                    .context("cannot read the password from standard input")?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                (generate_password()?, true)
            };
            let settings =
                Settings::resolve(store.config.as_deref(), store.data_dir.clone(), None, None)?;
            std::fs::create_dir_all(&settings.data_dir)?;
            let db = Database::open_file(&settings.data_dir.join("prognos.db")).await?;
            let user = Service::new(db)
                .create_user(
                    &Principal::system("cli"),
                    &NewUser {
                        name,
                        password: password.clone(),
                        role,
                        provider_id: provider,
                        technician_id: technician,
                    },
                )
                .await?;
            let mut out = serde_json::to_value(&user)?;
            if generated && let Some(o) = out.as_object_mut() {
                o.insert("password".into(), serde_json::Value::String(password));
            }
            println!("{out}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
