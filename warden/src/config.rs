//! The warden's configuration, from flags or a warden.yaml, checked completely (policy
//! included) before anything binds. Every error names the file, line and column, or the
//! flag, and says what to do; the binary exits 64 (EX_USAGE) on any of them.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clawrden_policy::{Policy, PolicyError};
use serde::Deserialize;

use crate::audit_forward::{Facility, SyslogConfig, DEFAULT_QUEUE};
use crate::caps::CapsConfig;
use crate::cli::{ExecutorName, LogFormat, RunArgs};

/// Exit status for a bad config or policy (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
/// Prisoner name when `--prisoner` is not given.
pub const DEFAULT_PRISONER: &str = "default";
/// Longest socket path `sun_path` holds (108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// Executors implemented by this build.
pub const AVAILABLE_EXECUTORS: &[ExecutorName] = &[ExecutorName::Local, ExecutorName::Mirror];

/// How a `container` value that selects by label starts: `label=KEY=VALUE` (the form of
/// `docker ps --filter`). A container name or id never contains `=`.
pub const LABEL_SELECTOR_PREFIX: &str = "label=";

/// One prisoner: its name, the socket only it can reach and, when it is a container, the
/// container's name or id (default: the prisoner's name), or `label=KEY=VALUE` when the
/// config gave `container_label: KEY=VALUE` (the single running container with that
/// label, looked up at call time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrisonerSocket {
    pub name: String,
    pub socket: PathBuf,
    pub container: Option<String>,
}

impl PrisonerSocket {
    /// The Docker container the mirror executor and the runtime act on: a name or id, or a
    /// `label=KEY=VALUE` selector they resolve when they act.
    pub fn container_name(&self) -> &str {
        self.container.as_deref().unwrap_or(&self.name)
    }

    /// `KEY=VALUE` when the prisoner's container is found by label.
    pub fn container_label(&self) -> Option<&str> {
        self.container
            .as_deref()
            .and_then(|c| c.strip_prefix(LABEL_SELECTOR_PREFIX))
    }
}

/// A `container_label` value: `KEY=VALUE` with a non-empty key of printable characters
/// without whitespace; the value may be empty but has no control characters.
fn valid_container_label(label: &str) -> bool {
    match label.split_once('=') {
        Some((key, value)) => {
            !key.is_empty()
                && key.len() + value.len() < 1024
                && key.chars().all(|c| !c.is_whitespace() && !c.is_control())
                && value.chars().all(|c| !c.is_control())
        }
        None => false,
    }
}

/// A fully checked configuration.
#[derive(Debug, Clone)]
pub struct WardenConfig {
    pub policy: PathBuf,
    pub state_dir: PathBuf,
    pub executors: Vec<ExecutorName>,
    pub exec_helper: PathBuf,
    pub log_format: LogFormat,
    pub stream_only: bool,
    pub prisoners: Vec<PrisonerSocket>,
    /// The Docker engine (`unix://...` or `tcp://...`); default `DOCKER_HOST`, else
    /// `unix:///var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// Address of the HTTP API (`--listen`, `listen:`): `HOST:PORT`, or `none` for no
    /// API; unset means the default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// File holding the bearer token `GET /metrics` requires (`--metrics-token-file`,
    /// `metrics_token_file:`); unset: /metrics is open.
    pub metrics_token_file: Option<PathBuf>,
    /// Trust `X-Forwarded-Proto` from a reverse proxy in front of the API
    /// (`--trust-proxy`, `trust_proxy:`): dashboard cookies then get `Secure` behind TLS.
    pub trust_proxy: bool,
    /// User every locally executed command runs as (`--run-as`, `run_as:`), unless its
    /// rule names one; unset: the caller, when the warden can switch to it.
    pub run_as: Option<String>,
    /// Locally executed commands may run as the warden's own uid
    /// (`--allow-run-as-warden`, `allow_run_as_warden:`).
    pub allow_run_as_warden: bool,
    /// `PATH` of locally executed commands and where they are looked up
    /// (`--command-path`, `command_path:`).
    pub command_path: String,
    /// Caps on connections, pending asks and bytes kept per request (`max_*`).
    pub caps: CapsConfig,
    /// Where every audit line is also sent (`audit_syslog:`, `--audit-syslog`).
    pub audit_syslog: Option<SyslogConfig>,
}

