use super::*;

fn roundtrip(m: Message) {
    let mut buf = Vec::new();
    m.encode(&mut buf).unwrap();
    let (back, used) = decode_frame(&buf).unwrap().unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(back, m);
    // Every strict prefix is "need more bytes", never an error or a wrong message.
    for cut in 0..buf.len() {
        assert!(decode_frame(&buf[..cut]).unwrap().is_none(), "prefix {cut}");
    }
    // And the blocking reader agrees.
    let mut r = &buf[..];
    assert_eq!(read_message(&mut r).unwrap().unwrap(), m);
}

fn sample_request() -> Request {
    Request {
        argv: vec![
            b"git".to_vec(),
            b"commit".to_vec(),
            b"-m".to_vec(),
            b"a \"quoted\"\nmulti-line message".to_vec(),
            Vec::new(),
            vec![0xff, 0xfe, b'x', 0x80],
        ],
        tool_path: b"/usr/bin/git".to_vec(),
        cwd: vec![b'/', b't', 0xc3, 0x28],
        env: vec![
            (b"HOME".to_vec(), b"/home/agent".to_vec()),
            (b"WEIRD".to_vec(), vec![0, 1, 2, 0xff]),
            (b"EMPTY".to_vec(), Vec::new()),
        ],
        parent_request: Some("r-123".into()),
        stdio: [FdKind::Terminal, FdKind::Pipe, FdKind::Terminal],
        terminal: Some(sample_terminal()),
        extra_fds: vec![
            ExtraFd {
                fd: 3,
                kind: FdKind::File,
            },
            ExtraFd {
                fd: 63,
                kind: FdKind::Pipe,
            },
        ],
        extra_fds_dropped: 2,
        fds_attached: true,
    }
}

fn sample_termios() -> Termios {
    Termios {
        iflag: 0x2d02,
        oflag: 0x5,
        cflag: 0xbf,
        lflag: 0x8a3b,
        cc: vec![3, 28, 127, 21, 4, 0, 1, 0, 17, 19, 26, 0, 18, 15, 23, 22],
    }
}

fn sample_terminal() -> Terminal {
    Terminal {
        termios: sample_termios(),
        size: WinSize {
            rows: 24,
            cols: 80,
            xpixel: 0,
            ypixel: 0,
        },
        term: b"xterm-256color".to_vec(),
    }
}

#[test]
fn every_message_roundtrips_byte_exact() {
    roundtrip(Message::hello());
    roundtrip(Message::Request(sample_request()));
    roundtrip(Message::Request(Request::default()));
    roundtrip(Message::Decision(Decision {
        request_id: "01J".into(),
        action: Action::Deny,
        reason: "force-push is not allowed".into(),
        rule: Some("no-force-push".into()),
        uses_fds: false,
    }));
    roundtrip(Message::Decision(Decision {
        request_id: "x".into(),
        action: Action::Allow,
        reason: String::new(),
        rule: None,
        uses_fds: true,
    }));
    roundtrip(Message::Pending {
        approval_id: "a-1".into(),
        message: "waiting for approval of `curl x`".into(),
    });
    roundtrip(Message::Stdin(vec![0, 1, 2, 255]));
    roundtrip(Message::Stdin(Vec::new()));
    roundtrip(Message::StdinEof);
    roundtrip(Message::Signal(2));
    roundtrip(Message::Resize {
        rows: 50,
        cols: 200,
    });
    roundtrip(Message::Stdout(vec![7; MAX_IO_PAYLOAD as usize]));
    roundtrip(Message::Stderr(b"err".to_vec()));
    roundtrip(Message::TtyOut(b"a\r\n\x1b[0m".to_vec()));
    roundtrip(Message::TtyOut(vec![1; MAX_IO_PAYLOAD as usize]));
    roundtrip(Message::Termios(sample_termios()));
    roundtrip(Message::Termios(Termios {
        iflag: 0,
        oflag: 0,
        cflag: 0,
        lflag: 0,
        cc: Vec::new(),
    }));
    roundtrip(Message::Exit(255));
    roundtrip(Message::Signaled(9));
    roundtrip(Message::Error {
        kind: ErrorKind::Timeout,
        message: "timed out after 30s; process tree killed".into(),
    });
    roundtrip(Message::Error {
        kind: ErrorKind::Other(200),
        message: String::new(),
    });
}

