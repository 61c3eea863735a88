//! Off-host copies of the audit: every line the warden writes reaches a real syslog
//! receiver (Debian's rsyslogd, with a throw-away config, over TCP on loopback) as an
//! RFC 5424 message whose MSG is the line, byte for byte, in order; and an unreachable
//! receiver never holds up a call, its lost lines counted in
//! `clawrden_audit_forward_dropped_total`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clawrden_e2e::api::Api;
use clawrden_e2e::{poll_until, Call, TempDir, TestWarden};

const STEP: Duration = Duration::from_secs(30);

/// A real rsyslogd writing what it receives on a TCP port to a file.
struct Rsyslog {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Rsyslog {
    fn start() -> Rsyslog {
        let binary = Path::new("/usr/sbin/rsyslogd");
        assert!(
            binary.exists(),
            "{} is missing: install Debian's rsyslog (apt-get install rsyslog; .ci/run does)",
            binary.display()
        );
        let dir = TempDir::new("rsyslog");
        let d = dir.path();
        fs::create_dir(d.join("work")).unwrap();
        let conf = format!(
            "global(workDirectory=\"{work}\" maxMessageSize=\"256k\")\n\
             module(load=\"imtcp\")\n\
             template(name=\"clawrden\" type=\"string\" string=\"%app-name% %msgid% %syslogfacility-text%.%syslogseverity-text% %msg%\\n\")\n\
             ruleset(name=\"clawrden\") {{ action(type=\"omfile\" file=\"{out}\" template=\"clawrden\") }}\n\
             input(type=\"imtcp\" port=\"0\" listenPortFileName=\"{port}\" ruleset=\"clawrden\")\n",
            work = d.join("work").display(),
            out = d.join("received.log").display(),
            port = d.join("port").display(),
        );
        fs::write(d.join("rsyslog.conf"), conf).unwrap();
        let child = Command::new(binary)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslog.pid"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(d.join("rsyslog.out")).unwrap())
            .stderr(fs::File::create(d.join("rsyslog.err")).unwrap())
            .spawn()
            .expect("start rsyslogd");
        let port_file = d.join("port");
        let port = poll_until("rsyslogd to write its TCP port", STEP, || {
            fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse::<u16>().ok())
        });
        Rsyslog { child, dir, port }
    }

    fn received(&self) -> PathBuf {
        self.dir.path().join("received.log")
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_audit_line_reaches_a_real_syslog_receiver_byte_for_byte_in_order() {
    let sink = Rsyslog::start();
    let mut w = TestWarden::builder()
        .setting("audit_syslog", format!("127.0.0.1:{}", sink.port))
        .start();
    for i in 0..3 {
        let out = w.run(&Call::new("printf").arg(format!("forwarded-{i}-é")));
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    w.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(w.wait_exit().code(), Some(0), "{}", w.log());
    let local = fs::read_to_string(w.audit_path()).unwrap();
    let local: Vec<&str> = local.lines().collect();
    assert!(local.len() >= 14, "{} lines", local.len());
    let got = poll_until("rsyslogd to have written every line", STEP, || {
        let text = fs::read_to_string(sink.received()).unwrap_or_default();
        (text.lines().count() >= local.len()).then_some(text)
    });
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), local.len(), "{got:#?}");
    for (line, received) in local.iter().zip(&got) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let event = v["event"].as_str().unwrap();
        assert_eq!(
            *received,
            format!("clawrden-warden {event} authpriv.info {line}"),
            "as received by rsyslogd"
        );
    }
}

#[test]
fn an_unreachable_receiver_never_holds_up_calls_and_its_lost_lines_are_counted() {
    // A port that was free a moment ago: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let w = TestWarden::builder()
        .setting("audit_syslog", dead.to_string())
        .api()
        .start();
    let api = Api::of(&w);
    let out = w.run(&Call::new("printf").arg("not-held-up"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"not-held-up");
    let dropped = poll_until("lost lines to be counted", STEP, || {
        let text = api.metrics();
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"clawrden_audit_forward_dropped_total{sink="syslog"} "#))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        (n >= 1.0).then_some(n)
    });
    assert!(dropped >= 1.0);
    assert!(
        w.log().contains("cannot reach the audit syslog receiver"),
        "{}",
        w.log()
    );
    // The local audit has everything regardless.
    w.verify_audit();
}
