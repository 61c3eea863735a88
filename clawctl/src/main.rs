//! clawctl: the Clawrden operator CLI. This file only parses flags and dispatches;
//! each command group lives in its own module.

#![forbid(unsafe_code)]

mod approvals;
mod audit;
mod client;
mod doctor;
mod grants;
mod history;
mod lockdown;
mod policy;
mod prisoners;
mod queue;
mod sse;
mod status;
mod table;
mod tail;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use client::{ApiError, BaseUrl, Client, Ctx};

#[derive(Debug, Parser)]
#[command(
    name = "clawctl",
    version,
    about = "Clawrden operator CLI",
    after_help = "\
Exit status: 0 ok, 1 other failure, 2 usage, 3 not found, 4 unauthorized/forbidden/rate-limited, \
5 conflict (e.g. already decided), 6 warden unreachable.
The API is plain HTTP on loopback; reach a remote warden through an SSH tunnel \
(ssh -L 8080:127.0.0.1:8080 HOST)."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

/// Options of every API command.
#[derive(Debug, Args)]
struct GlobalOpts {
    /// Warden API URL, plain http [env: CLAWRDEN_URL] [default: http://127.0.0.1:8080]
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
    /// API token; other local users can see it in `ps`, prefer --token-file [env: CLAWRDEN_TOKEN]
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// File holding the API token, e.g. <state-dir>/admin.token [env: CLAWRDEN_TOKEN_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of tables (for scripts)
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policy files and explain their decisions (offline)
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify audit logs (offline)
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Show the warden's state: lockdown, policy, queue, prisoners
    Status,
    /// List requests waiting for approval
    Queue(queue::QueueArgs),
    /// Approve a waiting request (it runs)
    Approve(approvals::ApproveArgs),
    /// Deny a waiting request
    Deny(approvals::DenyArgs),
    /// Search past requests
    History(history::HistoryArgs),
    /// Follow live events (reconnects after a dropped connection)
    Tail,
    /// List remembered approvals, or revoke one
    Grants(grants::GrantsArgs),
    /// Deny every new call (on) or return to the policy (off)
    Lockdown(lockdown::LockdownArgs),
    /// Kill a prisoner's container and cancel its calls (asks first unless --yes)
    Kill(prisoners::PrisonerArgs),
    /// Freeze a prisoner's container; its new calls are denied (asks first unless --yes)
    Pause(prisoners::PauseArgs),
    /// Thaw a paused prisoner (asks first unless --yes)
    Resume(prisoners::PrisonerArgs),
    /// Manage API tokens (admin)
    #[command(subcommand)]
    Token(tokens::TokenCommand),
    /// Check the socket, the policy, the API and the token
    Doctor(doctor::DoctorArgs),
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The API context from the global options and the environment.
fn api_ctx(g: &GlobalOpts) -> Result<Ctx, ApiError> {
    let url = g
        .url
        .clone()
        .or_else(|| env_nonempty("CLAWRDEN_URL"))
        .unwrap_or_else(|| client::DEFAULT_URL.to_owned());
    let base = BaseUrl::parse(&url)?;
    let token = client::resolve_token(
        g.token.as_deref(),
        env_nonempty("CLAWRDEN_TOKEN").as_deref(),
        g.token_file.as_deref(),
        env_nonempty("CLAWRDEN_TOKEN_FILE")
            .map(PathBuf::from)
            .as_deref(),
    )?;
    Ok(Ctx {
        client: Client::new(base, token),
        json: g.json,
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = || api_ctx(&cli.global);
    match cli.command {
        Command::Policy(command) => policy::run(command),
        Command::Audit(command) => audit::run(command),
        Command::Status => status::run(&ctx()?),
        Command::Queue(args) => queue::run(&ctx()?, args),
        Command::Approve(args) => approvals::approve(&ctx()?, args),
        Command::Deny(args) => approvals::deny(&ctx()?, args),
        Command::History(args) => history::run(&ctx()?, args),
        Command::Tail => tail::run(&ctx()?),
        Command::Grants(args) => grants::run(&ctx()?, args),
        Command::Lockdown(args) => lockdown::run(&ctx()?, args),
        Command::Kill(args) => prisoners::run(&ctx()?, prisoners::Action::Kill, args, None),
        Command::Pause(args) => {
            let (args, duration) = args.into_parts();
            prisoners::run(&ctx()?, prisoners::Action::Pause, args, duration)
        }
        Command::Resume(args) => prisoners::run(&ctx()?, prisoners::Action::Resume, args, None),
        Command::Token(command) => tokens::run(&ctx()?, command),
        Command::Doctor(args) => doctor::run(&ctx()?, args),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run(cli).unwrap_or_else(|e| {
        // Errors may quote the warden's answers (reasons, ids): escaped like all output.
        eprintln!("clawctl: {}", table::clean_lines(&format!("{e:#}")));
        let code = e
            .downcast_ref::<ApiError>()
            .map_or(client::exit::FAILURE, ApiError::exit_code);
        ExitCode::from(code)
    })
}
