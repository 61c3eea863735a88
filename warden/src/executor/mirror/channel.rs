//! The warden's end of the executor channel to a framed exec-helper in the prisoner
//! (`clawrden_protocol::channel`), carried by one non-TTY `docker exec`: frames go to the
//! exec's stdin, and come back on its stdout (the helper's own diagnostics on stderr).

use std::pin::Pin;
use std::sync::Arc;

use bollard::container::LogOutput;
use clawrden_protocol::channel::{ChannelFrame, ChannelMsg, SINGLE_CALL, STDIN_WINDOW};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::executor::{Outcome, Started, StreamOut};

/// Frames queued for the writer before senders wait.
const FRAME_QUEUE: usize = 8;

/// The exec's output stream, as bollard gives it.
pub type ExecOutput = Pin<Box<dyn Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Sends frames to the helper, in order, from one writer task.
pub struct ToHelper {
    frames: mpsc::Sender<Vec<u8>>,
    /// Stdin bytes that may still be sent before the helper grants more.
    pub window: Arc<Semaphore>,
}

impl ToHelper {
    /// Starts the writer task over the exec's stdin.
    pub fn start(
        stdin: Pin<Box<dyn AsyncWrite + Send>>,
    ) -> (ToHelper, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(FRAME_QUEUE);
        let writer = tokio::spawn(write_frames(stdin, rx));
        let helper = ToHelper {
            frames: tx,
            window: Arc::new(Semaphore::new(STDIN_WINDOW as usize)),
        };
        (helper, writer)
    }

    /// Queues one frame of the only call; false once the writer is gone.
    pub async fn send(&self, msg: ChannelMsg) -> bool {
        let mut buf = Vec::new();
        if ChannelFrame::single(msg).encode(&mut buf).is_err() {
            return false;
        }
        self.frames.send(buf).await.is_ok()
    }
}

async fn write_frames(
    mut stdin: Pin<Box<dyn AsyncWrite + Send>>,
    mut frames: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(frame) = frames.recv().await {
        if stdin.write_all(&frame).await.is_err() {
            return;
        }
        // The attach connection buffers: what is written must go out now (a signal, the
        // last bytes of stdin), unless more is already queued behind it.
        if frames.is_empty() && stdin.flush().await.is_err() {
            return;
        }
    }
    // Every sender is gone: the warden is done with the call. Closing the exec's stdin
    // tells the helper so (it kills whatever is left of the tree).
    let _ = stdin.shutdown().await;
}

/// Where the helper's `Started` frame goes: the session's `started`, completed with what
/// the executor knows itself.
#[derive(Debug)]
pub struct StartedReport {
    pub tx: oneshot::Sender<Started>,
    /// The exec's pid on the Docker host.
    pub pid: u32,
    pub run_as: Option<(u32, u32)>,
}

/// How the helper's side of a call ended.
#[derive(Debug, Default)]
pub struct HelperEnd {
    /// From its `Exit`, `Signaled` or `Failed` frame.
    pub outcome: Option<Outcome>,
    /// The channel broke (a malformed or unexpected frame); what was wrong.
    pub broken: Option<String>,
}

