//! Who a warden-side (`local`) command runs as: an unprivileged identity that is never
//! the warden's own. See README.md, "Warden reference" (`run_as`).
//!
//! In order: the rule's `run_as` user, else the warden's `run_as` user, else the caller's
//! uid, gid and supplementary groups (from the kernel, `SO_PEERCRED` / `SO_PEERGROUPS`),
//! which needs a warden that can switch ids (root, or `CAP_SETUID`, `CAP_SETGID` and
//! `CAP_KILL` in its effective and ambient sets, so the exec-helper it starts has them).
//! An identity whose uid is the warden's own, or root, is refused unless
//! `allow_run_as_warden` says otherwise: such a command could read the state directory
//! (tokens, store, audit) or write the warden user's files.

use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{Gid, Uid, User};

/// Bits of `CAP_SETGID`, `CAP_SETUID` and `CAP_KILL` in a `/proc/PID/status` capability mask.
const SWITCH_CAPS: u64 = (1 << 6) | (1 << 7) | (1 << 5);
/// `HOME` of an identity without a user entry.
const NO_HOME: &str = "/";

/// A `run_as` value: a portable user name (`[A-Za-z_][A-Za-z0-9_.-]*`, at most 32 bytes,
/// optionally ending in `$`).
pub fn check_user_name(name: &str) -> Result<(), String> {
    let stem = name.strip_suffix('$').unwrap_or(name);
    let valid = (1..=32).contains(&name.len())
        && stem
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "run_as {name:?} is not a user name (letters, digits, '_', '.', '-', starting with a letter or '_')"
        ))
    }
}

/// The warden process's own identity and whether it can start commands as another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WardenIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Root, or holding `CAP_SETUID`, `CAP_SETGID` and `CAP_KILL` in its effective and
    /// ambient sets.
    pub can_switch: bool,
}

impl WardenIdentity {
    /// This process.
    pub fn current() -> WardenIdentity {
        let uid = nix::unistd::geteuid().as_raw();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let caps = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        let effective = caps("CapEff:") & SWITCH_CAPS == SWITCH_CAPS;
        let ambient = caps("CapAmb:") & SWITCH_CAPS == SWITCH_CAPS;
        WardenIdentity {
            uid,
            gid: nix::unistd::getegid().as_raw(),
            can_switch: effective && (uid == 0 || ambient),
        }
    }
}

/// The identity one command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The user's name, when it has a user entry on this host.
    pub name: Option<String>,
    /// The user's home directory (`/` without a user entry).
    pub home: PathBuf,
}

