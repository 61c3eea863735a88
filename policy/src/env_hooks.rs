//! Environment names a rule may not pass to the command: each one makes a program load
//! code, run a program, or read configuration chosen by whoever sets it. For a command
//! the warden runs (local, ghost), that is the agent, and the command would run its code
//! with the command's privileges. README, "Policy reference", lists them.

/// A refused name (exact) or prefix (ending in `*`), and what it hooks.
pub(crate) const HOOKS: &[(&str, &str)] = &[
    // The dynamic loader and the C library: glibc's own list of variables it drops for
    // setuid programs (sysdeps/generic/unsecvars.h), plus the rest of LD_*.
    ("LD_*", "the dynamic loader loads libraries it names"),
    ("GCONV_PATH", "glibc loads iconv modules from it"),
    ("GETCONF_DIR", "glibc reads getconf tables from it"),
    ("GLIBC_TUNABLES", "glibc's tunables parser (CVE-2023-4911)"),
    ("HOSTALIASES", "the resolver reads a file it names"),
    ("LOCALDOMAIN", "it changes how the resolver searches names"),
    ("LOCPATH", "glibc loads locale data from it"),
    (
        "MALLOC_*",
        "glibc's allocator reads it (MALLOC_TRACE writes a file)",
    ),
    ("NIS_PATH", "glibc's NIS lookups follow it"),
    ("NLSPATH", "message catalogs are loaded from it"),
    ("RESOLV_HOST_CONF", "the resolver reads a file it names"),
    ("RES_OPTIONS", "it changes resolver behaviour"),
    ("TMPDIR", "temporary files go where it says"),
    ("TZDIR", "time zone files are loaded from it"),
    // Shells.
    ("BASH_ENV", "bash runs the file it names"),
    ("ENV", "sh runs the file it names"),
    ("BASH_FUNC_*", "bash imports exported functions from it"),
    ("SHELLOPTS", "it sets bash options such as xtrace"),
    ("BASHOPTS", "it sets bash options"),
    (
        "PS4",
        "bash expands it, command substitutions included, under xtrace",
    ),
    ("PROMPT_COMMAND", "bash runs it"),
    ("ZDOTDIR", "zsh reads its start-up files from it"),
    ("CDPATH", "it changes where scripts' `cd` goes"),
    // Where programs are found and configuration read.
    (
        "PATH",
        "programs are looked up in it; the warden sets a fixed PATH",
    ),
    (
        "HOME",
        "configuration (~/.gitconfig, ~/.bashrc) is read from it; the warden sets the run user's",
    ),
    (
        "XDG_CONFIG_HOME",
        "configuration (git/config, ...) is read from it",
    ),
    ("SHELL", "programs run it to run commands"),
    ("EDITOR", "programs run it"),
    ("VISUAL", "programs run it"),
    ("PAGER", "programs run it"),
    ("MANPAGER", "man runs it"),
    ("LESSOPEN", "less runs it"),
    ("LESSCLOSE", "less runs it"),
    ("BROWSER", "programs run it"),
    ("SSH_ASKPASS", "ssh runs it"),
    ("SUDO_ASKPASS", "sudo runs it"),
    (
        "OPENSSL_CONF",
        "OpenSSL reads it and loads the engines it names",
    ),
    ("OPENSSL_ENGINES", "OpenSSL loads engines from it"),
    ("SSLKEYLOGFILE", "TLS libraries write session keys to it"),
    ("CURL_HOME", "curl reads .curlrc from it"),
    ("WGETRC", "wget reads the file it names"),
    ("PIP_CONFIG_FILE", "pip reads the file it names"),
    // git.
    (
        "GIT_CONFIG*",
        "git reads configuration (hooks, aliases, core.fsmonitor) from it",
    ),
    ("GIT_SSH*", "git runs it to connect"),
    ("GIT_EXEC_PATH", "git runs its subcommands from it"),
    ("GIT_ASKPASS", "git runs it"),
    ("GIT_EDITOR", "git runs it"),
    ("GIT_SEQUENCE_EDITOR", "git runs it"),
    ("GIT_PAGER", "git runs it"),
    ("GIT_EXTERNAL_DIFF", "git runs it"),
    ("GIT_PROXY_COMMAND", "git runs it"),
    ("GIT_TEMPLATE_DIR", "git copies hooks from it"),
    (
        "GIT_DIR",
        "git uses the repository (with its config and hooks) it names",
    ),
    (
        "GIT_COMMON_DIR",
        "git uses the repository (with its config and hooks) it names",
    ),
    ("GIT_TRACE*", "git writes traces to a file it names"),
    // Interpreters.
    ("PYTHONSTARTUP", "python runs the file it names"),
    ("PYTHONPATH", "python imports modules from it"),
    ("PYTHONHOME", "python loads its library from it"),
    ("PYTHONUSERBASE", "python imports modules from it"),
    ("PYTHONBREAKPOINT", "python imports and calls what it names"),
    (
        "PYTHONWARNINGS",
        "python imports the warning categories it names",
    ),
    ("PYTHONINSPECT", "python enters interactive mode"),
    (
        "NODE_OPTIONS",
        "node takes options such as --require from it",
    ),
    ("NODE_PATH", "node loads modules from it"),
    (
        "NPM_CONFIG_*",
        "npm takes configuration (script-shell, node-options) from it",
    ),
    (
        "npm_config_*",
        "npm takes configuration (script-shell, node-options) from it",
    ),
    ("PERL5OPT", "perl takes options such as -M from it"),
    ("PERL5LIB", "perl loads modules from it"),
    ("PERLLIB", "perl loads modules from it"),
    ("PERL5DB", "perl runs it as the debugger"),
    ("RUBYOPT", "ruby takes options such as -r from it"),
    ("RUBYLIB", "ruby loads libraries from it"),
    (
        "JAVA_TOOL_OPTIONS",
        "the JVM takes options (-javaagent) from it",
    ),
    ("_JAVA_OPTIONS", "the JVM takes options from it"),
    (
        "JDK_JAVA_OPTIONS",
        "the java launcher takes options from it",
    ),
    ("CLASSPATH", "the JVM loads classes from it"),
    ("LUA_INIT*", "lua runs it"),
    ("LUA_PATH*", "lua loads modules from it"),
    ("LUA_CPATH*", "lua loads native modules from it"),
    ("PHPRC", "php reads the configuration it names"),
    ("PHP_INI_SCAN_DIR", "php reads configuration from it"),
    ("TCLLIBPATH", "tcl loads packages from it"),
];

