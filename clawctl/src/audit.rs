//! `clawctl audit verify`: check the warden's audit log with the chain definition of the
//! `clawrden-audit` crate (the one the warden writes with).
//!
//! Without `--key` it checks integrity (seq and SHA-256 links) and says that this is not
//! authenticity: whoever can write the file can recompute the links. With `--key FILE`
//! (a copy of `<state-dir>/audit.key`) it also checks every line's HMAC.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use clawrden_audit::{expand_paths, verify_files, AuditKey};

/// `clawctl audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the chain of audit files (a DIR means its rotated files, then audit.jsonl)
    Verify {
        /// The audit key (a copy of <state-dir>/audit.key): also check every line's MAC,
        /// so a chain recomputed without the key is rejected
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Audit files or directories, oldest first
        #[arg(required = true, value_name = "FILE|DIR")]
        paths: Vec<PathBuf>,
    },
}

/// Runs an audit subcommand: exit 0 when the chain verifies, 1 when it does not (the
/// first bad line on stderr as FILE:LINE: what), 2 when the key cannot be read.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { key, paths } => {
            let key = match key.as_deref().map(AuditKey::read).transpose() {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("clawctl: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let result = expand_paths(&paths).and_then(|files| verify_files(&files, key.as_ref()));
            match result {
                Ok(report) => {
                    for note in &report.notes {
                        println!("{note}");
                    }
                    println!("{report}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => {
                    eprintln!("{failure}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
