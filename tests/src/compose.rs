//! The repository's docker-compose.yml, brought up with `scripts/up.sh` under a unique
//! project, container name and ports, and taken down (`down -v --rmi local`) when dropped.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::docker::{repo_root, unique_container_name, Container, ExecOutput};
use crate::tempdir::TempDir;

/// The compose command installed here: the `docker compose` plugin, else docker-compose v1.
pub fn compose_command() -> Result<Vec<String>, String> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .stdin(Stdio::null())
        .output();
    if plugin.is_ok_and(|o| o.status.success()) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    let v1 = Command::new("docker-compose")
        .arg("version")
        .stdin(Stdio::null())
        .output();
    if v1.is_ok_and(|o| o.status.success()) {
        return Ok(vec!["docker-compose".into()]);
    }
    Err("neither the docker compose plugin nor docker-compose is installed".into())
}

/// How to bring a stack up.
#[derive(Debug, Clone, Default)]
pub struct ComposeOptions {
    /// The checkout whose `scripts/up.sh` and `docker-compose.yml` run (default: this one).
    pub root: Option<PathBuf>,
    /// `CLAWRDEN_BASE_IMAGE`; `None` lets up.sh choose (pull, else a local build).
    pub base_image: Option<String>,
    /// A policy for the warden (`CLAWRDEN_POLICY`); `None` keeps docker/policy.yaml.
    pub policy: Option<String>,
    /// `scripts/up.sh --metrics`: Prometheus too, on its own free port.
    pub metrics: bool,
    /// Run up.sh with exactly `env` (plus the stack's variables) instead of inheriting
    /// this process' environment.
    pub clear_env: bool,
    /// Extra environment for up.sh.
    pub env: Vec<(OsString, OsString)>,
}

/// A running docker-compose.yml stack.
pub struct ComposeStack {
    pub project: String,
    pub prisoner_container: String,
    pub api_port: u16,
    /// Prometheus' host port (with [`ComposeOptions::metrics`]).
    pub prometheus_port: u16,
    /// What up.sh printed: stdout (the login) and stderr (its progress).
    pub up_stdout: String,
    pub up_stderr: String,
    /// How long up.sh took.
    pub took: Duration,
    root: PathBuf,
    compose: Vec<String>,
    dir: TempDir,
    policy: Option<PathBuf>,
    clear_env: bool,
    env: Vec<(OsString, OsString)>,
}

impl fmt::Debug for ComposeStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComposeStack")
            .field("project", &self.project)
            .finish()
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

impl ComposeStack {
    /// Runs `scripts/up.sh` for a new project whose prisoner is built from `base_image`,
    /// with `policy`. Returns the stack and how long `up.sh` took.
    pub fn up(base_image: &str, policy: &str) -> Result<(ComposeStack, Duration), String> {
        let stack = ComposeStack::start(ComposeOptions {
            base_image: Some(base_image.to_string()),
            policy: Some(policy.to_string()),
            ..ComposeOptions::default()
        })?;
        let took = stack.took;
        Ok((stack, took))
    }

