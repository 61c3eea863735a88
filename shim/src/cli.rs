//! What the shim was asked to do, from its argv: an intercepted tool call (multi-call by
//! `argv[0]`), or one of its own subcommands when invoked as `clawrden-shim`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

/// The shim's own name; any other `argv[0]` basename is an intercepted tool.
pub const SHIM_NAME: &str = "clawrden-shim";

/// One invocation of the binary.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Forward this argv (argv[0] = the tool as invoked) to the warden.
    Forward(Vec<OsString>),
    /// `clawrden-shim exec-helper ARGS...`; holds ARGS (without the subcommand).
    ExecHelper(Vec<OsString>),
    Version,
    Help,
}

/// Bad command line; exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHIM_NAME}: {}\n{USAGE}", self.0)
    }
}

const USAGE: &str = "usage: clawrden-shim run -- COMMAND [ARGS...] | --version | --help \
                     | exec-helper [OPTIONS] -- PROGRAM ARGV0 [ARGS...]";

/// Decides what to do from the full argv (`args[0]` included).
pub fn parse(args: Vec<OsString>) -> Result<Invocation, UsageError> {
    let mut args = args.into_iter();
    let argv0 = args
        .next()
        .ok_or_else(|| UsageError("started without argv[0]".to_string()))?;
    if basename(&argv0) != SHIM_NAME.as_bytes() {
        let mut argv = vec![argv0];
        argv.extend(args);
        return Ok(Invocation::Forward(argv));
    }
    let rest: Vec<OsString> = args.collect();
    let Some(first) = rest.first() else {
        return Err(UsageError("no subcommand given".to_string()));
    };
    match first.as_bytes() {
        b"--version" | b"-V" if rest.len() == 1 => Ok(Invocation::Version),
        b"--help" | b"-h" if rest.len() == 1 => Ok(Invocation::Help),
        b"exec-helper" => Ok(Invocation::ExecHelper(rest[1..].to_vec())),
        b"run" => {
            let cmd = match rest.get(1).map(|a| a.as_bytes()) {
                Some(b"--") => &rest[2..],
                _ => &rest[1..],
            };
            match cmd.first() {
                None => Err(UsageError("run: no COMMAND given".to_string())),
                Some(c) if c.as_bytes().starts_with(b"-") && rest[1] != "--" => Err(UsageError(
                    format!("run: unknown option {}", c.to_string_lossy()),
                )),
                Some(_) => Ok(Invocation::Forward(cmd.to_vec())),
            }
        }
        _ => Err(UsageError(format!(
            "unknown arguments starting with {:?}",
            first.to_string_lossy()
        ))),
    }
}

/// The last path component of `argv0` (all of it if there is no '/').
fn basename(argv0: &OsStr) -> &[u8] {
    let b = argv0.as_bytes();
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

/// `--version` output.
pub fn version_line() -> String {
    format!(
        "{SHIM_NAME} {} (protocol {})",
        env!("CARGO_PKG_VERSION"),
        clawrden_protocol::VERSION
    )
}

/// `--help` output.
pub fn help_text() -> String {
    format!(
        "{version}
Forwards intercepted tool calls to the Clawrden warden, which decides by policy, runs the
command and streams its I/O back. Installed as symlinks named after tools (git, curl...):
invoked under any other name than {SHIM_NAME}, it forwards that call.

{USAGE}

  run -- COMMAND [ARGS...]   forward COMMAND ARGS as if COMMAND had been intercepted
  exec-helper ...            process supervisor used by the warden's executors
  --version                  print the version and protocol version
  --help                     print this help

Environment:
  {socket_env}           warden socket (default {default_socket})
  {parent_env}   request id of the command this call is nested in
  CLAWRDEN_HELLO_TIMEOUT_MS  how long to wait for the warden's hello (default 10000)

Exit status: the command's own; 126 denied; 124 timed out; 125 warden unavailable or
protocol error (nothing was run); 127 command not found; 2 bad usage.
",
        version = version_line(),
        socket_env = clawrden_protocol::SOCKET_ENV,
        default_socket = clawrden_protocol::DEFAULT_SOCKET,
        parent_env = clawrden_protocol::PARENT_REQUEST_ENV,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn other_basename_forwards_whole_argv() {
        assert_eq!(
            parse(os(&["/usr/local/bin/git", "status", "--short"])),
            Ok(Invocation::Forward(os(&[
                "/usr/local/bin/git",
                "status",
                "--short"
            ])))
        );
        assert_eq!(
            parse(os(&["git", "--version"])),
            Ok(Invocation::Forward(os(&["git", "--version"])))
        );
    }

    #[test]
    fn shim_name_with_directory_is_the_shim_itself() {
        assert_eq!(
            parse(os(&["/usr/lib/clawrden/bin/clawrden-shim", "--version"])),
            Ok(Invocation::Version)
        );
    }

    #[test]
    fn run_takes_command_after_double_dash() {
        assert_eq!(
            parse(os(&["clawrden-shim", "run", "--", "rm", "-rf", "x"])),
            Ok(Invocation::Forward(os(&["rm", "-rf", "x"])))
        );
        assert_eq!(
            parse(os(&["clawrden-shim", "run", "ls"])),
            Ok(Invocation::Forward(os(&["ls"])))
        );
    }

    #[test]
    fn run_without_command_is_usage_error() {
        assert!(parse(os(&["clawrden-shim", "run", "--"])).is_err());
        assert!(parse(os(&["clawrden-shim", "run"])).is_err());
        assert!(parse(os(&["clawrden-shim", "run", "-x", "ls"])).is_err());
    }

    #[test]
    fn exec_helper_gets_arguments_after_subcommand() {
        assert_eq!(
            parse(os(&[
                "clawrden-shim",
                "exec-helper",
                "--tty",
                "--",
                "/bin/ls",
                "ls"
            ])),
            Ok(Invocation::ExecHelper(os(&[
                "--tty", "--", "/bin/ls", "ls"
            ])))
        );
    }

    #[test]
    fn unknown_or_missing_subcommand_is_usage_error() {
        assert_eq!(
            parse(os(&["clawrden-shim"])),
            Err(UsageError("no subcommand given".to_string()))
        );
        assert!(parse(os(&["clawrden-shim", "frobnicate"])).is_err());
        assert!(parse(os(&["clawrden-shim", "--version", "extra"])).is_err());
        assert!(parse(Vec::new()).is_err());
    }

    #[test]
    fn version_line_names_protocol() {
        assert_eq!(
            version_line(),
            format!(
                "clawrden-shim {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                clawrden_protocol::VERSION
            )
        );
    }
}
