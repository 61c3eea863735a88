//! A raw protocol client: what any process that can reach a prisoner's socket can send,
//! with every field of the `Request` chosen by the caller (no shim in between). Used to
//! check that forged requests are refused and recorded.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use clawrden_protocol::{read_message, write_message, Decision, Message, Request};

/// How long a raw call may take before the test gives up on the warden.
const DEADLINE: Duration = Duration::from_secs(30);

/// A request with `argv`, cwd `/`, `PATH` only, stdin closed; adjust fields as needed.
pub fn raw_request(argv: &[&[u8]]) -> Request {
    Request {
        argv: argv.iter().map(|a| a.to_vec()).collect(),
        tool_path: Vec::new(),
        cwd: b"/".to_vec(),
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        parent_request: None,
        ..Request::default()
    }
}

/// What the warden answered a raw request, frame by frame.
#[derive(Debug)]
pub struct RawReply {
    /// Every frame after the warden's `Hello`, until it closed the connection.
    pub frames: Vec<Message>,
}

impl RawReply {
    /// The `Decision` frame (the last one, after any `pending`).
    pub fn decision(&self) -> &Decision {
        self.frames
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::Decision(d) => Some(d),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Decision frame in {:?}", self.frames))
    }

    /// The bytes of every `Stdout` frame, in order.
    pub fn stdout(&self) -> Vec<u8> {
        self.frames
            .iter()
            .filter_map(|m| match m {
                Message::Stdout(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .concat()
    }

    /// The exit status, if the command ran to an `Exit` frame.
    pub fn exit(&self) -> Option<i32> {
        self.frames.iter().find_map(|m| match m {
            Message::Exit(c) => Some(*c),
            _ => None,
        })
    }
}

/// Sends `Hello` and `request` to `socket` and reads every frame until the warden closes
/// the connection (a deny, or the end of a command that needs no input).
pub fn raw_call(socket: &Path, request: &Request) -> RawReply {
    let mut s = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect to the warden at {}: {e}", socket.display()));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    write_message(&mut s, &Message::hello()).expect("send Hello");
    write_message(&mut s, &Message::Request(request.clone())).expect("send Request");
    match read_message(&mut s) {
        Ok(Some(Message::Hello { .. })) => {}
        other => panic!("expected the warden's Hello, got {other:?}"),
    }
    let mut frames = Vec::new();
    loop {
        match read_message(&mut s) {
            Ok(Some(m)) => frames.push(m),
            Ok(None) => return RawReply { frames },
            Err(e) => panic!("reading from the warden after {frames:?}: {e}"),
        }
    }
}

/// A raw client for inside a prisoner, in perl (part of every Debian image: perl-base),
/// since the prisoner has no other way to speak the protocol without the shim. It sends
/// the hex-encoded bytes it is given to the socket, then prints everything the warden
/// sends back, hex-encoded, until the warden closes the connection.
const PERL_RAW_CLIENT: &str = r#"
use IO::Socket::UNIX;
my ($path, $hex) = @ARGV;
my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect $path: $!\n";
binmode $s;
syswrite($s, pack("H*", $hex)) or die "write: $!\n";
my ($all, $buf) = ("", "");
while (sysread($s, $buf, 65536)) { $all .= $buf }
print unpack("H*", $all);
"#;

/// Sends `Hello` and `request` from inside `container` as `user`, through the socket at
/// `socket` (a path inside the container), and decodes what the warden answered.
/// Errors when the container has no perl or the client fails.
pub fn raw_call_in_container(
    container: &crate::docker::Container,
    user: &str,
    socket: &str,
    request: &Request,
) -> Result<RawReply, String> {
    let mut bytes = Vec::new();
    Message::hello()
        .encode(&mut bytes)
        .map_err(|e| e.to_string())?;
    Message::Request(request.clone())
        .encode(&mut bytes)
        .map_err(|e| e.to_string())?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let out = container.exec(user, &["perl", "-e", PERL_RAW_CLIENT, socket, &hex])?;
    if !out.success() {
        return Err(format!(
            "the raw client in {} failed: {out:?}",
            container.name()
        ));
    }
    let text = out.stdout_text();
    let reply: Vec<u8> = (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the raw client printed {text:?}: {e}"))?;
    let mut cursor = std::io::Cursor::new(reply);
    match read_message(&mut cursor) {
        Ok(Some(Message::Hello { .. })) => {}
        other => return Err(format!("expected the warden's Hello, got {other:?}")),
    }
    let mut frames = Vec::new();
    loop {
        match read_message(&mut cursor) {
            Ok(Some(m)) => frames.push(m),
            Ok(None) => return Ok(RawReply { frames }),
            Err(e) => return Err(format!("decoding the reply after {frames:?}: {e}")),
        }
    }
}
