use super::*;

const FILE: &str = "/etc/clawrden/warden.yaml";

fn parse(src: &str) -> Result<WardenConfig, ConfigError> {
    parse_file(Path::new(FILE), src)
}

fn err(src: &str) -> String {
    parse(src).unwrap_err().to_string()
}

const GOOD: &str = "\
policy: policy.yaml
state_dir: /var/lib/clawrden
executors: [local]
exec_helper: /bin/sh
log_format: json
stream_only: true
prisoners:
  - name: agent-1
    socket: /run/clawrden/agent-1/warden.sock
  - name: agent-2
    socket: /run/clawrden/agent-2/warden.sock
";

#[test]
fn good_file_parses_with_relative_paths_under_its_directory() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.policy, PathBuf::from("/etc/clawrden/policy.yaml"));
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/clawrden"));
    assert_eq!(c.executors, [ExecutorName::Local]);
    assert_eq!(c.exec_helper, PathBuf::from("/bin/sh"));
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(c.stream_only);
    assert_eq!(
        c.prisoners,
        [
            PrisonerSocket {
                name: "agent-1".into(),
                socket: "/run/clawrden/agent-1/warden.sock".into(),
                container: None,
            },
            PrisonerSocket {
                name: "agent-2".into(),
                socket: "/run/clawrden/agent-2/warden.sock".into(),
                container: None,
            }
        ]
    );
}

#[test]
fn unknown_key_names_file_line_and_column() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\n  \nsockets: x\nprisoners: []\n");
    assert!(
        e.starts_with("/etc/clawrden/warden.yaml:5:1: unknown field `sockets`"),
        "{e}"
    );
    assert!(!e.contains(" at line "), "{e}");
}

#[test]
fn unknown_executor_value_points_at_it() {
    let e = err("policy: /p\nstate_dir: /s\nexecutors: [local, warp]\nprisoners: []\n");
    assert!(e.starts_with("/etc/clawrden/warden.yaml:3:"), "{e}");
    assert!(e.contains("unknown variant `warp`"), "{e}");
}

#[test]
fn missing_required_key_is_an_error() {
    let e = err("state_dir: /s\nprisoners: []\n");
    assert!(e.contains("missing field `policy`"), "{e}");
}

#[test]
fn duplicate_prisoner_points_at_the_second_name() {
    let e = err("\
policy: /p
state_dir: /s
exec_helper: /bin/sh
prisoners:
  - name: a
    socket: /run/a.sock
  - name: a
    socket: /run/b.sock
");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:7:11: prisoner \"a\" is listed twice; names must be unique"
    );
}

#[test]
fn shared_socket_points_at_the_second_use() {
    let e = err("\
policy: /p
state_dir: /s
exec_helper: /bin/sh
prisoners:
  - name: a
    socket: /run/x.sock
  - name: b
    socket: /run/x.sock
");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:8:13: socket /run/x.sock is used by two prisoners; each needs its own"
    );
}

#[test]
fn bad_prisoner_name_is_rejected() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - name: ../x\n    socket: /s.sock\n");
    assert!(
        e.starts_with("/etc/clawrden/warden.yaml:5:11: invalid prisoner name \"../x\""),
        "{e}"
    );
}

#[test]
fn empty_prisoners_is_rejected() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners: []\n");
    assert!(
        e.starts_with("/etc/clawrden/warden.yaml:4:1: no prisoners"),
        "{e}"
    );
}

#[test]
fn executor_not_in_this_build_is_rejected_at_its_position() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nexecutors: [local, ghost]\nprisoners:\n  - {name: a, socket: /a.sock}\n");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:4:20: executor ghost is not available in this build of the warden (available: local, mirror); remove it"
    );
}

