//! Live forwarding of every audit line to a syslog receiver outside the host (RFC 5424
//! over TCP, octet-counted framing of RFC 6587), so a copy survives someone who can
//! rewrite or truncate the local file. See README.md, "Audit".
//!
//! Calls never wait for the sink: [`Forwarder::offer`] puts the line in a bounded queue
//! or, when it is full, drops it and counts it. One task drains the queue: it connects,
//! writes lines in batches, and on failure reconnects with a bounded backoff; a batch
//! that still fails after [`MAX_ATTEMPTS`] is dropped and counted. Delivery is at least
//! once: a batch cut by a broken connection is sent again whole (each line's `seq`
//! identifies repeats).

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::control::ControlPlane;

/// Lines held while the sink is slow or away, unless configured.
pub const DEFAULT_QUEUE: usize = 10_000;
/// Tries per batch before it is dropped.
pub const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a connect or a write may take before the connection counts as broken.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Most lines written in one batch.
const BATCH: usize = 256;
/// The metric label of this sink.
const SINK: &str = "syslog";

/// Syslog facilities (RFC 5424 6.2.1) an audit trail may be filed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Auth,
    #[default]
    Authpriv,
    Daemon,
    User,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    fn code(self) -> u8 {
        match self {
            Facility::User => 1,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Authpriv => 10,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// Where and how to forward (`audit_syslog:` in warden.yaml, `--audit-syslog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogConfig {
    /// `HOST:PORT` of the receiver (resolved at each connect).
    pub address: String,
    pub facility: Facility,
    /// Lines held while the receiver is away; beyond, new lines are dropped and counted.
    pub queue: usize,
}

/// Checks a `HOST:PORT` value.
pub fn check_address(address: &str) -> Result<(), String> {
    let bad = || {
        format!("audit_syslog address {address:?} is not HOST:PORT (e.g. logs.example.org:514 or 10.0.0.5:6514)")
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

/// The audit writer's end: offers each written line to the queue.
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<String>,
    control: Weak<ControlPlane>,
}

impl Forwarder {
    /// Queues `line` for the sink; never waits. A full queue drops it (counted).
    pub fn offer(&self, line: &str) {
        if self.tx.try_send(line.to_owned()).is_err() {
            if let Some(cp) = self.control.upgrade() {
                cp.metrics().audit_forward_dropped(SINK, 1);
            }
        }
    }
}

/// The queue's consuming end, until [`Drain::run`] is spawned.
#[derive(Debug)]
pub struct Drain {
    rx: mpsc::Receiver<String>,
    config: SyslogConfig,
    control: Weak<ControlPlane>,
}

/// A forwarder and the drain task to spawn for it.
pub fn channel(config: SyslogConfig, control: &Arc<ControlPlane>) -> (Forwarder, Drain) {
    let (tx, rx) = mpsc::channel(config.queue);
    let control = Arc::downgrade(control);
    (
        Forwarder {
            tx,
            control: control.clone(),
        },
        Drain {
            rx,
            config,
            control,
        },
    )
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`, octet-counted.
fn frame(line: &str, pri: u8, hostname: &str, pid: u32, out: &mut Vec<u8>) {
    let ts = field(line, "\"ts\":\"").unwrap_or("-");
    let msgid = field(line, "\"event\":\"").unwrap_or("audit");
    let msg = format!("<{pri}>1 {ts} {hostname} clawrden-warden {pid} {msgid} - {line}");
    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
    out.extend_from_slice(msg.as_bytes());
}

/// The value of a string field the warden wrote near the start of a line, when it is a
/// plain token (what RFC 5424 allows in a header field).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    let end = start + line[start..].find('"')?;
    let v = &line[start..end];
    (!v.is_empty() && v.len() <= 48 && v.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'))
        .then_some(v)
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic()) {
        name.to_owned()
    } else {
        "-".to_owned()
    }
}

/// Whether the receiver closed its end (a readable socket that reads 0 or fails).
fn peer_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

impl Drain {
    /// Forwards until every [`Forwarder`] is gone and the queue is empty.
    pub async fn run(mut self) {
        let pri = self.config.facility.code() * 8 + 6; // severity: informational
        let host = hostname();
        let pid = std::process::id();
        let mut conn: Option<TcpStream> = None;
        let mut warned = false;
        let mut batch: Vec<String> = Vec::with_capacity(BATCH);
        let mut bytes = Vec::new();
        while let Some(first) = self.rx.recv().await {
            batch.clear();
            batch.push(first);
            while batch.len() < BATCH {
                match self.rx.try_recv() {
                    Ok(l) => batch.push(l),
                    Err(_) => break,
                }
            }
            bytes.clear();
            for line in &batch {
                frame(line, pri, &host, pid, &mut bytes);
            }
            let mut backoff = FIRST_BACKOFF;
            let mut delivered = false;
            for attempt in 1..=MAX_ATTEMPTS {
                if conn.as_ref().is_some_and(peer_closed) {
                    conn = None;
                }
                if conn.is_none() {
                    match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&self.config.address))
                        .await
                    {
                        Ok(Ok(s)) => {
                            let _ = s.set_nodelay(true);
                            if warned {
                                tracing::info!(sink = %self.config.address, "audit syslog receiver reachable again");
                                warned = false;
                            }
                            conn = Some(s);
                        }
                        Ok(Err(e)) => {
                            if !warned {
                                tracing::warn!(sink = %self.config.address, error = %e, "cannot reach the audit syslog receiver; retrying, lines queue meanwhile and are dropped (counted) when the queue is full");
                                warned = true;
                            }
                        }
                        Err(_) => {
                            if !warned {
                                tracing::warn!(sink = %self.config.address, "connecting to the audit syslog receiver timed out; retrying");
                                warned = true;
                            }
                        }
                    }
                }
                if let Some(s) = conn.as_mut() {
                    match tokio::time::timeout(IO_TIMEOUT, s.write_all(&bytes)).await {
                        Ok(Ok(())) => {
                            delivered = true;
                            break;
                        }
                        _ => conn = None,
                    }
                }
                if attempt < MAX_ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            let Some(cp) = self.control.upgrade() else {
                continue;
            };
            let n = batch.len() as u64;
            if delivered {
                cp.metrics().audit_forwarded(SINK, n);
            } else {
                cp.metrics().audit_forward_dropped(SINK, n);
                tracing::error!(sink = %self.config.address, lines = n, "audit lines dropped after {MAX_ATTEMPTS} attempts to reach the syslog receiver; the local audit still has them");
            }
        }
        if let Some(mut s) = conn {
            let _ = s.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_rfc_5424_octet_counted() {
        let line = r#"{"seq":7,"ts":"2026-11-24T09:01:02.345Z","event":"decision","x":"é"}"#;
        let mut out = Vec::new();
        frame(line, 86, "host-1", 42, &mut out);
        let msg =
            format!("<86>1 2026-11-24T09:01:02.345Z host-1 clawrden-warden 42 decision - {line}");
        assert_eq!(out, format!("{} {msg}", msg.len()).into_bytes());
    }

    #[test]
    fn odd_header_values_become_nil() {
        let mut out = Vec::new();
        frame(r#"{"seq":1,"event":"a b"}"#, 86, "h", 1, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(r#"<86>1 - h clawrden-warden 1 audit - {"seq":1,"event":"a b"}"#),
            "{text}"
        );
    }

    #[test]
    fn addresses_need_host_and_port() {
        assert!(check_address("127.0.0.1:514").is_ok());
        assert!(check_address("[::1]:514").is_ok());
        assert!(check_address("logs.example.org:6514").is_ok());
        for bad in ["127.0.0.1", ":514", "host:0", "host:99999", "host:x"] {
            assert_eq!(
                check_address(bad).unwrap_err(),
                format!("audit_syslog address {bad:?} is not HOST:PORT (e.g. logs.example.org:514 or 10.0.0.5:6514)")
            );
        }
    }
}
