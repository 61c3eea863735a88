//! The warden against misbehaving clients on its socket: it answers with an `Error` frame
//! and closes, never waits forever, and keeps serving everyone else.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use clawrden_e2e::{Call, TestWarden};
use clawrden_protocol::{read_message, write_message, ErrorKind, Message, ProtocolError, MAGIC};

/// Far above the 5 s request deadline: reaching it means the warden never hung up.
const PATIENCE: Duration = Duration::from_secs(60);

fn connect(w: &TestWarden) -> UnixStream {
    let s = UnixStream::connect(&w.socket).expect("connect to the warden");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads frames until the warden closes; returns them. Fails if it keeps the line open.
fn frames_until_close(s: &mut UnixStream) -> Vec<Message> {
    let mut got = Vec::new();
    loop {
        match read_message(s) {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return got,
            Err(ProtocolError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the warden kept the connection open for {PATIENCE:?}; got {got:?}")
            }
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return got
            }
            Err(e) => panic!("reading from the warden: {e}; got {got:?}"),
        }
    }
}

fn assert_still_serving(w: &TestWarden) {
    let out = w.run(&Call::new("printf").arg("alive"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"alive");
}

#[test]
fn silent_client_is_disconnected_after_the_request_deadline() {
    let w = TestWarden::start(&clawrden_e2e::policy_allow_all());
    let mut s = connect(&w);
    let frames = frames_until_close(&mut s);
    assert!(
        frames.iter().all(|m| matches!(m, Message::Error { .. })),
        "a silent client got {frames:?}"
    );
    assert_still_serving(&w);
}

#[test]
fn hello_with_an_unknown_version_gets_unsupported_version() {
    let w = TestWarden::start(&clawrden_e2e::policy_allow_all());
    let mut s = connect(&w);
    write_message(
        &mut s,
        &Message::Hello {
            magic: MAGIC,
            version: 999,
        },
    )
    .unwrap();
    let frames = frames_until_close(&mut s);
    assert!(
        matches!(
            frames.as_slice(),
            [Message::Error {
                kind: ErrorKind::UnsupportedVersion,
                ..
            }]
        ),
        "got {frames:?}"
    );
    assert_still_serving(&w);
}

#[test]
fn oversized_request_frame_is_refused_and_closed() {
    let w = TestWarden::start(&clawrden_e2e::policy_allow_all());
    let mut s = connect(&w);
    write_message(&mut s, &Message::hello()).unwrap();
    let hello = read_message(&mut s).unwrap().expect("hello back");
    hello.check_hello().expect("a valid hello");
    // A Request header claiming 4 GiB, and nothing after it.
    s.write_all(&[0x02, 0xff, 0xff, 0xff, 0xff]).unwrap();
    let frames = frames_until_close(&mut s);
    assert!(
        matches!(
            frames.as_slice(),
            [Message::Error {
                kind: ErrorKind::Protocol,
                ..
            }]
        ),
        "got {frames:?}"
    );
    assert_still_serving(&w);
}

#[test]
fn unknown_frame_kind_is_a_protocol_error() {
    let w = TestWarden::start(&clawrden_e2e::policy_allow_all());
    let mut s = connect(&w);
    s.write_all(&[0x7e, 0, 0, 0, 0]).unwrap();
    let frames = frames_until_close(&mut s);
    assert!(
        matches!(
            frames.as_slice(),
            [Message::Error {
                kind: ErrorKind::Protocol,
                ..
            }]
        ),
        "got {frames:?}"
    );
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_still_serving(&w);
}
