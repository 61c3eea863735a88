//! What the binary does, as library functions returning its exit status.

use crate::cli::{CheckArgs, RunArgs};
use crate::config;
use crate::exec_registry::ExecutorRegistry;
use crate::logging;
use crate::server::{termination_signal, Warden};

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

/// Runs the daemon until SIGTERM/SIGINT. Everything is checked before anything binds.
pub fn run_daemon(args: &RunArgs) -> u8 {
    let loaded = match config::load(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clawrden-warden: {e}");
            return EXIT_USAGE;
        }
    };
    let executors =
        match ExecutorRegistry::from_config(&loaded.config.executors, &loaded.config.exec_helper) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("clawrden-warden: {e}");
                return EXIT_USAGE;
            }
        };
    logging::init(loaded.config.log_format);
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
        let warden = match Warden::new(&loaded.config, loaded.policy, executors) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the warden");
                return EXIT_FAILURE;
            }
        };
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
