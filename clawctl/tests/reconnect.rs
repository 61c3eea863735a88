//! `clawctl tail` after a dropped connection: it reconnects with Last-Event-ID. A dropped
//! connection cannot be provoked on a real warden without restarting it (which starts a
//! new event sequence), so a scripted loopback server plays the warden here.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Reads a request head; returns its lines.
fn read_head(stream: &TcpStream) -> Vec<String> {
    let mut r = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

fn sse_head(stream: &mut TcpStream) {
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
}

fn chunk(stream: &mut TcpStream, body: &str) {
    write!(stream, "{:x}\r\n{body}\r\n", body.len()).unwrap();
    stream.flush().unwrap();
}

#[test]
fn tail_reconnects_with_last_event_id_after_a_dropped_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (heads_tx, heads_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        // First connection: a keep-alive comment, one event split over two chunks, then
        // the connection drops in the middle of a second event.
        let (mut s, _) = listener.accept().unwrap();
        heads_tx.send(read_head(&s)).unwrap();
        sse_head(&mut s);
        chunk(&mut s, ": keep-alive\n\n");
        chunk(&mut s, "id: 41\nevent: control\n");
        chunk(
            &mut s,
            "data: {\"what\":\"lockdown on\",\"by\":\"admin\",\"reason\":\"drill\"}\n\n",
        );
        chunk(&mut s, "id: 42\nevent: control\ndata: {\"what\":");
        drop(s);
        // Second connection: must resume after 41.
        let (mut s, _) = listener.accept().unwrap();
        heads_tx.send(read_head(&s)).unwrap();
        sse_head(&mut s);
        chunk(
            &mut s,
            "id: 42\nevent: request.decided\ndata: {\"id\":\"01J\",\"action\":\"allow\",\"reason\":\"ok\",\"by\":\"bob\"}\n\n",
        );
        // Keep the connection open until the test has read the line.
        std::thread::sleep(Duration::from_secs(5));
    });

    let mut tail = Command::new(env!("CARGO_BIN_EXE_clawctl"))
        .args(["--url", &url, "--token", "clwd_test", "tail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if lines_tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait = Duration::from_secs(15);
    let first = heads_rx.recv_timeout(wait).expect("first connection");
    assert_eq!(first[0], "GET /api/v1/events HTTP/1.1");
    assert!(first.contains(&"Authorization: Bearer clwd_test".to_owned()));
    assert!(first.contains(&"Accept: text/event-stream".to_owned()));
    assert!(!first.iter().any(|h| h.starts_with("Last-Event-ID")));

    let l1 = lines_rx.recv_timeout(wait).expect("first event line");
    assert!(
        l1.ends_with("  control  lockdown on by admin: drill"),
        "{l1}"
    );

    let second = heads_rx.recv_timeout(wait).expect("reconnection");
    assert!(
        second.contains(&"Last-Event-ID: 41".to_owned()),
        "the half-received event 42 must not count: {second:?}"
    );
    let l2 = lines_rx
        .recv_timeout(wait)
        .expect("event after reconnecting");
    assert!(
        l2.ends_with("  request.decided  01J allow by bob: ok"),
        "{l2}"
    );

    tail.kill().unwrap();
    tail.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut tail.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        err,
        format!(
            "clawctl: event stream from {url} interrupted (reading events: connection closed inside a chunked body); reconnecting in 500ms\n"
        )
    );
    assert!(!err.contains("clwd_test"));
    drop(server);
}
