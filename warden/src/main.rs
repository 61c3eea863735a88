//! `clawrden-warden`: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use clawrden_warden::app;
use clawrden_warden::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; usage mistakes are EX_USAGE.
            return if e.use_stderr() {
                ExitCode::from(app::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let status = match cli.command {
        Some(Command::CheckConfig(args)) => app::check_config(&args),
        Some(Command::Token(cmd)) => app::token_command(&cmd),
        None => app::run_daemon(&cli.run),
    };
    ExitCode::from(status)
}
