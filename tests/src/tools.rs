//! System tools some tests run (promtool, systemd-analyze): found on the PATH (plus the
//! sbin directories), or the test skips with a printed reason, unless
//! `CLAWRDEN_REQUIRE_TOOLS=1` (CI sets it), in which case it fails.

use std::path::PathBuf;

/// True when `CLAWRDEN_REQUIRE_TOOLS=1`: a missing tool fails the test instead of
/// skipping it.
pub fn tools_required() -> bool {
    std::env::var("CLAWRDEN_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// The absolute path of `tool`, searched in `PATH` and then `/usr/sbin`, `/sbin`.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `Some(path of tool)`, or `None` after printing why `test_name` skips; panics instead
/// when [`tools_required`]. `package` is the Debian package that provides it.
pub fn require_tool_or_skip(test_name: &str, tool: &str, package: &str) -> Option<PathBuf> {
    if let Some(path) = find_tool(tool) {
        return Some(path);
    }
    let reason = format!("{tool} is not installed (Debian: apt-get install {package})");
    if tools_required() {
        panic!("{test_name}: CLAWRDEN_REQUIRE_TOOLS=1 but {reason}");
    }
    eprintln!("SKIP {test_name}: {reason}");
    None
}

/// The exposure level (`2.6 OK`) on the last line of `systemd-analyze security`'s report.
pub fn systemd_exposure(report: &str) -> Option<String> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.split_once(": ")?;
    let mut words = rest.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}

/// The sentence README.md states the unit's exposure level in.
pub fn readme_exposure_claim(score: &str) -> String {
    format!("`systemd-analyze security clawrden-warden.service` rates it **{score}**")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_is_read_off_the_report() {
        assert_eq!(
            systemd_exposure(
                "✓ UMask= ...\n\n→ Overall exposure level for clawrden-warden.service: 2.6 OK 🙂\n"
            ),
            Some("2.6 OK".to_string())
        );
        assert_eq!(systemd_exposure("nothing here"), None);
    }
}
