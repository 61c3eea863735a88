//! The executors this warden runs, by the name policies use (`local`, `mirror`, `ghost`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::cli::ExecutorName;
use crate::config::WardenConfig;
use crate::docker::{DockerClient, DockerRuntime};
use crate::executor::local::cgroup::RequestCgroups;
use crate::executor::local::{LocalExecutor, LocalOptions};
use crate::executor::mirror::MirrorExecutor;
use crate::executor::Executor;
use crate::identity::RunAs;

/// Enabled executors. A verdict naming one not in here is denied (fail closed).
#[derive(Default, Clone)]
pub struct ExecutorRegistry {
    entries: Vec<(String, Arc<dyn Executor>)>,
}

impl std::fmt::Debug for ExecutorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(n, _)| n))
            .finish()
    }
}

impl ExecutorRegistry {
    /// No executors: every allowed call is denied.
    pub fn new() -> ExecutorRegistry {
        ExecutorRegistry::default()
    }

    /// Enables `executor` under `name` (replacing any earlier one of that name).
    pub fn insert(&mut self, name: &str, executor: Arc<dyn Executor>) {
        self.entries.retain(|(n, _)| n != name);
        self.entries.push((name.to_owned(), executor));
    }

    /// The executor enabled under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Executor>> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.clone())
    }

    /// Names of the enabled executors.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The executors a checked config enables, with the Docker client the mirror executor
    /// uses (for the prisoner runtime too), when it is enabled. `run_as` (from
    /// [`crate::app::check_local_execution`]) is required when `local` is enabled.
    pub fn for_config(
        config: &WardenConfig,
        run_as: Option<RunAs>,
    ) -> Result<(ExecutorRegistry, Option<DockerClient>), String> {
        let mut reg = ExecutorRegistry::new();
        for e in &config.executors {
            match e {
                ExecutorName::Local => {
                    let run_as = run_as
                        .clone()
                        .ok_or("the local executor needs its run-as settings checked first")?;
                    reg.insert(e.as_str(), Arc::new(local_executor(config, run_as)?));
                }
                ExecutorName::Mirror => {}
                ExecutorName::Ghost => {
                    tracing::error!(
                        executor = e.as_str(),
                        "executor not available in this build; calls routed to it are denied"
                    );
                }
            }
        }
        if !config.executors.contains(&ExecutorName::Mirror) {
            return Ok((reg, None));
        }
        let docker = DockerClient::new(config.docker_host.as_deref())
            .map_err(|e| format!("cannot set up the mirror executor: {e}"))?;
        let containers: HashMap<String, String> = config
            .prisoners
            .iter()
            .map(|p| (p.name.clone(), p.container_name().to_owned()))
            .collect();
        reg.insert(
            ExecutorName::Mirror.as_str(),
            Arc::new(MirrorExecutor::new(docker.clone(), containers)),
        );
        Ok((reg, Some(docker)))
    }

    /// The prisoner runtime (kill, pause, resume) over the mirror executor's Docker client.
    pub fn docker_runtime(docker: &DockerClient) -> Arc<DockerRuntime> {
        Arc::new(DockerRuntime::new(docker.clone()))
    }
}

/// The local executor of a checked config: per-request cgroups when the host offers them
/// (said once in the log either way).
fn local_executor(config: &WardenConfig, run_as: RunAs) -> Result<LocalExecutor, String> {
    let cgroups = match RequestCgroups::detect(&config.state_dir) {
        Ok(c) => {
            tracing::info!(cgroup = %c.parent().display(), "locally executed commands each get a cgroup, killed with cgroup.kill when their request ends");
            Some(c)
        }
        Err(why) => {
            tracing::warn!(reason = %why, "per-request cgroups unavailable; the exec-helper (a supervisor the command cannot signal) alone keeps each process tree killable");
            None
        }
    };
    LocalExecutor::new(LocalOptions {
        exec_helper: config.exec_helper.clone(),
        command_path: config.command_path.clone().into(),
        run_as,
        cgroups,
    })
    .map_err(|err| format!("cannot set up the local executor: {err}"))
}
