//! `clawctl doctor`: checks the pieces an operator depends on, one line each.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use clawrden_protocol::{self as protocol, Action, Message, Request};

use crate::client::{ApiError, Ctx};
use crate::table::{clean, quote_argv};

const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

/// `clawctl doctor`
#[derive(Debug, Args)]
#[command(after_help = "\
--probe RUNS THE COMMAND FOR REAL when the policy allows it (or when you approve it): \
it is sent over the socket exactly like an agent's call, decided, audited and, if \
allowed, executed. Probe with something harmless, e.g. `clawctl doctor --probe -- true`.")]
pub struct DoctorArgs {
    /// Warden socket to check [default: $CLAWRDEN_SOCKET, else /run/clawrden/warden.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Policy file to check that it loads
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Also send a real call for the command after `--` and report the decision and exit
    /// status (THE COMMAND RUNS if the policy allows it)
    #[arg(long, requires = "argv")]
    probe: bool,
    /// The probe command, after `--`
    #[arg(last = true, value_name = "CMD", requires = "probe")]
    argv: Vec<OsString>,
}

/// One check's outcome.
struct Check {
    ok: bool,
    name: &'static str,
    detail: String,
}

impl Check {
    fn print(&self) {
        let word = if self.ok { "ok" } else { "FAIL" };
        println!("{word:<4}  {:<6}  {}", self.name, clean(&self.detail));
    }
}

/// Runs `clawctl doctor`: every check runs; exit 1 if any failed.
pub fn run(ctx: &Ctx, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let socket = args.socket.clone().unwrap_or_else(|| {
        std::env::var_os(protocol::SOCKET_ENV)
            .filter(|s| !s.is_empty())
            .map_or_else(|| PathBuf::from(protocol::DEFAULT_SOCKET), PathBuf::from)
    });
    let mut failed = false;
    let mut report = |c: Check| {
        failed |= !c.ok;
        c.print();
    };
    report(check_socket(&socket));
    if let Some(p) = &args.policy {
        report(check_policy(p));
    }
    report(check_ready(ctx));
    report(check_token(ctx));
    if args.probe {
        report(probe(&socket, &args.argv));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn connect(socket: &Path) -> Result<UnixStream, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "{}: cannot connect: {e}; is the warden running with --socket {} and may you open it?",
            socket.display(),
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(SOCKET_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(SOCKET_TIMEOUT)))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut s = &stream;
    protocol::write_message(&mut s, &Message::hello())
        .map_err(|e| format!("{}: sending Hello: {e}", socket.display()))?;
    match protocol::read_message(&mut s) {
        Ok(Some(m)) => m.check_hello().map_err(|e| match m {
            Message::Error { message, .. } => {
                format!("{}: the warden refused: {message}", socket.display())
            }
            _ => format!("{}: {e}", socket.display()),
        })?,
        Ok(None) => {
            return Err(format!(
                "{}: closed without answering Hello; is it a Clawrden warden socket?",
                socket.display()
            ))
        }
        Err(e) => return Err(format!("{}: reading Hello: {e}", socket.display())),
    }
    Ok(stream)
}

fn check_socket(socket: &Path) -> Check {
    match connect(socket) {
        Ok(_) => Check {
            ok: true,
            name: "socket",
            detail: format!(
                "{}: answers Hello (protocol version {})",
                socket.display(),
                protocol::VERSION
            ),
        },
        Err(detail) => Check {
            ok: false,
            name: "socket",
            detail,
        },
    }
}

fn check_policy(path: &Path) -> Check {
    match clawrden_policy::Policy::load(path) {
        Ok(p) => Check {
            ok: true,
            name: "policy",
            detail: format!(
                "{}: loads ({} rules, sha256 {})",
                path.display(),
                p.rules().len(),
                p.sha256()
            ),
        },
        Err(e) => Check {
            ok: false,
            name: "policy",
            detail: e.to_string(),
        },
    }
}