#[test]
fn oversized_length_is_rejected_from_the_header_alone() {
    // A Stdout header claiming 4 GiB: rejected before any payload is read or allocated.
    let raw = [Kind::Stdout as u8, 0xff, 0xff, 0xff, 0xff];
    match FrameHeader::parse(raw) {
        Err(ProtocolError::TooLarge { len, max, .. }) => {
            assert_eq!(len, u32::MAX);
            assert_eq!(max, MAX_IO_PAYLOAD);
        }
        other => panic!("{other:?}"),
    }
    let mut r = &raw[..];
    assert!(matches!(
        read_message(&mut r),
        Err(ProtocolError::TooLarge { .. })
    ));
    // A request just over 4 MiB is refused; exactly 4 MiB is within the limit.
    let over = (MAX_REQUEST_PAYLOAD + 1).to_be_bytes();
    assert!(FrameHeader::parse([2, over[0], over[1], over[2], over[3]]).is_err());
    let at = MAX_REQUEST_PAYLOAD.to_be_bytes();
    assert!(FrameHeader::parse([2, at[0], at[1], at[2], at[3]]).is_ok());
}

#[test]
fn unknown_kind_is_an_error() {
    assert!(matches!(
        decode_frame(&[0x77, 0, 0, 0, 0]),
        Err(ProtocolError::UnknownKind(0x77))
    ));
}

#[test]
fn truncated_stream_is_an_error_not_a_hang() {
    let mut buf = Vec::new();
    Message::Exit(3).encode(&mut buf).unwrap();
    let mut r = &buf[..buf.len() - 1];
    assert!(matches!(
        read_message(&mut r),
        Err(ProtocolError::Truncated)
    ));
    let mut r = &buf[..2];
    assert!(matches!(
        read_message(&mut r),
        Err(ProtocolError::Truncated)
    ));
    let mut empty: &[u8] = &[];
    assert!(read_message(&mut empty).unwrap().is_none());
}

#[test]
fn inner_length_overrun_is_rejected_without_allocating() {
    // Request payload whose argv count claims 2^32-1 entries in an 8-byte frame.
    let payload = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
    let err = Message::decode(Kind::Request, &payload).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::Decode(DecodeError::LengthOverrun { .. })
    ));
    // A byte string claiming more bytes than remain.
    let payload = [0, 0, 0, 1, 0, 0, 0, 9, b'a'];
    assert!(Message::decode(Kind::Request, &payload).is_err());
}

#[test]
fn trailing_bytes_and_bad_flags_are_rejected() {
    assert!(matches!(
        Message::decode(Kind::Exit, &[0, 0, 0, 1, 9]),
        Err(ProtocolError::Decode(DecodeError::Trailing(1)))
    ));
    // Decision with action byte 7.
    let mut p = Vec::new();
    Encoder::new(&mut p).str("id");
    p.push(7);
    assert!(Message::decode(Kind::Decision, &p).is_err());
    // Non-UTF-8 in a text field.
    let p = [0, 0, 0, 1, 0xff, 0, 0, 0, 0];
    assert!(matches!(
        Message::decode(Kind::Pending, &p),
        Err(ProtocolError::Decode(DecodeError::NotUtf8))
    ));
}

#[test]
fn hello_checks_magic_and_version() {
    assert!(Message::hello().check_hello().is_ok());
    let bad = Message::Hello {
        magic: *b"HTTP",
        version: 1,
    };
    assert!(matches!(bad.check_hello(), Err(ProtocolError::BadMagic(_))));
    let newer = Message::Hello {
        magic: MAGIC,
        version: VERSION + 1,
    };
    let err = newer.check_hello().unwrap_err();
    assert_eq!(err.wire_kind(), ErrorKind::UnsupportedVersion);
    assert!(Message::Exit(0).check_hello().is_err());
}

