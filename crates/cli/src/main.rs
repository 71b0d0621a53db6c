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
    quiet_broken_pipe();
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

/// `trustchain ... | head`: when the reader goes away, stop quietly with
/// the exit code of a SIGPIPE death (128 + 13) instead of a panic message
/// (Rust ignores SIGPIPE, so `println!` fails with EPIPE and panics).
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