fn check_ready(ctx: &Ctx) -> Check {
    let url = ctx.client.url_of("/readyz");
    let fail = |detail: String| Check {
        ok: false,
        name: "ready",
        detail,
    };
    let mut resp = match ctx.client.get_any("/readyz") {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let status = resp.status;
    let body = match resp.json() {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let checks = body["checks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    format!(
                        "{k} {}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    if status == 200 && body["ready"].as_bool() == Some(true) {
        Check {
            ok: true,
            name: "ready",
            detail: format!("{url}: ready ({checks})"),
        }
    } else {
        let failing = body["failing"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or("?").to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "?".into());
        fail(format!(
            "{url}: not ready (status {status}), failing: {failing}; checks: {checks}"
        ))
    }
}

fn check_token(ctx: &Ctx) -> Check {
    if !ctx.client.has_token() {
        return Check {
            ok: false,
            name: "token",
            detail: "no token given: pass --token-file <state-dir>/admin.token or set \
                     CLAWRDEN_TOKEN / CLAWRDEN_TOKEN_FILE"
                .into(),
        };
    }
    match ctx.client.get_json("/api/v1/status") {
        Ok(s) => Check {
            ok: true,
            name: "token",
            detail: format!(
                "authenticates (GET /api/v1/status: warden {})",
                s["version"].as_str().unwrap_or("?")
            ),
        },
        Err(e) => Check {
            ok: false,
            name: "token",
            detail: match e {
                ApiError::Status { .. } => format!("GET /api/v1/status: {e}"),
                other => other.to_string(),
            },
        },
    }
}

/// Sends a real Request for `argv` and reports the decision and outcome.
fn probe(socket: &Path, argv: &[OsString]) -> Check {
    let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.as_bytes().to_vec()).collect();
    let shown = quote_argv(&serde_json::Value::Array(
        argv.iter()
            .map(|a| serde_json::Value::String(String::from_utf8_lossy(a).into_owned()))
            .collect(),
    ));
    let (ok, detail) = match run_probe(socket, argv) {
        Ok((ok, outcome)) => (ok, format!("{shown}: {outcome}")),
        Err(e) => (false, format!("{shown}: {e}")),
    };
    Check {
        ok,
        name: "probe",
        detail,
    }
}

fn run_probe(socket: &Path, argv: Vec<Vec<u8>>) -> Result<(bool, String), String> {
    let stream = connect(socket)?;
    let cwd = std::env::current_dir()
        .map_err(|e| format!("cannot read the current directory: {e}"))?
        .into_os_string()
        .into_vec();
    let request = Request {
        tool_path: argv[0].clone(),
        argv,
        cwd,
        env: std::env::vars_os()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .collect(),
        parent_request: None,
        ..Default::default()
    };
    let mut s = &stream;
    protocol::write_message(&mut s, &Message::Request(request))
        .map_err(|e| format!("sending the request: {e}"))?;
    // Approvals and the command itself may take as long as they take.
    stream
        .set_read_timeout(None)
        .map_err(|e| format!("socket: {e}"))?;
    let mut decision: Option<String> = None;
    let (mut out_bytes, mut err_bytes) = (0usize, 0usize);
    let mut last_stderr = Vec::new();
    loop {
        let msg = match protocol::read_message(&mut s) {
            Ok(Some(m)) => m,
            Ok(None) => return Err("the warden closed the connection without an outcome".into()),
            Err(e) => return Err(format!("reading the answer: {e}")),
        };
        match msg {
            Message::Decision(d) => {
                let rule = d.rule.as_deref().unwrap_or("policy default");
                match d.action {
                    Action::Pending => {}
                    Action::Deny => {
                        return Ok((
                            true,
                            format!(
                            "deny by {rule}: {} (request {}; the agent would get exit status {})",
                            d.reason,
                            d.request_id,
                            protocol::EXIT_DENIED
                        ),
                        ))
                    }
                    Action::Allow => {
                        decision = Some(format!(
                            "allow by {rule}: {} (request {})",
                            d.reason, d.request_id
                        ))
                    }
                }
            }
            Message::Pending {
                approval_id,
                message,
            } => eprintln!(
                "{}",
                clean(&format!(
                    "clawctl: probe waiting for approval {approval_id}: {message}"
                ))
            ),
            Message::Stdout(b) => out_bytes += b.len(),
            Message::Stderr(b) => {
                err_bytes += b.len();
                last_stderr.extend_from_slice(&b);
                if last_stderr.len() > 4096 {
                    last_stderr.drain(..last_stderr.len() - 4096);
                }
            }
            Message::Exit(code) => {
                let mut text = format!(
                    "{}, exit status {code} ({out_bytes} bytes stdout, {err_bytes} bytes stderr)",
                    decision.unwrap_or_else(|| "allow".into())
                );
                if code != 0 {
                    if let Some(line) = String::from_utf8_lossy(&last_stderr)
                        .lines()
                        .rfind(|l| !l.trim().is_empty())
                    {
                        text.push_str(&format!("; stderr: {line}"));
                    }
                }
                return Ok((true, text));
            }
            Message::Signaled(sig) => {
                return Ok((
                    true,
                    format!(
                        "{}, killed by signal {sig}",
                        decision.unwrap_or_else(|| "allow".into())
                    ),
                ))
            }
            Message::Error { kind, message } => {
                return Ok((
                    false,
                    format!(
                        "{}, then error {}: {message} (the agent would get exit status {})",
                        decision.unwrap_or_else(|| "no decision".into()),
                        kind.as_str(),
                        kind.exit_status()
                    ),
                ))
            }
            other => {
                return Err(format!(
                    "unexpected {:?} frame from the warden",
                    other.kind()
                ))
            }
        }
    }
}