#[test]
fn missing_exec_helper_is_rejected_when_local_runs() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /nonexistent/clawrden-shim\nprisoners:\n  - {name: a, socket: /a.sock}\n");
    assert!(
        e.starts_with(
            "/etc/clawrden/warden.yaml:3:14: exec helper /nonexistent/clawrden-shim: No such file"
        ),
        "{e}"
    );
}

#[test]
fn too_long_socket_path_is_rejected() {
    let long = format!("/run/{}/w.sock", "d".repeat(120));
    let e = err(&format!(
        "policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - name: a\n    socket: {long}\n"
    ));
    assert!(
        e.starts_with("/etc/clawrden/warden.yaml:6:13: socket path"),
        "{e}"
    );
    assert!(e.contains("at most 107"), "{e}");
}

#[test]
fn flag_form_names_the_missing_flag() {
    let args = RunArgs {
        policy: Some("/p".into()),
        state_dir: Some("/s".into()),
        exec_helper: Some("/bin/sh".into()),
        ..RunArgs::default()
    };
    assert_eq!(
        from_flags(&args).unwrap_err().to_string(),
        "--socket: required (or give --config warden.yaml); see --socket in --help"
    );
}

#[test]
fn flag_form_defaults_prisoner_and_executor() {
    let args = RunArgs {
        policy: Some("/p".into()),
        state_dir: Some("/s".into()),
        socket: Some("/run/clawrden/warden.sock".into()),
        exec_helper: Some("/bin/sh".into()),
        ..RunArgs::default()
    };
    let c = from_flags(&args).unwrap();
    assert_eq!(c.prisoners[0].name, "default");
    assert_eq!(c.executors, [ExecutorName::Local]);
    assert_eq!(c.log_format, LogFormat::Pretty);
}

#[test]
fn prisoner_container_and_docker_host_are_read_and_container_defaults_to_the_name() {
    let c = parse(
        "policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nexecutors: [local, mirror]\ndocker_host: unix:///var/run/docker.sock\nprisoners:\n  - {name: agent-1, socket: /a.sock, container: clawrden-agent-1}\n  - {name: agent-2, socket: /b.sock}\n",
    )
    .unwrap();
    assert_eq!(c.executors, [ExecutorName::Local, ExecutorName::Mirror]);
    assert_eq!(
        c.docker_host.as_deref(),
        Some("unix:///var/run/docker.sock")
    );
    assert_eq!(
        c.prisoners[0].container.as_deref(),
        Some("clawrden-agent-1")
    );
    assert_eq!(c.prisoners[0].container_name(), "clawrden-agent-1");
    assert_eq!(c.prisoners[1].container, None);
    assert_eq!(c.prisoners[1].container_name(), "agent-2");
}

#[test]
fn bad_container_name_and_docker_host_name_their_position() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - {name: a, socket: /a.sock, container: \"-x y\"}\n");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:5:44: invalid container \"-x y\": give the container's name or id (letters, digits, '.', '_' or '-'), or use container_label: KEY=VALUE"
    );
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\ndocker_host: ssh://h\nprisoners:\n  - {name: a, socket: /a.sock}\n");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:4:14: docker_host \"ssh://h\" is not supported: use unix:///path/to/docker.sock or tcp://HOST:PORT"
    );
}

#[test]
fn trust_proxy_is_off_unless_the_file_or_the_flag_turns_it_on() {
    assert!(!parse(GOOD).unwrap().trust_proxy);
    assert!(
        parse(&format!("{GOOD}trust_proxy: true\n"))
            .unwrap()
            .trust_proxy
    );
    let args = RunArgs {
        policy: Some("/p".into()),
        state_dir: Some("/s".into()),
        socket: Some("/run/clawrden/warden.sock".into()),
        exec_helper: Some("/bin/sh".into()),
        ..RunArgs::default()
    };
    assert!(!from_flags(&args).unwrap().trust_proxy);
    let args = RunArgs {
        trust_proxy: true,
        ..args
    };
    assert!(from_flags(&args).unwrap().trust_proxy);
}

