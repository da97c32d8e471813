//! `prognos`: the command line. Parsing and dispatch only; each command lives in its module.

mod alerts;
mod apikey;
mod bench;
mod bench_query;
mod bench_weibull;
mod cli;
mod client;
mod config;
mod demo;
mod device;
mod evaluate;
mod evaluate_fleet;
mod query;
mod serve;
mod signals;
mod simulate;
mod user;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.verbose);
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("prognos: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
