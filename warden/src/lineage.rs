//! Which running request a call was made from (`parent_request`), recorded only when
//! the warden can check it.
//!
//! The shim takes the claim from its environment (`CLAWRDEN_PARENT_REQUEST`), which the
//! caller controls: any process could say it is the child of any request. So a claim is
//! *verified* only when the claimed request is running now, for the same prisoner, and
//! - it runs in the `local` executor and the caller (its pid from `SO_PEERCRED`) is inside
//!   that command's process tree; or
//! - it runs elsewhere (`mirror`, `ghost`: another pid namespace, whose pids the warden
//!   cannot check) and the caller holds the secret the warden put in that command's
//!   environment (`CLAWRDEN_PARENT_TOKEN`), which the shim forwards with the rest.
//!
//! Anything else is recorded as an *unverified* claim with the reason, never as a parent
//! (README, "Threat model"; docs/security.md, section 9).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The environment variable that carries a running command's secret to its nested calls.
pub const PARENT_TOKEN_ENV: &str = "CLAWRDEN_PARENT_TOKEN";

/// Longest claimed id recorded (request ids are 26 characters); longer claims are cut.
const CLAIM_MAX: usize = 64;

/// How long a nested call waits for its claimed parent's process to be reported, when
/// the parent is running but its executor has not said which pid it has yet.
const PID_WAIT: Duration = Duration::from_secs(2);

/// What the warden records about a call's parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentLink {
    /// The call claims no parent.
    None,
    /// The call comes from this running request (checked).
    Verified(String),
    /// The call claims a parent the warden could not confirm.
    Unverified {
        /// The claimed id, as sent (cut to 64 characters).
        claimed: String,
        /// Why it was not confirmed.
        reason: String,
    },
}

impl ParentLink {
    /// The verified parent's id.
    pub fn verified(&self) -> Option<&str> {
        match self {
            ParentLink::Verified(id) => Some(id),
            _ => None,
        }
    }

    /// The claim and the reason it was not confirmed.
    pub fn unverified(&self) -> Option<(&str, &str)> {
        match self {
            ParentLink::Unverified { claimed, reason } => Some((claimed, reason)),
            _ => None,
        }
    }

    /// The unverified claim as the store keeps it.
    pub fn unverified_record(&self) -> Option<crate::store::UnverifiedParent> {
        self.unverified()
            .map(|(claimed, reason)| crate::store::UnverifiedParent {
                claimed: claimed.to_owned(),
                reason: reason.to_owned(),
            })
    }
}

struct Link {
    prisoner: String,
    executor: String,
    token_sha256: [u8; 32],
    pid: watch::Receiver<Option<u32>>,
}

/// The running requests that nested calls may name as their parent.
#[derive(Default)]
pub struct Lineage {
    links: Mutex<HashMap<String, Link>>,
}

impl std::fmt::Debug for Lineage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lineage")
            .field("running", &self.lock().len())
            .finish()
    }
}

/// A running request's entry; removed when dropped (the command ended).
pub struct LinkGuard {
    lineage: Arc<Lineage>,
    id: String,
    token: String,
    pid: watch::Sender<Option<u32>>,
}

impl std::fmt::Debug for LinkGuard {
    // The token is a secret: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkGuard").field("id", &self.id).finish()
    }
}