/// `command_path` when the config does not set one.
pub const DEFAULT_COMMAND_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A config (or policy) that cannot be used.
#[derive(Debug)]
pub enum ConfigError {
    /// A problem at a position in a config file.
    At {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A problem with a whole file (cannot read it).
    File { file: PathBuf, message: String },
    /// A problem with a flag.
    Flag { flag: &'static str, message: String },
    /// The policy did not load; its Display is `FILE:LINE:COLUMN: message`.
    Policy(PolicyError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::At {
                file,
                line,
                column,
                message,
            } => write!(f, "{}:{line}:{column}: {message}", file.display()),
            ConfigError::File { file, message } => write!(f, "{}: {message}", file.display()),
            ConfigError::Flag { flag, message } => write!(f, "{flag}: {message}"),
            ConfigError::Policy(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    policy: PathBuf,
    state_dir: PathBuf,
    #[serde(default = "default_executors")]
    executors: Vec<ExecutorName>,
    exec_helper: Option<PathBuf>,
    #[serde(default)]
    log_format: LogFormat,
    #[serde(default)]
    stream_only: bool,
    prisoners: Vec<FilePrisoner>,
    docker_host: Option<String>,
    listen: Option<String>,
    metrics_token_file: Option<PathBuf>,
    #[serde(default)]
    trust_proxy: bool,
    run_as: Option<String>,
    #[serde(default)]
    allow_run_as_warden: bool,
    command_path: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_prisoner: Option<usize>,
    max_pending_per_prisoner: Option<usize>,
    max_request_bytes_kept: Option<usize>,
    audit_syslog: Option<FileSyslog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSyslog {
    address: String,
    #[serde(default)]
    facility: Facility,
    queue: Option<usize>,
}

/// The caps given (flags or file), defaults for the rest.
fn caps_from(
    max_connections: Option<usize>,
    per_prisoner: Option<usize>,
    pending: Option<usize>,
    kept: Option<usize>,
) -> CapsConfig {
    let d = CapsConfig::default();
    CapsConfig {
        max_connections: max_connections.unwrap_or(d.max_connections),
        max_connections_per_prisoner: per_prisoner.unwrap_or(d.max_connections_per_prisoner),
        max_pending_per_prisoner: pending.unwrap_or(d.max_pending_per_prisoner),
        max_request_bytes_kept: kept.unwrap_or(d.max_request_bytes_kept),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrisoner {
    name: String,
    socket: PathBuf,
    container: Option<String>,
    container_label: Option<String>,
}

fn default_executors() -> Vec<ExecutorName> {
    vec![ExecutorName::Local]
}

/// Where each value came from, so an error can point at it.
enum Origin<'a> {
    Flags,
    File { path: &'a Path, src: &'a str },
}

impl Origin<'_> {
    /// An error about `key` (a YAML key / flag pair), pointing at `value` when it can be
    /// found in the file (the `nth` occurrence, 0-based), else at the key.
    fn error(
        &self,
        key: &str,
        flag: &'static str,
        value: &str,
        nth: usize,
        message: String,
    ) -> ConfigError {
        match self {
            Origin::Flags => ConfigError::Flag { flag, message },
            Origin::File { path, src } => {
                let (line, column) = locate(src, key, value, nth).unwrap_or((1, 1));
                ConfigError::At {
                    file: path.to_path_buf(),
                    line,
                    column,
                    message,
                }
            }
        }
    }
}

/// 1-based line and column of `value` on the `nth` line holding `key:` and `value`, or
/// of the first `key:` when the value is not found.
fn locate(src: &str, key: &str, value: &str, nth: usize) -> Option<(usize, usize)> {
    let pattern = format!("{key}:");
    let mut seen = 0;
    let mut key_pos = None;
    for (i, line) in src.lines().enumerate() {
        let Some(k) = line.find(&pattern) else {
            continue;
        };
        key_pos.get_or_insert((i + 1, k + 1));
        if value.is_empty() {
            continue;
        }
        if let Some(v) = line[k + pattern.len()..].find(value) {
            if seen == nth {
                return Some((i + 1, k + pattern.len() + v + 1));
            }
            seen += 1;
        }
    }
    key_pos
}

/// What the binary was asked to do, once checked.
#[derive(Debug)]
pub struct Loaded {
    pub config: WardenConfig,
    pub policy: Policy,
}

/// Builds and checks the configuration from the command line (flags or `--config`), and
/// loads the policy it names.
pub fn load(args: &RunArgs) -> Result<Loaded, ConfigError> {
    let mut config = match &args.config {
        Some(path) => from_file(path)?,
        None => from_flags(args)?,
    };
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    let policy = Policy::load(&config.policy).map_err(ConfigError::Policy)?;
    Ok(Loaded { config, policy })
}

/// Checks a warden.yaml and the policy it names.
pub fn check_config_file(path: &Path) -> Result<Loaded, ConfigError> {
    let config = from_file(path)?;
    let policy = Policy::load(&config.policy).map_err(ConfigError::Policy)?;
    Ok(Loaded { config, policy })
}

/// Checks a policy file alone.
pub fn check_policy_file(path: &Path) -> Result<Policy, ConfigError> {
    Policy::load(path).map_err(ConfigError::Policy)
}

fn default_exec_helper() -> Result<PathBuf, ConfigError> {
    let exe = std::env::current_exe().map_err(|e| ConfigError::Flag {
        flag: "--exec-helper",
        message: format!("cannot find this binary's own path ({e}); pass --exec-helper PATH"),
    })?;
    Ok(exe.with_file_name("clawrden-shim"))
}

fn absolute(p: &Path, base: Option<&Path>) -> PathBuf {
    if p.is_absolute() {
        return p.to_owned();
    }
    match base {
        Some(b) => b.join(p),
        None => std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_owned()),
    }
}

/// Builds the config from flags.
pub fn from_flags(args: &RunArgs) -> Result<WardenConfig, ConfigError> {
    let missing = |flag: &'static str| ConfigError::Flag {
        flag,
        message: format!("required (or give --config warden.yaml); see {flag} in --help"),
    };
    let policy = absolute(
        args.policy.as_deref().ok_or_else(|| missing("--policy"))?,
        None,
    );
    let state_dir = absolute(
        args.state_dir
            .as_deref()
            .ok_or_else(|| missing("--state-dir"))?,
        None,
    );
    let socket = absolute(
        args.socket.as_deref().ok_or_else(|| missing("--socket"))?,
        None,
    );
    let executors = if args.executor.is_empty() {
        default_executors()
    } else {
        args.executor.clone()
    };
    let exec_helper = match &args.exec_helper {
        Some(p) => absolute(p, None),
        None => default_exec_helper()?,
    };
    let config = WardenConfig {
        policy,
        state_dir,
        executors,
        exec_helper,
        log_format: args.log_format.unwrap_or_default(),
        stream_only: args.stream_only,
        prisoners: vec![PrisonerSocket {
            name: args
                .prisoner
                .clone()
                .unwrap_or_else(|| DEFAULT_PRISONER.to_owned()),
            socket,
            container: None,
        }],
        docker_host: None,
        listen: args.listen.clone(),
        metrics_token_file: args
            .metrics_token_file
            .as_deref()
            .map(|p| absolute(p, None)),
        trust_proxy: args.trust_proxy,
        run_as: args.run_as.clone(),
        allow_run_as_warden: args.allow_run_as_warden,
        command_path: args
            .command_path
            .clone()
            .unwrap_or_else(|| DEFAULT_COMMAND_PATH.to_owned()),
        caps: caps_from(
            args.max_connections,
            args.max_connections_per_prisoner,
            args.max_pending_per_prisoner,
            args.max_request_bytes_kept,
        ),
        audit_syslog: args.audit_syslog.clone().map(|address| SyslogConfig {
            address,
            facility: Facility::default(),
            queue: DEFAULT_QUEUE,
        }),
    };
    validate(&config, &Origin::Flags)?;
    Ok(config)
}

/// Reads and checks a warden.yaml. Relative paths in it are relative to its directory.
pub fn from_file(path: &Path) -> Result<WardenConfig, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        file: path.to_owned(),
        message: format!("cannot read the warden config: {e}"),
    })?;
    parse_file(path, &src)
}

