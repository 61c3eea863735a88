//! The executors this warden runs, by the name policies use (`local`, `mirror`, `ghost`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::cli::ExecutorName;
use crate::config::WardenConfig;
use crate::docker::{DockerClient, DockerRuntime};
use crate::executor::mirror::MirrorExecutor;
use crate::executor::Executor;

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
    /// uses (for the prisoner runtime too), when it is enabled.
    pub fn for_config(
        config: &WardenConfig,
    ) -> Result<(ExecutorRegistry, Option<DockerClient>), String> {
        let others: Vec<ExecutorName> = config
            .executors
            .iter()
            .copied()
            .filter(|e| *e != ExecutorName::Mirror)
            .collect();
        let mut reg = ExecutorRegistry::from_config(&others, &config.exec_helper)?;
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

    /// The executors a checked config enables. Config validation already refused the
    /// ones this build does not have. Mirror needs the prisoners' containers: use
    /// [`ExecutorRegistry::for_config`].
    pub fn from_config(
        executors: &[ExecutorName],
        exec_helper: &Path,
    ) -> Result<ExecutorRegistry, String> {
        let mut reg = ExecutorRegistry::new();
        for e in executors {
            match e {
                ExecutorName::Local => {
                    let local =
                        crate::executor::local::LocalExecutor::new(exec_helper.to_owned(), None)
                            .map_err(|err| format!("cannot set up the local executor: {err}"))?;
                    reg.insert(e.as_str(), Arc::new(local));
                }
                ExecutorName::Mirror | ExecutorName::Ghost => {
                    // Mirror is built by `for_config`, which knows the containers.
                    tracing::error!(
                        executor = e.as_str(),
                        "executor not available in this build; calls routed to it are denied"
                    );
                }
            }
        }
        Ok(reg)
    }
}
