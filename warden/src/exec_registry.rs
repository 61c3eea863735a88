//! The executors this warden runs, by the name policies use (`local`, `mirror`, `ghost`).

use std::path::Path;
use std::sync::Arc;

use crate::cli::ExecutorName;
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

    /// The executors a checked config enables. Config validation already refused the
    /// ones this build does not have.
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
