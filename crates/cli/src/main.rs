//! The `trustchain` binary: parses arguments, asks for the passphrase,
//! calls the libraries, prints results, and turns errors into one clear
//! message with a hint and a non-zero exit code.
#![forbid(unsafe_code)]

mod auth;
mod cli;
mod commands;
mod demo;
mod device;
mod error;
mod field;
mod passphrase;
mod production;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRUSTCHAIN_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
