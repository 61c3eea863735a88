//! What the binary does, as library functions returning its exit status.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clawrden_policy::Policy;

use crate::auth;
use crate::cli::{CheckArgs, ExecutorName, RunArgs, TokenCommand};
use crate::clock::SystemClock;
use crate::config::{self, WardenConfig};
use crate::exec_registry::ExecutorRegistry;
use crate::identity::{RunAs, WardenIdentity};
use crate::logging;
use crate::server::{lock_state_dir, termination_signal, Warden};
use crate::state_dir;
use crate::store::{Store, Timestamp};

/// Where the HTTP API listens when neither `--listen` nor `listen:` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Where the HTTP API should listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `--listen none`.
    Off,
    /// Nothing configured: the default address; if it is taken the warden runs without
    /// the API (and says so), since nobody asked for it explicitly.
    Default(SocketAddr),
    /// Asked for: failing to bind it is fatal.
    Explicit(SocketAddr),
}

/// Parses the `--listen` / `listen:` value.
pub fn parse_listen(value: Option<&str>) -> Result<Listen, String> {
    match value.map(str::trim) {
        None => Ok(Listen::Default(
            DEFAULT_LISTEN.parse().expect("default address is valid"),
        )),
        Some("none") => Ok(Listen::Off),
        Some(v) => v.parse().map(Listen::Explicit).map_err(|_| {
            format!("--listen / listen: {v:?} is not HOST:PORT (e.g. 127.0.0.1:8080) or `none`")
        }),
    }
}

fn read_metrics_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the metrics token file {}: {e}", path.display()))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(format!(
            "metrics token file {} is empty; put the token /metrics scrapers must send in it",
            path.display()
        ));
    }
    Ok(token)
}

/// Bad command line, config or policy (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// The warden could not start or failed while running.
pub const EXIT_FAILURE: u8 = 1;

/// `check-config`: validates and prints `ok: ...` (status 0), or the error with its
/// position on stderr (status 64).
pub fn check_config(args: &CheckArgs) -> u8 {
    let result = match (&args.config, &args.policy) {
        (Some(c), _) => config::check_config_file(c).map(|l| {
            format!(
                "ok: {} ({} prisoner(s); policy {} sha256 {})",
                c.display(),
                l.config.prisoners.len(),
                l.config.policy.display(),
                l.policy.sha256()
            )
        }),
        (None, Some(p)) => config::check_policy_file(p).map(|policy| {
            format!(
                "ok: {} ({} rule(s); sha256 {})",
                p.display(),
                policy.rules().len(),
                policy.sha256()
            )
        }),
        (None, None) => unreachable!("clap requires --config or --policy"),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            EXIT_USAGE
        }
    }
}

/// Checks what the local executor needs before the warden starts (the error is printed
/// and exits 64): who commands run as ([`RunAs`]: never the warden, see
/// [`crate::identity`]), every rule's `run_as` user, and a state directory no such
/// identity can reach (owned by the warden, mode 0700). `None` without the local executor.
pub fn check_local_execution(
    config: &WardenConfig,
    policy: &Policy,
) -> Result<Option<RunAs>, String> {
    if !config.executors.contains(&ExecutorName::Local) {
        return Ok(None);
    }
    let run_as = RunAs::new(
        WardenIdentity::current(),
        config.run_as.as_deref(),
        config.allow_run_as_warden,
    )?;
    for rule in policy.rules() {
        if let Some(user) = rule.run_as() {
            run_as.check_rule_user(user).map_err(|e| {
                format!(
                    "{}: rule `{}`: run_as {user}: {e}",
                    policy.origin(),
                    rule.name()
                )
            })?;
        }
    }
    if let Some(old) = state_dir::restrict_to_owner(&config.state_dir, run_as.warden().uid)? {
        tracing::info!(
            state_dir = %config.state_dir.display(),
            old_mode = format!("{old:o}"),
            "made the state directory private to the warden's user (mode 0700)"
        );
    }
    Ok(Some(run_as))
}