/// Whether a name or `PREFIX*` pattern can name the same variable as another.
fn overlap(a: &str, b: &str) -> bool {
    match (a.strip_suffix('*'), b.strip_suffix('*')) {
        (None, None) => a == b,
        (Some(pa), None) => b.starts_with(pa),
        (None, Some(pb)) => a.starts_with(pb),
        (Some(pa), Some(pb)) => pa.starts_with(pb) || pb.starts_with(pa),
    }
}

/// The first hook an `env.pass` entry (`NAME` or `PREFIX*`) would let through.
pub(crate) fn hook_passed_by(pattern: &str) -> Option<(&'static str, &'static str)> {
    HOOKS
        .iter()
        .copied()
        .find(|(hook, _)| overlap(pattern, hook))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_that_reach_a_hook_are_found() {
        let cases: &[(&str, Option<&str>)] = &[
            ("LD_PRELOAD", Some("LD_*")),
            ("LD_*", Some("LD_*")),
            ("L*", Some("LD_*")),
            ("BASH_ENV", Some("BASH_ENV")),
            ("BASH_*", Some("BASH_ENV")),
            ("BASH_FUNC_ls%%", Some("BASH_FUNC_*")),
            ("ENV", Some("ENV")),
            ("GIT_*", Some("GIT_CONFIG*")),
            ("GIT_CONFIG_COUNT", Some("GIT_CONFIG*")),
            ("GIT_SSH_COMMAND", Some("GIT_SSH*")),
            ("PYTHONSTARTUP", Some("PYTHONSTARTUP")),
            ("NODE_OPTIONS", Some("NODE_OPTIONS")),
            ("PERL5OPT", Some("PERL5OPT")),
            ("npm_config_script_shell", Some("npm_config_*")),
            ("PATH", Some("PATH")),
            ("P*", Some("PS4")),
            // Names that only look similar pass.
            ("HTTP_PROXY", None),
            ("LANG", None),
            ("LC_*", None),
            ("GIT_AUTHOR_*", None),
            ("GIT_COMMITTER_NAME", None),
            ("ENVIRONMENT", None),
            ("PATHS", None),
            ("PYTHONUNBUFFERED", None),
            ("NODE_ENV", None),
            ("VIRTUAL_ENV", None),
        ];
        for &(pattern, want) in cases {
            assert_eq!(hook_passed_by(pattern).map(|h| h.0), want, "{pattern}");
        }
    }
}