/// Parses and checks warden.yaml text; `path` names it in errors and anchors relative paths.
pub fn parse_file(path: &Path, src: &str) -> Result<WardenConfig, ConfigError> {
    let raw: FileConfig = serde_yaml::from_str(src).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        ConfigError::At {
            file: path.to_owned(),
            line,
            column,
            message: strip_location(&e.to_string()),
        }
    })?;
    let origin = Origin::File { path, src };
    let base = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut prisoners = Vec::with_capacity(raw.prisoners.len());
    for (i, p) in raw.prisoners.iter().enumerate() {
        let container = match (&p.container, &p.container_label) {
            (Some(_), Some(label)) => {
                let nth = raw.prisoners[..i]
                    .iter()
                    .filter(|q| q.container_label.as_deref() == Some(label))
                    .count();
                return Err(origin.error(
                    "container_label",
                    "--config",
                    label,
                    nth,
                    format!(
                        "prisoner {:?} has both `container:` and `container_label:`; give exactly one of them",
                        p.name
                    ),
                ));
            }
            (Some(name), None) => {
                if !valid_container_name(name) {
                    return Err(invalid_container(&origin, name));
                }
                Some(name.clone())
            }
            (None, Some(label)) => {
                if !valid_container_label(label) {
                    let nth = raw.prisoners[..i]
                        .iter()
                        .filter(|q| q.container_label.as_deref() == Some(label))
                        .count();
                    return Err(origin.error(
                        "container_label",
                        "--config",
                        label,
                        nth,
                        format!(
                            "invalid container_label {label:?}: write KEY=VALUE, e.g. org.clawrden.prisoner=agent-1"
                        ),
                    ));
                }
                Some(format!("{LABEL_SELECTOR_PREFIX}{label}"))
            }
            (None, None) => None,
        };
        prisoners.push(PrisonerSocket {
            name: p.name.clone(),
            socket: absolute(&p.socket, base),
            container,
        });
    }
    let exec_helper = match raw.exec_helper {
        Some(p) => absolute(&p, base),
        None => default_exec_helper()?,
    };
    let config = WardenConfig {
        policy: absolute(&raw.policy, base),
        state_dir: absolute(&raw.state_dir, base),
        executors: raw.executors,
        exec_helper,
        log_format: raw.log_format,
        stream_only: raw.stream_only,
        prisoners,
        docker_host: raw.docker_host,
        listen: raw.listen,
        metrics_token_file: raw.metrics_token_file.map(|p| absolute(&p, base)),
        trust_proxy: raw.trust_proxy,
        run_as: raw.run_as,
        allow_run_as_warden: raw.allow_run_as_warden,
        command_path: raw
            .command_path
            .unwrap_or_else(|| DEFAULT_COMMAND_PATH.to_owned()),
        caps: caps_from(
            raw.max_connections,
            raw.max_connections_per_prisoner,
            raw.max_pending_per_prisoner,
            raw.max_request_bytes_kept,
        ),
        audit_syslog: raw.audit_syslog.map(|s| SyslogConfig {
            address: s.address,
            facility: s.facility,
            queue: s.queue.unwrap_or(DEFAULT_QUEUE),
        }),
    };
    validate(&config, &origin)?;
    Ok(config)
}