#[test]
fn encode_refuses_oversized_payloads() {
    let mut buf = vec![1, 2, 3];
    let err = Message::Stdout(vec![0; MAX_IO_PAYLOAD as usize + 1])
        .encode(&mut buf)
        .unwrap_err();
    assert!(matches!(err, ProtocolError::TooLarge { .. }));
    assert_eq!(buf, vec![1, 2, 3], "nothing appended on error");
    let huge = Request {
        argv: vec![vec![b'a'; MAX_REQUEST_PAYLOAD as usize]],
        ..Request::default()
    };
    assert!(Message::Request(huge).encode(&mut buf).is_err());
}

#[test]
fn a_command_line_of_arg_max_fits_in_a_request() {
    // 2 MiB of arguments (Linux's default ARG_MAX) plus environment must fit.
    let argv: Vec<Vec<u8>> = (0..16 * 1024).map(|_| vec![b'x'; 127]).collect();
    let r = Request {
        argv,
        ..Request::default()
    };
    roundtrip(Message::Request(r));
}

#[test]
fn write_chunks_splits_at_the_io_limit() {
    let data = vec![9u8; MAX_IO_PAYLOAD as usize * 2 + 5];
    let mut out = Vec::new();
    write_chunks(&mut out, Kind::Stdout, &data);
    let mut rest = &out[..];
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some((m, used)) = decode_frame(rest).unwrap() {
        match m {
            Message::Stdout(b) => got.extend(b),
            other => panic!("{other:?}"),
        }
        rest = &rest[used..];
        frames += 1;
    }
    assert_eq!(frames, 3);
    assert_eq!(got, data);
    let mut none = Vec::new();
    write_chunks(&mut none, Kind::Stdout, &[]);
    assert!(none.is_empty());
}

#[test]
fn error_kinds_map_to_design_exit_statuses() {
    assert_eq!(ErrorKind::Timeout.exit_status(), 124);
    assert_eq!(ErrorKind::Protocol.exit_status(), 125);
    assert_eq!(ErrorKind::UnsupportedVersion.exit_status(), 125);
    assert_eq!(ErrorKind::NotFound.exit_status(), 127);
    assert_eq!(ErrorKind::Cancelled.exit_status(), 126);
}

/// Deterministic stand-in for the `frame_decoder` fuzz target that runs on stable in
/// every test run: mutated valid frames and random bytes never panic, and whatever
/// decodes re-encodes to an identical message.
#[test]
fn decoder_survives_mutated_and_random_input() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seeds = Vec::new();
    for m in [
        Message::hello(),
        Message::Request(sample_request()),
        Message::Stdout(b"hello".to_vec()),
        Message::TtyOut(b"\r\n".to_vec()),
        Message::Termios(sample_termios()),
        Message::Error {
            kind: ErrorKind::Timeout,
            message: "t".into(),
        },
    ] {
        let mut b = Vec::new();
        m.encode(&mut b).unwrap();
        seeds.push(b);
    }
    for i in 0..20_000 {
        let mut buf = if i % 4 == 0 {
            let n = (next() % 64) as usize;
            (0..n).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            seeds[(next() % seeds.len() as u64) as usize].clone()
        };
        for _ in 0..(next() % 4) {
            if buf.is_empty() {
                break;
            }
            let at = (next() % buf.len() as u64) as usize;
            match next() % 3 {
                0 => buf[at] = next() as u8,
                1 => buf.truncate(at),
                _ => buf.insert(at, next() as u8),
            }
        }
        if let Ok(Some((msg, _))) = decode_frame(&buf) {
            let mut again = Vec::new();
            msg.encode(&mut again).unwrap();
            assert_eq!(decode_frame(&again).unwrap().unwrap().0, msg);
        }
        let mut r = &buf[..];
        let _ = read_message(&mut r);
    }
}

#[test]
fn a_version_1_hello_is_refused_as_unsupported() {
    let v1 = Message::Hello {
        magic: MAGIC,
        version: 1,
    };
    let err = v1.check_hello().unwrap_err();
    assert_eq!(err.wire_kind(), ErrorKind::UnsupportedVersion);
    assert_eq!(
        err.to_string(),
        format!("unsupported protocol version 1 (this build speaks version {VERSION})")
    );
}

fn encoded(r: Request) -> Vec<u8> {
    let mut buf = Vec::new();
    Message::Request(r).encode(&mut buf).unwrap();
    buf
}

