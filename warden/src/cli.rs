//! The command line. Parsing only; [`crate::config`] turns it into a checked config.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// `clawrden-warden`: decides, runs and records every command a prisoner's shim forwards.
#[derive(Debug, Parser)]
#[command(
    name = "clawrden-warden",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of the daemon itself.
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// Read everything from this warden.yaml instead of the flags below.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "policy", "state_dir", "socket", "executor", "prisoner", "exec_helper", "stream_only",
        "listen", "metrics_token_file", "trust_proxy", "max_connections",
        "max_connections_per_prisoner", "max_pending_per_prisoner", "max_request_bytes_kept",
        "audit_syslog", "run_as", "allow_run_as_warden", "command_path"
    ])]
    pub config: Option<PathBuf>,
    /// The policy file (reloaded on change and on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Where the warden keeps its state (the audit trail lives in DIR/audit).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The prisoner's socket (the directory is what gets mounted into the prisoner).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Executors this warden runs [default: local].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND[,KIND...]")]
    pub executor: Vec<ExecutorName>,
    /// Name of the prisoner behind --socket [default: default].
    #[arg(long, value_name = "NAME")]
    pub prisoner: Option<String>,
    /// Log line format on stderr [default: pretty].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// The exec-helper binary [default: clawrden-shim next to this binary].
    #[arg(long, value_name = "PATH")]
    pub exec_helper: Option<PathBuf>,
    /// Never run commands on the shim's passed file descriptors; always stream frames.
    #[arg(long)]
    pub stream_only: bool,
    /// Serve the HTTP API on ADDR (HOST:PORT), or `none` for no API [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Require `Authorization: Bearer <the token in FILE>` on GET /metrics.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// A TLS-terminating reverse proxy sits in front of the API: trust its
    /// `X-Forwarded-Proto` so dashboard cookies are marked `Secure`.
    #[arg(long)]
    pub trust_proxy: bool,
    /// Run every locally executed command as USER (a rule's `run_as` still wins)
    /// [default: as the caller when the warden is root].
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Let locally executed commands run as the warden's own uid (and as root when the
    /// warden is root). Off by default: such a command could read the warden's state.
    #[arg(long)]
    pub allow_run_as_warden: bool,
    /// PATH of locally executed commands, and where the local executor looks them up
    /// [default: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin].
    #[arg(long, value_name = "DIR[:DIR...]")]
    pub command_path: Option<String>,
    /// Open shim connections across all prisoners; more are refused (exit 125) [default: 256].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open shim connections of one prisoner; more are refused [default: 64].
    #[arg(long, value_name = "N")]
    pub max_connections_per_prisoner: Option<usize>,
    /// Asks of one prisoner waiting for a person at once; more are refused [default: 16].
    #[arg(long, value_name = "N")]
    pub max_pending_per_prisoner: Option<usize>,
    /// Bytes of argv and env names the audit and store keep per call (beyond: a prefix and
    /// the SHA-256 of the whole); also the largest ask [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes_kept: Option<usize>,
    /// Forward every audit line to this syslog receiver (RFC 5424 over TCP, octet-counted).
    #[arg(long, value_name = "HOST:PORT")]
    pub audit_syslog: Option<String>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a warden.yaml (and the policy it names) or a policy file, then exit:
    /// 0 if valid, 64 with FILE:LINE:COLUMN if not.
    CheckConfig(CheckArgs),
    /// Manage API tokens offline, directly in the state directory's database.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `token create|list|revoke`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once on stdout.
    Create {
        /// The warden's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// Name recorded as the actor of everything the token does (A-Z a-z 0-9 . _ -).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// read, approve or admin.
        #[arg(long, value_name = "SCOPE")]
        scope: crate::auth::Scope,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Revoke a token by id or name.
    Revoke {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// Token id or name.
        id: String,
    },
}

/// What `check-config` checks.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CheckArgs {
    /// A warden.yaml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A policy file.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

/// Executors a warden can be told to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorName {
    Local,
    Mirror,
    Ghost,
}

impl ExecutorName {
    /// Same spelling as the policy's `executor` values.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorName::Local => "local",
            ExecutorName::Mirror => "mirror",
            ExecutorName::Ghost => "ghost",
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    #[default]
    Pretty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag_form() {
        let cli = Cli::try_parse_from([
            "clawrden-warden",
            "--policy",
            "/p.yaml",
            "--state-dir",
            "/s",
            "--socket",
            "/run/c/w.sock",
            "--executor",
            "local,mirror",
            "--log-format",
            "json",
            "--stream-only",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.run.executor,
            [ExecutorName::Local, ExecutorName::Mirror]
        );
        assert_eq!(cli.run.log_format, Some(LogFormat::Json));
        assert!(cli.run.stream_only);
    }

    #[test]
    fn config_conflicts_with_flag_form() {
        let err = Cli::try_parse_from(["clawrden-warden", "--config", "/w.yaml", "--socket", "/s"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn check_config_needs_exactly_one_file() {
        assert!(Cli::try_parse_from(["clawrden-warden", "check-config"]).is_err());
        assert!(Cli::try_parse_from([
            "clawrden-warden",
            "check-config",
            "--config",
            "a",
            "--policy",
            "b"
        ])
        .is_err());
        let cli =
            Cli::try_parse_from(["clawrden-warden", "check-config", "--policy", "p.yaml"]).unwrap();
        let Some(Command::CheckConfig(c)) = cli.command else {
            panic!("not check-config")
        };
        assert_eq!(c.policy, Some(PathBuf::from("p.yaml")));
    }
}