/// A `command_path`: one or more absolute directories separated by `:`.
fn check_command_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("command_path is empty; list absolute directories like /usr/bin:/bin".into());
    }
    match path.split(':').find(|dir| !dir.starts_with('/')) {
        Some(dir) => Err(format!(
            "command_path entry {dir:?} is not an absolute directory; commands must never be looked up relative to a working directory"
        )),
        None => Ok(()),
    }
}

/// serde_yaml appends " at line L column C"; the position is printed in front instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(" column ") => msg[..i].to_owned(),
        _ => msg.to_owned(),
    }
}

fn valid_prisoner_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) or id.
fn valid_container_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn invalid_container(origin: &Origin<'_>, container: &str) -> ConfigError {
    origin.error(
        "container",
        "--config",
        container,
        0,
        format!(
            "invalid container {container:?}: give the container's name or id (letters, digits, '.', '_' or '-'), or use container_label: KEY=VALUE"
        ),
    )
}

fn validate(c: &WardenConfig, origin: &Origin<'_>) -> Result<(), ConfigError> {
    let caps = [
        (
            "max_connections",
            "--max-connections",
            c.caps.max_connections,
            1,
        ),
        (
            "max_connections_per_prisoner",
            "--max-connections-per-prisoner",
            c.caps.max_connections_per_prisoner,
            1,
        ),
        (
            "max_pending_per_prisoner",
            "--max-pending-per-prisoner",
            c.caps.max_pending_per_prisoner,
            1,
        ),
        (
            "max_request_bytes_kept",
            "--max-request-bytes-kept",
            c.caps.max_request_bytes_kept,
            1024,
        ),
    ];
    for (key, flag, value, least) in caps {
        if value < least {
            return Err(origin.error(
                key,
                flag,
                &value.to_string(),
                0,
                format!("{key} is {value}; it must be at least {least}"),
            ));
        }
    }
    if let Some(sink) = &c.audit_syslog {
        if let Err(message) = crate::audit_forward::check_address(&sink.address) {
            return Err(origin.error("address", "--audit-syslog", &sink.address, 0, message));
        }
        if sink.queue == 0 {
            return Err(origin.error(
                "queue",
                "--config",
                "0",
                0,
                "audit_syslog queue is 0; it must hold at least one line".to_owned(),
            ));
        }
    }
    if let Some(host) = &c.docker_host {
        let supported = ["unix:///", "tcp://", "http://"]
            .iter()
            .any(|scheme| host.starts_with(scheme));
        if !supported {
            return Err(origin.error(
                "docker_host",
                "--config",
                host,
                0,
                format!("docker_host {host:?} is not supported: use unix:///path/to/docker.sock or tcp://HOST:PORT"),
            ));
        }
    }
    if c.prisoners.is_empty() {
        return Err(origin.error(
            "prisoners",
            "--socket",
            "",
            0,
            "no prisoners: add at least one `- name: NAME` / `socket: PATH` entry".to_owned(),
        ));
    }
    for (i, p) in c.prisoners.iter().enumerate() {
        if !valid_prisoner_name(&p.name) {
            return Err(origin.error(
                "name",
                "--prisoner",
                &p.name,
                0,
                format!(
                    "invalid prisoner name {:?}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
                    p.name
                ),
            ));
        }
        let same_name = c.prisoners[..i].iter().filter(|q| q.name == p.name).count();
        if same_name > 0 {
            return Err(origin.error(
                "name",
                "--prisoner",
                &p.name,
                same_name,
                format!(
                    "prisoner {:?} is listed twice; names must be unique",
                    p.name
                ),
            ));
        }
        if let Some(container) = &p.container {
            let valid = match container.strip_prefix(LABEL_SELECTOR_PREFIX) {
                Some(label) => valid_container_label(label),
                None => valid_container_name(container),
            };
            if !valid {
                return Err(invalid_container(origin, container));
            }
        }
        let sock = p.socket.to_string_lossy();
        let same_socket = c.prisoners[..i]
            .iter()
            .filter(|q| q.socket == p.socket)
            .count();
        if same_socket > 0 {
            return Err(origin.error(
                "socket",
                "--socket",
                &sock,
                same_socket,
                format!("socket {sock} is used by two prisoners; each needs its own"),
            ));
        }
        if p.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(origin.error(
                "socket",
                "--socket",
                &sock,
                same_socket,
                format!(
                    "socket path {sock} is {} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}: choose a shorter one",
                    p.socket.as_os_str().len()
                ),
            ));
        }
    }
    if c.executors.is_empty() {
        return Err(origin.error(
            "executors",
            "--executor",
            "",
            0,
            "no executors: list at least one of local, mirror, ghost".to_owned(),
        ));
    }
    for e in &c.executors {
        if !AVAILABLE_EXECUTORS.contains(e) {
            return Err(origin.error(
                "executors",
                "--executor",
                e.as_str(),
                0,
                format!(
                    "executor {} is not available in this build of the warden (available: local, mirror); remove it",
                    e.as_str()
                ),
            ));
        }
    }
    if c.executors.contains(&ExecutorName::Local) {
        let helper = c.exec_helper.to_string_lossy();
        let problem = match std::fs::metadata(&c.exec_helper) {
            Err(e) => Some(format!("exec helper {helper}: {e}; install clawrden-shim there or set exec_helper / --exec-helper")),
            Ok(m) if !m.is_file() => Some(format!("exec helper {helper} is not a regular file")),
            Ok(m) if m.permissions().mode() & 0o111 == 0 => {
                Some(format!("exec helper {helper} is not executable; chmod +x it"))
            }
            Ok(_) => None,
        };
        if let Some(message) = problem {
            return Err(origin.error("exec_helper", "--exec-helper", &helper, 0, message));
        }
    }
    if let Some(user) = &c.run_as {
        if let Err(message) = crate::identity::check_user_name(user) {
            return Err(origin.error("run_as", "--run-as", user, 0, message));
        }
    }
    if let Err(message) = check_command_path(&c.command_path) {
        return Err(origin.error(
            "command_path",
            "--command-path",
            &c.command_path,
            0,
            message,
        ));
    }
    if let Ok(m) = std::fs::metadata(&c.state_dir) {
        if !m.is_dir() {
            let d = c.state_dir.to_string_lossy();
            return Err(origin.error(
                "state_dir",
                "--state-dir",
                &d,
                0,
                format!("state dir {d} exists and is not a directory"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