#[test]
fn container_label_selects_the_container_by_label() {
    let c = parse(
        "policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - {name: a, socket: /a.sock, container_label: org.clawrden.prisoner=agent-1}\n  - {name: b, socket: /b.sock, container: b-box}\n",
    )
    .unwrap();
    assert_eq!(
        c.prisoners[0].container_name(),
        "label=org.clawrden.prisoner=agent-1"
    );
    assert_eq!(
        c.prisoners[0].container_label(),
        Some("org.clawrden.prisoner=agent-1")
    );
    assert_eq!(c.prisoners[1].container_name(), "b-box");
    assert_eq!(c.prisoners[1].container_label(), None);
}

#[test]
fn container_and_container_label_together_are_refused_at_the_label() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - name: a\n    socket: /a.sock\n    container: a-box\n    container_label: app=a\n");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:8:22: prisoner \"a\" has both `container:` and `container_label:`; give exactly one of them"
    );
}

#[test]
fn container_label_without_key_and_value_names_its_position() {
    for bad in ["app", "=a", "\"a b=c\""] {
        let e = err(&format!(
            "policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - {{name: a, socket: /a.sock, container_label: {bad}}}\n"
        ));
        let shown = bad.trim_matches('"');
        assert_eq!(
            e,
            format!("/etc/clawrden/warden.yaml:5:{}: invalid container_label {shown:?}: write KEY=VALUE, e.g. org.clawrden.prisoner=agent-1", if bad.starts_with('"') { 50 } else { 49 }),
            "{bad}"
        );
    }
}

#[test]
fn a_container_name_cannot_pose_as_a_label_selector() {
    let e = err("policy: /p\nstate_dir: /s\nexec_helper: /bin/sh\nprisoners:\n  - {name: a, socket: /a.sock, container: label=app=a}\n");
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:5:43: invalid container \"label=app=a\": give the container's name or id (letters, digits, '.', '_' or '-'), or use container_label: KEY=VALUE"
    );
}

#[test]
fn caps_and_audit_syslog_parse_with_defaults_for_what_is_left_out() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.caps, CapsConfig::default());
    assert_eq!(c.audit_syslog, None);
    let src = format!(
        "{GOOD}max_connections: 100\nmax_pending_per_prisoner: 4\naudit_syslog:\n  address: logs.example.org:514\n  facility: local3\n"
    );
    let c = parse(&src).unwrap();
    assert_eq!(
        c.caps,
        CapsConfig {
            max_connections: 100,
            max_pending_per_prisoner: 4,
            ..CapsConfig::default()
        }
    );
    assert_eq!(
        c.audit_syslog,
        Some(SyslogConfig {
            address: "logs.example.org:514".into(),
            facility: Facility::Local3,
            queue: DEFAULT_QUEUE,
        })
    );
}

#[test]
fn a_zero_cap_or_a_bad_syslog_address_names_its_position() {
    let e = err(&format!("{GOOD}max_pending_per_prisoner: 0\n"));
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:12:27: max_pending_per_prisoner is 0; it must be at least 1"
    );
    let e = err(&format!(
        "{GOOD}audit_syslog:\n  address: logs.example.org\n"
    ));
    assert_eq!(
        e,
        "/etc/clawrden/warden.yaml:13:12: audit_syslog address \"logs.example.org\" is not HOST:PORT (e.g. logs.example.org:514 or 10.0.0.5:6514)"
    );
    let args = RunArgs {
        policy: Some("/p".into()),
        state_dir: Some("/s".into()),
        socket: Some("/run/clawrden/warden.sock".into()),
        exec_helper: Some("/bin/sh".into()),
        max_request_bytes_kept: Some(10),
        ..RunArgs::default()
    };
    assert_eq!(
        from_flags(&args).unwrap_err().to_string(),
        "--max-request-bytes-kept: max_request_bytes_kept is 10; it must be at least 1024"
    );
}