    /// Runs `scripts/up.sh` as `options` say, under a unique project name, prisoner
    /// container name (up.sh writes the warden config that names it), API port and
    /// Prometheus port.
    pub fn start(options: ComposeOptions) -> Result<ComposeStack, String> {
        let compose = compose_command()?;
        let unique = unique_container_name();
        let dir = TempDir::new("compose");
        let policy = match &options.policy {
            Some(yaml) => {
                let path = dir.path().join("policy.yaml");
                std::fs::write(&path, yaml).map_err(|e| format!("write policy.yaml: {e}"))?;
                Some(path)
            }
            None => None,
        };
        let mut stack = ComposeStack {
            project: unique.replace("clawrden-test-", "clawrdentest"),
            prisoner_container: format!("{unique}-prisoner"),
            api_port: free_port()?,
            prometheus_port: free_port()?,
            up_stdout: String::new(),
            up_stderr: String::new(),
            took: Duration::ZERO,
            root: options.root.clone().unwrap_or_else(repo_root),
            compose,
            dir,
            policy,
            clear_env: options.clear_env,
            env: options.env.clone(),
        };
        let mut command = Command::new(stack.root.join("scripts/up.sh"));
        if options.metrics {
            command.arg("--metrics");
        }
        if options.clear_env {
            command.env_clear();
        }
        command
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .envs(stack.stack_env())
            .env("CLAWRDEN_TOKEN_DIR", stack.token_dir());
        if let Some(base) = &options.base_image {
            command.env("CLAWRDEN_BASE_IMAGE", base);
        }
        let started = Instant::now();
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/up.sh: {e}"))?;
        stack.took = started.elapsed();
        stack.up_stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stack.up_stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            // Dropping the stack takes down whatever part of it started.
            return Err(format!(
                "scripts/up.sh failed ({}):\n{}{}",
                output.status, stack.up_stdout, stack.up_stderr
            ));
        }
        Ok(stack)
    }

    /// Runs this stack's `scripts/up.sh ARGS` again (e.g. `--down`) with the environment it
    /// was started with.
    pub fn run_up_sh(&self, args: &[&str]) -> Result<ExecOutput, String> {
        let mut command = Command::new(self.root.join("scripts/up.sh"));
        if self.clear_env {
            command.env_clear();
        }
        let output = command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.stack_env())
            .env("CLAWRDEN_TOKEN_DIR", self.token_dir())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/up.sh: {e}"))?;
        Ok(ExecOutput::from_output(output))
    }

    /// The variables docker-compose.yml reads for this stack.
    fn stack_env(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vec![
            ("COMPOSE_PROJECT_NAME".into(), self.project.clone().into()),
            (
                "CLAWRDEN_PRISONER_CONTAINER".into(),
                self.prisoner_container.clone().into(),
            ),
            ("CLAWRDEN_API_PORT".into(), self.api_port.to_string().into()),
            (
                "CLAWRDEN_PROMETHEUS_PORT".into(),
                self.prometheus_port.to_string().into(),
            ),
        ];
        if let Some(policy) = &self.policy {
            env.push(("CLAWRDEN_POLICY".into(), policy.clone().into()));
        }
        env
    }

    /// The warden config up.sh wrote for this stack's prisoner container name.
    fn warden_config(&self) -> PathBuf {
        self.root
            .join("docker/bin")
            .join(format!("warden-{}.yaml", self.prisoner_container))
    }

    /// Runs `COMPOSE -p PROJECT -f docker-compose.yml --profile metrics ARGS`.
    pub fn compose(&self, args: &[&str]) -> Result<ExecOutput, String> {
        let file = self.root.join("docker-compose.yml");
        let output = Command::new(&self.compose[0])
            .args(&self.compose[1..])
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&file)
            .args(["--profile", "metrics"])
            .args(args)
            .envs(self.stack_env())
            .env("CLAWRDEN_WARDEN_CONFIG", self.warden_config())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.compose.join(" ")))?;
        Ok(ExecOutput::from_output(output))
    }

    /// The prisoner's container (left to compose).
    pub fn prisoner(&self) -> Container {
        Container::managed_elsewhere(&self.prisoner_container, "compose prisoner")
    }

    /// The host directory of the named volume `NAME` of this project.
    pub fn volume_dir(&self, name: &str) -> Result<PathBuf, String> {
        let output = Command::new("docker")
            .args(["volume", "inspect", "-f", "{{.Mountpoint}}"])
            .arg(format!("{}_{name}", self.project))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "docker volume inspect {}_{name}: {}",
                self.project,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ))
    }

    /// The admin token, read off the warden's state volume.
    pub fn admin_token(&self) -> Result<String, String> {
        let path = self.volume_dir("warden-state")?.join("admin.token");
        std::fs::read_to_string(&path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The directory up.sh copied the admin token into (`CLAWRDEN_TOKEN_DIR`).
    pub fn token_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// The checkout this stack runs from.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--rmi", "local"]);
        let _ = std::fs::remove_file(self.warden_config());
    }
}
