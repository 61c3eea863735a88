//! At start-up: killing what a predecessor on the same state directory left running.
//!
//! A warden that dies (`kill -9`, a crash, the host's OOM killer) cannot end its running
//! requests; the next one marks them `abandoned` in the store. Their processes may still
//! run: mirror's exec-helpers live in the prisoners and outlive the warden by design, and
//! local ones may have escaped a helper that died with it. So each executor is asked to
//! kill whatever is left of the requests it ran ([`crate::executor::Executor::reap_abandoned`]),
//! in every prisoner, and each outcome is audited as a `cancel` event of that request
//! (`by: warden`, `leftovers: killed | none_left | failed`).

use std::sync::Arc;

use crate::audit::{Event, EventKind};
use crate::control::ControlPlane;
use crate::exec_registry::ExecutorRegistry;
use crate::executor::{AbandonedRequest, Leftovers};

/// `reason` of the audit event.
pub const REASON: &str = "abandoned: the warden restarted while it ran";

/// Asks every enabled executor to kill the leftovers of the requests it ran, and audits
/// what became of each. Returns the number of requests whose processes were killed.
pub async fn reap_abandoned(control: Arc<ControlPlane>, executors: ExecutorRegistry) -> usize {
    let mut killed = 0;
    for name in executors.names() {
        let Some(executor) = executors.get(&name) else {
            continue;
        };
        let requests: Vec<AbandonedRequest> = control
            .abandoned_running()
            .iter()
            .filter(|(_, _, e)| e.as_deref() == Some(name.as_str()))
            .map(|(id, prisoner, _)| AbandonedRequest {
                id: id.clone(),
                prisoner: prisoner.clone(),
            })
            .collect();
        for (id, leftovers) in executor.reap_abandoned(&requests).await {
            let mut event = Event::for_request(EventKind::Cancel, &id)
                .with("reason", REASON)
                .with("by", "warden")
                .with("executor", name.as_str())
                .with("leftovers", leftovers.as_str());
            match &leftovers {
                Leftovers::Killed => {
                    killed += 1;
                    tracing::warn!(request_id = %id, executor = %name, "killed the processes an abandoned request left running");
                }
                Leftovers::NoneLeft => {
                    tracing::info!(request_id = %id, executor = %name, "nothing of the abandoned request was left running");
                }
                Leftovers::Failed(why) => {
                    event = event.with("error", why.as_str());
                    tracing::error!(request_id = %id, executor = %name, error = %why, "cannot kill what an abandoned request left running; check for it by hand");
                }
            }
            if let Err(e) = control.record(&event) {
                tracing::error!(request_id = %id, error = %e, "cannot write audit event");
            }
        }
    }
    killed
}