/// Reads the exec's output until it ends: the helper's frames become the `started` report
/// (before any output: the helper sends `Started` first), output for the session, stdin
/// grants and the outcome; its own stderr goes to the session as stderr.
/// Once the session stops listening (or the channel broke), output is still read and
/// dropped so the helper is never blocked on a full pipe while it is being killed.
pub async fn read_helper(
    mut stream: ExecOutput,
    output: mpsc::Sender<StreamOut>,
    window: Arc<Semaphore>,
    mut started: Option<StartedReport>,
) -> HelperEnd {
    let mut end = HelperEnd::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut listening = true;
    while let Some(item) = stream.next().await {
        let bytes = match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => message,
            Ok(LogOutput::StdErr { message }) => {
                if listening
                    && output
                        .send(StreamOut::Stderr(message.to_vec()))
                        .await
                        .is_err()
                {
                    listening = false;
                }
                continue;
            }
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "the exec's output stream failed");
                break;
            }
        };
        if end.broken.is_some() {
            continue;
        }
        buf.extend_from_slice(&bytes);
        let mut used_total = 0;
        loop {
            match ChannelFrame::decode_from(&buf[used_total..]) {
                Ok(None) => break,
                Ok(Some((frame, used))) => {
                    used_total += used;
                    if frame.call != SINGLE_CALL {
                        end.broken = Some(format!(
                            "the exec-helper sent a frame for call {}, not for its only call",
                            frame.call
                        ));
                        break;
                    }
                    let item = match frame.msg {
                        ChannelMsg::Stdout(b) => StreamOut::Stdout(b),
                        ChannelMsg::Stderr(b) => StreamOut::Stderr(b),
                        ChannelMsg::TtyOut(b) => StreamOut::TtyOut(b),
                        ChannelMsg::Termios(t) => StreamOut::Termios(t),
                        ChannelMsg::StdinWindow(n) => {
                            // Never more than the window itself, whatever the helper says.
                            let room =
                                (STDIN_WINDOW as usize).saturating_sub(window.available_permits());
                            window.add_permits((n as usize).min(room));
                            continue;
                        }
                        ChannelMsg::Started { program, .. } => {
                            if let Some(report) = started.take() {
                                let _ = report.tx.send(Started {
                                    pid: report.pid,
                                    program,
                                    run_as: report.run_as,
                                });
                            }
                            continue;
                        }
                        ChannelMsg::Exit(code) => {
                            end.outcome.get_or_insert(Outcome::Exited(code));
                            continue;
                        }
                        ChannelMsg::Signaled(n) => {
                            end.outcome.get_or_insert(Outcome::Signaled(n));
                            continue;
                        }
                        ChannelMsg::Failed(f) => {
                            end.outcome.get_or_insert(Outcome::SpawnFailed {
                                not_found: f.not_found,
                                message: f.message,
                            });
                            continue;
                        }
                        other => {
                            end.broken = Some(format!(
                                "the exec-helper sent a {:?} frame, which only the warden sends",
                                other.kind()
                            ));
                            break;
                        }
                    };
                    if listening && output.send(item).await.is_err() {
                        listening = false;
                    }
                }
                Err(e) => {
                    end.broken = Some(format!("the exec-helper sent a malformed frame: {e}"));
                    break;
                }
            }
        }
        buf.drain(..used_total);
        if end.broken.is_some() {
            buf = Vec::new();
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use clawrden_protocol::channel::write_io;
    use clawrden_protocol::channel::ChannelKind;

    fn stream_of(chunks: Vec<LogOutput>) -> ExecOutput {
        Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok)))
    }

    fn frame(msg: ChannelMsg) -> Vec<u8> {
        let mut b = Vec::new();
        ChannelFrame::single(msg).encode(&mut b).unwrap();
        b
    }

    #[tokio::test]
    async fn a_helper_cannot_grant_more_stdin_than_the_window() {
        let window = Arc::new(Semaphore::new(STDIN_WINDOW as usize));
        window.acquire_many(1000).await.unwrap().forget();
        let (tx, _rx) = mpsc::channel(8);
        let bytes = frame(ChannelMsg::StdinWindow(u32::MAX));
        let end = read_helper(
            stream_of(vec![LogOutput::StdOut {
                message: bytes.into(),
            }]),
            tx,
            window.clone(),
            None,
        )
        .await;
        assert_eq!(window.available_permits(), STDIN_WINDOW as usize);
        assert!(end.outcome.is_none() && end.broken.is_none());
    }

    #[tokio::test]
    async fn frames_split_across_chunks_become_output_in_order_then_the_outcome() {
        let mut all = Vec::new();
        write_io(&mut all, ChannelKind::TtyOut, SINGLE_CALL, b"a\r\n");
        all.extend(frame(ChannelMsg::Stdout(b"out".to_vec())));
        all.extend(frame(ChannelMsg::Signaled(2)));
        // Every byte in its own chunk, and the helper's own stderr in between.
        let mut chunks: Vec<LogOutput> = all
            .iter()
            .map(|b| LogOutput::StdOut {
                message: vec![*b].into(),
            })
            .collect();
        chunks.insert(
            3,
            LogOutput::StdErr {
                message: b"note\n".to_vec().into(),
            },
        );
        let (tx, mut rx) = mpsc::channel(64);
        let window = Arc::new(Semaphore::new(STDIN_WINDOW as usize));
        let end = read_helper(stream_of(chunks), tx, window, None).await;
        assert_eq!(end.outcome, Some(Outcome::Signaled(2)));
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            got.push(item);
        }
        assert_eq!(
            got,
            [
                StreamOut::Stderr(b"note\n".to_vec()),
                StreamOut::TtyOut(b"a\r\n".to_vec()),
                StreamOut::Stdout(b"out".to_vec()),
            ]
        );
    }

    #[tokio::test]
    async fn a_frame_only_the_warden_sends_breaks_the_channel() {
        let (tx, _rx) = mpsc::channel(8);
        let window = Arc::new(Semaphore::new(STDIN_WINDOW as usize));
        let mut bytes = frame(ChannelMsg::Kill);
        bytes.extend(frame(ChannelMsg::Exit(0)));
        let end = read_helper(
            stream_of(vec![LogOutput::StdOut {
                message: bytes.into(),
            }]),
            tx,
            window,
            None,
        )
        .await;
        assert_eq!(
            end.broken.as_deref(),
            Some("the exec-helper sent a Kill frame, which only the warden sends")
        );
        assert_eq!(end.outcome, None, "nothing after the break is believed");
    }

    #[tokio::test]
    async fn the_started_frame_reports_what_the_helper_executes_once() {
        let mut bytes = Vec::new();
        for program in [&b"/usr/lib/clawrden/originals/usr/bin/cat"[..], b"/forged"] {
            bytes.extend(frame(ChannelMsg::Started {
                pid: 7,
                program: program.to_vec(),
            }));
        }
        bytes.extend(frame(ChannelMsg::Exit(0)));
        let (tx, _rx) = mpsc::channel(8);
        let (started_tx, started_rx) = oneshot::channel();
        let window = Arc::new(Semaphore::new(STDIN_WINDOW as usize));
        let end = read_helper(
            stream_of(vec![LogOutput::StdOut {
                message: bytes.into(),
            }]),
            tx,
            window,
            Some(StartedReport {
                tx: started_tx,
                pid: 4242,
                run_as: Some((1000, 1000)),
            }),
        )
        .await;
        assert_eq!(end.outcome, Some(Outcome::Exited(0)));
        let started = started_rx.await.expect("a started report");
        assert_eq!(
            (started.pid, started.program, started.run_as),
            (
                4242,
                b"/usr/lib/clawrden/originals/usr/bin/cat".to_vec(),
                Some((1000, 1000))
            ),
            "the exec's host pid, the helper's program, only the first Started counts"
        );
    }
}