impl LinkGuard {
    /// The secret to put in the command's environment as [`PARENT_TOKEN_ENV`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Records the pid the executor reported for the command's supervisor.
    pub fn started(&self, pid: u32) {
        let _ = self.pid.send(Some(pid));
    }
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        self.lineage.lock().remove(&self.id);
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equal without an early exit, so timing does not tell how much of a guess was right.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn looks_like_an_id(claim: &str) -> bool {
    !claim.is_empty()
        && claim.len() <= CLAIM_MAX
        && claim
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn cut(claim: &str) -> String {
    match claim.char_indices().nth(CLAIM_MAX) {
        Some((i, _)) => format!("{}…", &claim[..i]),
        None => claim.to_owned(),
    }
}

/// The first value of `name` in `env` (the first wins, as with `getenv`).
fn env_value<'e>(env: &'e [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'e [u8]> {
    env.iter()
        .find(|(k, _)| k.as_slice() == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}

impl Lineage {
    /// An empty registry, shared by every prisoner's sessions.
    pub fn new() -> Arc<Lineage> {
        Arc::new(Lineage::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Link>> {
        // A panic while holding the lock leaves a valid map; keep serving.
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers request `id` as running for `prisoner` in `executor`, with a fresh
    /// 32-byte secret read from /dev/urandom.
    pub fn register(
        self: &Arc<Self>,
        id: &str,
        prisoner: &str,
        executor: &str,
    ) -> std::io::Result<LinkGuard> {
        let mut secret = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
        let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let (pid_tx, pid_rx) = watch::channel(None);
        self.lock().insert(
            id.to_owned(),
            Link {
                prisoner: prisoner.to_owned(),
                executor: executor.to_owned(),
                token_sha256: sha256(token.as_bytes()),
                pid: pid_rx,
            },
        );
        Ok(LinkGuard {
            lineage: self.clone(),
            id: id.to_owned(),
            token,
            pid: pid_tx,
        })
    }

    /// Registers a command about to run and adds its secret to `env` as
    /// [`PARENT_TOKEN_ENV`]. When no secret can be made (no /dev/urandom) the command
    /// runs without one, and its nested calls are recorded as unverified.
    pub fn link_command(
        self: &Arc<Self>,
        id: &str,
        prisoner: &str,
        executor: &str,
        env: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Option<LinkGuard> {
        match self.register(id, prisoner, executor) {
            Ok(link) => {
                env.push((
                    PARENT_TOKEN_ENV.as_bytes().to_vec(),
                    link.token().as_bytes().to_vec(),
                ));
                Some(link)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot make a parent-link secret from /dev/urandom; nested calls of this command will be recorded as unverified");
                None
            }
        }
    }

    /// Checks a call's claim to come from request `claimed`. `env` is the call's
    /// environment (for the token), `caller_pid` its pid from `SO_PEERCRED`.
    pub async fn verify(
        &self,
        claimed: Option<&str>,
        env: &[(Vec<u8>, Vec<u8>)],
        prisoner: &str,
        caller_pid: Option<i32>,
    ) -> ParentLink {
        let Some(claimed) = claimed else {
            return ParentLink::None;
        };
        let unverified = |reason: String| ParentLink::Unverified {
            claimed: cut(claimed),
            reason,
        };
        if !looks_like_an_id(claimed) {
            return unverified("not a request id".to_owned());
        }
        let (executor, token_sha256, mut pid) = {
            let links = self.lock();
            let Some(link) = links.get(claimed) else {
                return unverified(format!(
                    "request {claimed} is not running (it finished, or never existed)"
                ));
            };
            if link.prisoner != prisoner {
                return unverified(format!(
                    "request {claimed} runs for prisoner {}, not {prisoner}",
                    link.prisoner
                ));
            }
            (link.executor.clone(), link.token_sha256, link.pid.clone())
        };
        if executor != "local" {
            let given = env_value(env, PARENT_TOKEN_ENV).map(sha256);
            return match given {
                Some(given) if same(&given, &token_sha256) => {
                    ParentLink::Verified(claimed.to_owned())
                }
                Some(_) => unverified(format!(
                    "the caller's {PARENT_TOKEN_ENV} is not the secret of request {claimed}"
                )),
                None => unverified(format!(
                    "the caller does not hold the secret of request {claimed} ({PARENT_TOKEN_ENV})"
                )),
            };
        }
        let Some(caller) = caller_pid.filter(|&p| p > 0) else {
            return unverified("the kernel did not say which process called".to_owned());
        };
        let root = match tokio::time::timeout(PID_WAIT, pid.wait_for(Option::is_some)).await {
            Ok(Ok(p)) => *p,
            Ok(Err(_)) => None,
            Err(_) => None,
        };
        let Some(root) = root.and_then(|p| i32::try_from(p).ok()) else {
            return unverified(format!("request {claimed} has no running process"));
        };
        if crate::executor::local::procfs::in_tree_of(caller, root) {
            ParentLink::Verified(claimed.to_owned())
        } else {
            unverified(format!(
                "the caller (pid {caller}) is not inside the process tree of request {claimed} (pid {root})"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(token: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![(
            PARENT_TOKEN_ENV.as_bytes().to_vec(),
            token.as_bytes().to_vec(),
        )]
    }

    #[tokio::test]
    async fn a_token_verifies_a_running_parent_of_the_same_prisoner_only() {
        let lineage = Lineage::new();
        let link = lineage.register("01PARENT", "agent-1", "mirror").unwrap();
        let token = link.token().to_owned();
        assert_eq!(token.len(), 64);
        let check = |claim: Option<&'static str>, env: Vec<(Vec<u8>, Vec<u8>)>, prisoner| {
            let lineage = lineage.clone();
            async move { lineage.verify(claim, &env, prisoner, Some(1)).await }
        };
        assert_eq!(check(None, env(&token), "agent-1").await, ParentLink::None);
        assert_eq!(
            check(Some("01PARENT"), env(&token), "agent-1").await,
            ParentLink::Verified("01PARENT".into())
        );
        let unverified = |reason: &str| ParentLink::Unverified {
            claimed: "01PARENT".into(),
            reason: reason.into(),
        };
        assert_eq!(
            check(Some("01PARENT"), Vec::new(), "agent-1").await,
            unverified(
                "the caller does not hold the secret of request 01PARENT (CLAWRDEN_PARENT_TOKEN)"
            )
        );
        assert_eq!(
            check(Some("01PARENT"), env("00"), "agent-1").await,
            unverified("the caller's CLAWRDEN_PARENT_TOKEN is not the secret of request 01PARENT")
        );
        assert_eq!(
            check(Some("01PARENT"), env(&token), "agent-2").await,
            unverified("request 01PARENT runs for prisoner agent-1, not agent-2")
        );
        drop(link);
        assert_eq!(
            check(Some("01PARENT"), env(&token), "agent-1").await,
            unverified("request 01PARENT is not running (it finished, or never existed)")
        );
        let long = "x".repeat(70);
        let got = lineage.verify(Some(&long), &[], "agent-1", Some(1)).await;
        assert_eq!(
            got,
            ParentLink::Unverified {
                claimed: format!("{}…", "x".repeat(64)),
                reason: "not a request id".into()
            }
        );
    }

    #[tokio::test]
    async fn a_local_parent_is_verified_by_the_callers_process_tree() {
        let lineage = Lineage::new();
        let link = lineage.register("01LOCAL", "agent-1", "local").unwrap();
        let me = std::process::id();
        link.started(me);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let kid = child.id() as i32;
        assert_eq!(
            lineage
                .verify(Some("01LOCAL"), &[], "agent-1", Some(kid))
                .await,
            ParentLink::Verified("01LOCAL".into())
        );
        // A token is not enough for a local parent: only the process tree counts.
        let token = link.token().to_owned();
        assert_eq!(
            lineage.verify(Some("01LOCAL"), &env(&token), "agent-1", Some(1)).await,
            ParentLink::Unverified {
                claimed: "01LOCAL".into(),
                reason: format!(
                    "the caller (pid 1) is not inside the process tree of request 01LOCAL (pid {me})"
                ),
            }
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