#[test]
fn a_request_is_refused_when_terminal_and_stdio_disagree() {
    // A terminal descriptor without the terminal's settings...
    let no_settings = Request {
        stdio: [FdKind::Terminal, FdKind::Pipe, FdKind::Pipe],
        ..Request::default()
    };
    assert!(matches!(
        decode_frame(&encoded(no_settings)),
        Err(ProtocolError::Decode(DecodeError::BadValue(_)))
    ));
    // ... and settings without a terminal descriptor.
    let stray = Request {
        terminal: Some(sample_terminal()),
        ..Request::default()
    };
    assert!(decode_frame(&encoded(stray)).is_err());
}

#[test]
fn extra_descriptors_must_be_above_2_ascending_open_and_capped() {
    let with = |fds: Vec<(u32, FdKind)>| Request {
        extra_fds: fds
            .into_iter()
            .map(|(fd, kind)| ExtraFd { fd, kind })
            .collect(),
        ..Request::default()
    };
    let ok = with(vec![
        (3, FdKind::Pipe),
        (10, FdKind::Terminal),
        (63, FdKind::File),
    ]);
    roundtrip(Message::Request(ok));
    for bad in [
        vec![(2, FdKind::Pipe)],
        vec![(5, FdKind::Pipe), (4, FdKind::Pipe)],
        vec![(5, FdKind::Pipe), (5, FdKind::Pipe)],
        vec![(7, FdKind::Closed)],
        (3..3 + MAX_EXTRA_FDS as u32 + 1)
            .map(|fd| (fd, FdKind::Pipe))
            .collect(),
    ] {
        let r = with(bad.clone());
        assert!(decode_frame(&encoded(r)).is_err(), "{bad:?} was accepted");
    }
    let full = with(
        (3..3 + MAX_EXTRA_FDS as u32)
            .map(|fd| (fd, FdKind::Socket))
            .collect(),
    );
    roundtrip(Message::Request(full));
}

#[test]
fn attached_descriptors_are_the_passable_standard_ones_then_the_extra_ones() {
    assert_eq!(sample_request().attached_fds(), vec![1, 3, 63]);
    let r = Request {
        stdio: [FdKind::Closed, FdKind::File, FdKind::Other],
        ..Request::default()
    };
    assert_eq!(r.attached_fds(), vec![1, 2]);
    assert!(!r.stdin_open() && !r.has_terminal());
    assert!(sample_request().stdin_open() && sample_request().has_terminal());
}

#[test]
fn a_descriptor_above_2_is_recognised_anywhere_in_an_argument() {
    assert_eq!(names_inherited_fd(b"/dev/fd/63"), Some(63));
    assert_eq!(names_inherited_fd(b"--input=/dev/fd/3"), Some(3));
    assert_eq!(names_inherited_fd(b"/proc/self/fd/10/"), Some(10));
    assert_eq!(names_inherited_fd(b"/proc/thread-self/fd/4"), Some(4));
    assert_eq!(names_inherited_fd(b"x /dev/fd/1 and /dev/fd/12"), Some(12));
    for fine in [
        &b"/dev/fd/0"[..],
        b"/dev/fd/1",
        b"/dev/fd/2",
        b"/dev/stdin",
        b"/dev/fd/",
        b"/dev/fd",
        b"/dev/fdx/63",
        b"/proc/1/fd/63",
        b"plain",
        b"",
    ] {
        assert_eq!(
            names_inherited_fd(fine),
            None,
            "{}",
            String::from_utf8_lossy(fine)
        );
    }
}

#[test]
fn fd_kinds_have_stable_names_and_only_open_non_terminals_pass() {
    let all = [
        FdKind::Closed,
        FdKind::Terminal,
        FdKind::Pipe,
        FdKind::File,
        FdKind::Socket,
        FdKind::Other,
    ];
    let names: Vec<&str> = all.iter().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        ["closed", "terminal", "pipe", "file", "socket", "other"]
    );
    let passable: Vec<bool> = all.iter().map(|k| k.is_passable()).collect();
    assert_eq!(passable, [false, false, true, true, true, true]);
}