impl RunIdentity {
    /// `name`'s user entry and groups on this host.
    fn of_user(name: &str) -> Result<RunIdentity, String> {
        let user = User::from_name(name)
            .map_err(|e| format!("cannot look up run_as user {name:?}: {e}"))?
            .ok_or_else(|| format!("run_as user {name:?} does not exist on this host"))?;
        let groups = CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid])
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(RunIdentity {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            name: Some(user.name),
            home: user.dir,
        })
    }

    /// The caller: its ids and groups as the kernel gave them, its name and home from the
    /// user database when it has an entry.
    fn of_caller(uid: u32, gid: u32, groups: &[u32]) -> RunIdentity {
        let user = User::from_uid(Uid::from_raw(uid)).ok().flatten();
        RunIdentity {
            uid,
            gid,
            groups: groups.to_vec(),
            name: user.as_ref().map(|u| u.name.clone()),
            home: user.map_or_else(|| PathBuf::from(NO_HOME), |u| u.dir),
        }
    }

    fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("uid {} ({name})", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// The run-as settings of one warden.
#[derive(Clone, Debug)]
pub struct RunAs {
    warden: WardenIdentity,
    /// The warden's `run_as` user, resolved at start-up.
    default_user: Option<RunIdentity>,
    allow_warden: bool,
}

impl RunAs {
    /// Checks the warden's settings at start-up; the error is what exit 64 prints.
    pub fn new(
        warden: WardenIdentity,
        run_as: Option<&str>,
        allow_warden: bool,
    ) -> Result<RunAs, String> {
        let mut checked = RunAs {
            warden,
            default_user: None,
            allow_warden,
        };
        match run_as {
            Some(name) => {
                let who = RunIdentity::of_user(name)?;
                checked
                    .check(&who)
                    .map_err(|why| format!("run_as {name}: {why}"))?;
                checked.default_user = Some(who);
            }
            None if !warden.can_switch && !allow_warden => {
                return Err(format!(
                    "locally executed commands would run as the warden's own uid {}: it cannot \
                     switch to the callers' ids (it is not root and lacks CAP_SETUID, CAP_SETGID \
                     and CAP_KILL), so a command could read the state directory; set run_as: USER \
                     (--run-as USER) to a user that is not the warden's, or allow_run_as_warden: \
                     true (--allow-run-as-warden) to accept that",
                    warden.uid
                ))
            }
            None => {}
        }
        Ok(checked)
    }

    /// Checks a rule's `run_as` user at start-up (it must exist and be allowed).
    pub fn check_rule_user(&self, name: &str) -> Result<(), String> {
        self.check(&RunIdentity::of_user(name)?)
    }

    /// The warden's own identity.
    pub fn warden(&self) -> WardenIdentity {
        self.warden
    }

    /// The identity a call runs as: the rule's `run_as` user, else the warden's, else the
    /// caller (uid, gid and groups from the kernel). The error says why the call cannot run.
    pub fn for_call(
        &self,
        rule_run_as: Option<&str>,
        caller_uid: u32,
        caller_gid: u32,
        caller_groups: &[u32],
    ) -> Result<RunIdentity, String> {
        let who = match (rule_run_as, &self.default_user) {
            (Some(name), _) => RunIdentity::of_user(name)?,
            (None, Some(user)) => user.clone(),
            (None, None) => RunIdentity::of_caller(caller_uid, caller_gid, caller_groups),
        };
        self.check(&who)?;
        Ok(who)
    }

    /// Whether the warden may start a command as `who`.
    fn check(&self, who: &RunIdentity) -> Result<(), String> {
        let w = self.warden;
        if who.uid == w.uid && !self.allow_warden {
            return Err(format!(
                "the command would run as {}, the warden's own uid, which could read its state \
                 (tokens, store, audit); name another user with run_as, or set \
                 allow_run_as_warden: true",
                who.describe()
            ));
        }
        if who.uid == 0 && !self.allow_warden {
            return Err(format!(
                "the command would run as {}, which is root; name an unprivileged user with run_as",
                who.describe()
            ));
        }
        if who.uid != w.uid && !w.can_switch {
            return Err(format!(
                "the warden (uid {}) cannot start commands as {}: run it as root, or give it \
                 CAP_SETUID, CAP_SETGID and CAP_KILL (effective and ambient)",
                w.uid,
                who.describe()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warden(uid: u32, can_switch: bool) -> WardenIdentity {
        WardenIdentity {
            uid,
            gid: uid,
            can_switch,
        }
    }

    #[test]
    fn user_names_are_checked() {
        for good in ["deploy", "_apt", "a.b-c_1", "machine$"] {
            assert!(check_user_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "-x", "a b", "a/b", &"x".repeat(33)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_root_warden_runs_commands_as_the_caller_with_the_kernels_groups() {
        let r = RunAs::new(warden(0, true), None, false).unwrap();
        let who = r.for_call(None, 65534, 65534, &[65534, 100]).unwrap();
        assert_eq!((who.uid, who.gid), (65534, 65534));
        assert_eq!(who.groups, [65534, 100]);
        assert_eq!(who.name.as_deref(), Some("nobody"));
        // A caller without a user entry still runs, with HOME=/.
        let who = r.for_call(None, 54321, 54321, &[]).unwrap();
        assert_eq!((who.name, who.home), (None, PathBuf::from("/")));
    }

    #[test]
    fn a_caller_with_the_wardens_uid_or_root_is_refused_unless_allowed() {
        let r = RunAs::new(warden(0, true), None, false).unwrap();
        let e = r.for_call(None, 0, 0, &[]).unwrap_err();
        assert!(
            e.starts_with("the command would run as uid 0 (root), the warden's own uid"),
            "{e}"
        );
        let r = RunAs::new(warden(1000, true), None, false).unwrap();
        let e = r.for_call(None, 0, 0, &[]).unwrap_err();
        assert!(e.contains("which is root"), "{e}");
        let r = RunAs::new(warden(0, true), None, true).unwrap();
        assert_eq!(r.for_call(None, 0, 0, &[]).unwrap().uid, 0);
    }

    #[test]
    fn a_warden_that_cannot_switch_ids_needs_run_as_or_explicit_permission() {
        let e = RunAs::new(warden(1000, false), None, false).unwrap_err();
        assert!(
            e.starts_with("locally executed commands would run as the warden's own uid 1000"),
            "{e}"
        );
        let r = RunAs::new(warden(1000, false), None, true).unwrap();
        assert_eq!(r.for_call(None, 1000, 1000, &[]).unwrap().uid, 1000);
        let e = r.for_call(None, 1001, 1001, &[]).unwrap_err();
        assert!(
            e.starts_with("the warden (uid 1000) cannot start commands as uid 1001"),
            "{e}"
        );
        let e = RunAs::new(warden(1000, false), Some("nobody"), false).unwrap_err();
        assert!(
            e.starts_with(
                "run_as nobody: the warden (uid 1000) cannot start commands as uid 65534 (nobody)"
            ),
            "{e}"
        );
    }

    #[test]
    fn run_as_users_are_looked_up_and_a_rules_wins() {
        let e = RunAs::new(warden(0, true), Some("clawrden-no-such-user"), false).unwrap_err();
        assert_eq!(
            e,
            "run_as user \"clawrden-no-such-user\" does not exist on this host"
        );
        let e = RunAs::new(warden(0, true), Some("root"), false).unwrap_err();
        assert!(
            e.starts_with("run_as root: the command would run as uid 0 (root)"),
            "{e}"
        );
        let r = RunAs::new(warden(0, true), Some("nobody"), false).unwrap();
        let who = r.for_call(None, 1000, 1000, &[]).unwrap();
        assert_eq!((who.uid, who.name.as_deref()), (65534, Some("nobody")));
        let who = r.for_call(Some("daemon"), 1000, 1000, &[]).unwrap();
        assert_eq!((who.uid, who.home), (1, PathBuf::from("/usr/sbin")));
        assert!(r.check_rule_user("clawrden-no-such-user").is_err());
        assert!(r.check_rule_user("root").is_err());
    }
}