/// Runs the daemon until SIGTERM/SIGINT. Everything is checked before anything binds.
pub fn run_daemon(args: &RunArgs) -> u8 {
    // First, before anything is opened: descriptors inherited by mistake must not reach
    // the commands this warden starts.
    if let Err(e) = crate::sys::mark_inherited_fds_cloexec() {
        eprintln!("clawrden-warden: cannot mark inherited descriptors close-on-exec: {e}");
        return EXIT_FAILURE;
    }
    let loaded = match config::load(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            return EXIT_USAGE;
        }
    };
    logging::init(loaded.config.log_format);
    let run_as = match check_local_execution(&loaded.config, &loaded.policy) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            return EXIT_USAGE;
        }
    };
    // Before the executors, which keep state of their own for this directory (the
    // per-request cgroups): a second warden must touch nothing of the first one's. A busy
    // directory is not a usage error (the config is fine), so 1.
    let state_lock = match lock_state_dir(&loaded.config.state_dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot lock the state directory");
            eprintln!("clawrden-warden: {e}");
            return EXIT_FAILURE;
        }
    };
    let (executors, docker) = match ExecutorRegistry::for_config(&loaded.config, run_as) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            return EXIT_USAGE;
        }
    };
    let listen = match parse_listen(loaded.config.listen.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            return EXIT_USAGE;
        }
    };
    let metrics_token = match &loaded.config.metrics_token_file {
        Some(p) => match read_metrics_token(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("clawrden-warden: {e}");
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    match crate::caps::raise_nofile_limit() {
        Ok(n) => tracing::info!(nofile = n, "open-file limit raised to its hard limit"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE; the connection caps are fitted to the current limit")
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("clawrden-warden: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut warden = match Warden::with_state_lock(
            &loaded.config,
            loaded.policy,
            executors,
            Arc::new(SystemClock),
            state_lock,
        ) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the warden");
                eprintln!("clawrden-warden: {e}");
                return e.exit_status();
            }
        };
        if let Some(t) = metrics_token {
            warden.set_metrics_token(t);
        }
        if let Some(docker) = &docker {
            warden.set_prisoner_runtime(ExecutorRegistry::docker_runtime(docker));
        }
        match listen {
            Listen::Off => tracing::info!("HTTP API disabled (--listen none)"),
            Listen::Default(addr) | Listen::Explicit(addr) => match std::net::TcpListener::bind(addr) {
                Ok(l) => warden.set_api_listener(l),
                Err(e) if matches!(listen, Listen::Default(_)) => {
                    tracing::warn!(addr = %addr, error = %e, "cannot listen on the default HTTP API address; running without the API (pass --listen ADDR to choose another, or --listen none)");
                }
                Err(e) => {
                    tracing::error!(addr = %addr, error = %e, "cannot listen for the HTTP API");
                    eprintln!("clawrden-warden: cannot listen for the HTTP API on {addr}: {e}");
                    return EXIT_FAILURE;
                }
            },
        }
        let stop = match termination_signal() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGTERM/SIGINT handlers");
                return EXIT_FAILURE;
            }
        };
        let bound = match warden.bind() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen");
                eprintln!("clawrden-warden: {e}");
                return EXIT_FAILURE;
            }
        };
        bound.serve(stop).await;
        0
    })
}

/// `token create|list|revoke`: works offline on the state directory's database.
pub fn token_command(cmd: &TokenCommand) -> u8 {
    let state_dir = match cmd {
        TokenCommand::Create { state_dir, .. }
        | TokenCommand::List { state_dir }
        | TokenCommand::Revoke { state_dir, .. } => state_dir,
    };
    let store = match Store::open(state_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            return EXIT_FAILURE;
        }
    };
    let now = Timestamp::now();
    match cmd {
        TokenCommand::Create { name, scope, .. } => {
            match auth::create_token(&store, name, *scope, now) {
                Ok((record, secret)) => {
                    println!("{}", secret.expose());
                    eprintln!(
                        "created token {:?} (id {}, scope {}); it is shown only this once",
                        record.name, record.id, record.scope
                    );
                    0
                }
                Err(e) => {
                    eprintln!("clawrden-warden: {e}");
                    EXIT_FAILURE
                }
            }
        }
        TokenCommand::List { .. } => match store.list_tokens() {
            Ok(tokens) => {
                println!(
                    "{:<6} {:<24} {:<8} {:<25} {:<25} REVOKED",
                    "ID", "NAME", "SCOPE", "CREATED", "LAST USED"
                );
                let t =
                    |x: Option<Timestamp>| x.map_or("-".to_owned(), crate::control::time::rfc3339);
                for tok in tokens {
                    println!(
                        "{:<6} {:<24} {:<8} {:<25} {:<25} {}",
                        tok.id,
                        tok.name,
                        tok.scope,
                        crate::control::time::rfc3339(tok.created_at),
                        t(tok.last_used_at),
                        t(tok.revoked_at)
                    );
                }
                0
            }
            Err(e) => {
                eprintln!("clawrden-warden: {e}");
                EXIT_FAILURE
            }
        },
        TokenCommand::Revoke { id, .. } => {
            let found = match store.list_tokens() {
                Ok(list) => list
                    .into_iter()
                    .find(|t| t.id.to_string() == *id || t.name == *id),
                Err(e) => {
                    eprintln!("clawrden-warden: {e}");
                    return EXIT_FAILURE;
                }
            };
            let Some(token) = found else {
                eprintln!("clawrden-warden: no token with id or name {id:?}; see `clawrden-warden token list --state-dir {}`", state_dir.display());
                return EXIT_FAILURE;
            };
            match store.revoke_token(&token.name, now) {
                Ok(true) => {
                    println!("revoked token {:?} (id {})", token.name, token.id);
                    0
                }
                Ok(false) => {
                    println!(
                        "token {:?} (id {}) was already revoked",
                        token.name, token.id
                    );
                    0
                }
                Err(e) => {
                    eprintln!("clawrden-warden: {e}");
                    EXIT_FAILURE
                }
            }
        }
    }
}
