//! Server-Sent Events: the parser (WHATWG rules, the subset the warden uses plus what a
//! proxy might add) and the reconnecting follower used by `tail` and `queue --watch`.

use std::io::{self, BufRead, Read};
use std::time::Duration;

use crate::client::{ApiError, Client};

/// Longest event line accepted; an event's JSON is far smaller.
const MAX_LINE: u64 = 1024 * 1024;
/// The warden sends a keep-alive comment every 15 s; three missed ones means a dead link.
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// Reconnect delays: 0.5 s doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id seen on the stream when this event was dispatched.
    pub id: Option<String>,
    /// `event:` field, `message` when absent.
    pub event: String,
    /// `data:` lines joined with '\n'.
    pub data: String,
}

/// Line-by-line SSE parser.
#[derive(Debug, Default)]
pub struct SseParser {
    data: String,
    has_data: bool,
    event: String,
    /// The `id:` buffer; committed to `last_id` when a block ends (WHATWG), so an id
    /// whose event was cut off is never sent back as Last-Event-ID.
    id_buf: Option<String>,
    last_id: Option<String>,
    retry: Option<Duration>,
}

impl SseParser {
    /// Feeds one line (without its terminator); returns an event when the line ends one.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            self.last_id.clone_from(&self.id_buf);
            let event = std::mem::take(&mut self.event);
            if !std::mem::take(&mut self.has_data) {
                self.data.clear();
                return None;
            }
            let mut data = std::mem::take(&mut self.data);
            if data.ends_with('\n') {
                data.pop();
            }
            return Some(SseEvent {
                id: self.last_id.clone(),
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                data,
            });
        }
        if line.starts_with(':') {
            return None; // comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.id_buf = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        None
    }

    /// Drops a half-received event (after a dropped connection).
    pub fn reset_partial(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event.clear();
        self.id_buf.clone_from(&self.last_id);
    }

    /// The last `id:` of a completed block: what to send as Last-Event-ID when reconnecting.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The server's `retry:` hint, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }
}

/// Reads the next event from an SSE body. `Ok(None)` at the end of the stream.
pub fn next_event<R: BufRead>(r: &mut R, parser: &mut SseParser) -> io::Result<Option<SseEvent>> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') {
            if n as u64 >= MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "event line longer than 1 MiB",
                ));
            }
            // A stream cut inside a line: the partial event is discarded.
            return Ok(None);
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf);
        if let Some(ev) = parser.line(&line) {
            return Ok(Some(ev));
        }
    }
}

/// What the follower tells its caller.
pub enum Follow<'a> {
    /// A (re)connection succeeded.
    Connected,
    /// An event arrived.
    Event(&'a SseEvent),
}

/// Follows GET /api/v1/events until `handle` returns `Ok(false)` or an error. After a
/// dropped connection it reconnects with Last-Event-ID, waiting 0.5 s, 1 s, 2 s, ... up
/// to 10 s between attempts (reset once a connection works). The first connection's
/// failure, and any authentication failure, is returned at once.
pub fn follow(
    client: &Client,
    mut handle: impl FnMut(Follow<'_>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let mut parser = SseParser::default();
    let mut backoff = Duration::from_millis(500);
    let mut first = true;
    loop {
        parser.reset_partial();
        let mut headers = vec![("Accept", "text/event-stream".to_owned())];
        if let Some(id) = parser.last_event_id() {
            headers.push(("Last-Event-ID", id.to_owned()));
        }
        let err = match client.open_stream("/api/v1/events", &headers, IDLE_TIMEOUT) {
            Ok(mut resp) => {
                if !handle(Follow::Connected)? {
                    return Ok(());
                }
                first = false;
                backoff = Duration::from_millis(500);
                loop {
                    match next_event(resp.body(), &mut parser) {
                        Ok(Some(ev)) => {
                            if !handle(Follow::Event(&ev))? {
                                return Ok(());
                            }
                        }
                        Ok(None) => break "the warden closed the event stream".to_owned(),
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::TimedOut =>
                        {
                            break format!("no event or keep-alive for {}s", IDLE_TIMEOUT.as_secs())
                        }
                        Err(e) => break format!("reading events: {e}"),
                    }
                }
            }
            Err(e) if first => return Err(e.into()),
            Err(
                e @ ApiError::Status {
                    status: 401 | 403, ..
                },
            ) => return Err(e.into()),
            Err(e) => e.to_string(),
        };
        let wait = parser.retry().unwrap_or(backoff).min(MAX_BACKOFF);
        eprintln!(
            "clawctl: event stream from {} interrupted ({err}); reconnecting in {}",
            client.base.text,
            clawrden_policy::format_duration(wait)
        );
        std::thread::sleep(wait);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse_all(raw: &str) -> Vec<SseEvent> {
        let mut r = Cursor::new(raw.as_bytes().to_vec());
        let mut p = SseParser::default();
        let mut out = Vec::new();
        while let Some(ev) = next_event(&mut r, &mut p).unwrap() {
            out.push(ev);
        }
        out
    }

    fn ev(id: Option<&str>, event: &str, data: &str) -> SseEvent {
        SseEvent {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn warden_wire_format_parses_id_event_and_data() {
        let raw = "id: 7\nevent: request.pending\ndata: {\"id\":\"01J\"}\n\n";
        assert_eq!(
            parse_all(raw),
            vec![ev(Some("7"), "request.pending", "{\"id\":\"01J\"}")]
        );
    }

    #[test]
    fn multi_line_data_joins_with_newlines_and_crlf_is_accepted() {
        let raw = "data: first\r\ndata:second\r\ndata\r\n\r\n";
        assert_eq!(parse_all(raw), vec![ev(None, "message", "first\nsecond\n")]);
    }

    #[test]
    fn comments_are_ignored_and_blank_blocks_dispatch_nothing() {
        let raw = ": keep-alive\n\n: another\nevent: x\n\nid: 3\n\nevent: reset\ndata: {}\n\n";
        // The `event: x` block has no data: not dispatched, and its type does not leak.
        assert_eq!(parse_all(raw), vec![ev(Some("3"), "reset", "{}")]);
    }

    #[test]
    fn last_event_id_persists_across_events_and_ignores_nul() {
        let mut p = SseParser::default();
        for l in ["id: 5", "data: a", ""] {
            p.line(l);
        }
        assert_eq!(p.line("data: b"), None);
        assert_eq!(p.line(""), Some(ev(Some("5"), "message", "b")));
        p.line("id: 6\0");
        p.line("");
        assert_eq!(p.last_event_id(), Some("5"));
        p.line("id: 7");
        assert_eq!(
            p.last_event_id(),
            Some("5"),
            "committed only when the block ends"
        );
        p.reset_partial();
        p.line("");
        assert_eq!(p.last_event_id(), Some("5"));
        p.line("retry: 2500");
        assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
        p.line("retry: soon");
        assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        assert_eq!(
            parse_all("data:  two\n\n"),
            vec![ev(None, "message", " two")]
        );
    }

    #[test]
    fn stream_cut_inside_an_event_yields_nothing_for_it() {
        assert_eq!(
            parse_all("id: 1\ndata: {\"a\":1}\n\nid: 2\ndata: {\"b\""),
            vec![ev(Some("1"), "message", "{\"a\":1}")]
        );
    }
}
