//! Log lines inside a call carry its request id; env values never reach the log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use clawrden_protocol::{Action, Message};
use common::{decision, request, TestWarden};

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_logs_carry_request_id_and_never_env_values() {
    let buf = Captured(Arc::new(Mutex::new(Vec::new())));
    let writer = buf.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();

    let mut w = TestWarden::start().await;
    let mut c = w.handshake().await;
    let mut r = request(&["tool", "echo", "hi"]);
    r.env
        .push((b"OPENAI_API_KEY".to_vec(), b"sk-hunter2".to_vec()));
    c.send(&Message::Request(r)).await;
    let d = decision(&mut c).await;
    assert_eq!(d.action, Action::Allow);
    assert_eq!(c.recv().await, Some(Message::Stdout(b"hi\n".to_vec())));
    assert_eq!(c.recv().await, Some(Message::Exit(0)));
    w.shutdown().await;

    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let span = format!("request{{request_id={} prisoner=agent-1}}", d.request_id);
    let decided: Vec<&str> = text.lines().filter(|l| l.contains(" decided ")).collect();
    assert_eq!(decided.len(), 1, "{text}");
    assert!(decided[0].contains(&span), "{text}");
    let finished: Vec<&str> = text.lines().filter(|l| l.contains(" finished ")).collect();
    assert_eq!(finished.len(), 1, "{text}");
    assert!(finished[0].contains(&span), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("listening") && l.contains("prisoner=agent-1")),
        "{text}"
    );
}
