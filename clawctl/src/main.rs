//! clawctl: the Clawrden operator CLI. This file only parses flags and dispatches;
//! each command group lives in its own module.

#![forbid(unsafe_code)]

mod audit;
mod policy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "clawctl", version, about = "Clawrden operator CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policy files and explain their decisions (offline)
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify audit logs (offline)
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(command) => policy::run(command),
        Command::Audit(command) => audit::run(command),
    };
    result.unwrap_or_else(|e| {
        eprintln!("clawctl: {e:#}");
        ExitCode::FAILURE
    })
}
