use super::*;

fn termios() -> Termios {
    Termios {
        iflag: 0x500,
        oflag: 0x5,
        cflag: 0xbf,
        lflag: 0x8a3b,
        cc: (0..32).collect(),
    }
}

fn size() -> WinSize {
    WinSize {
        rows: 37,
        cols: 91,
        xpixel: 640,
        ypixel: 480,
    }
}

fn roundtrip(frame: ChannelFrame) {
    let mut buf = Vec::new();
    frame.encode(&mut buf).unwrap();
    let (back, used) = ChannelFrame::decode_from(&buf).unwrap().unwrap();
    assert_eq!(used, buf.len());
    assert_eq!(back, frame);
    for cut in 0..buf.len() {
        assert!(
            ChannelFrame::decode_from(&buf[..cut]).unwrap().is_none(),
            "prefix {cut}"
        );
    }
}

fn every_message() -> Vec<ChannelMsg> {
    vec![
        ChannelMsg::Start(Start {
            stdio: [StdioPlan::Terminal, StdioPlan::Pipe, StdioPlan::Terminal],
            terminal: Some((termios(), size())),
        }),
        ChannelMsg::Start(Start {
            stdio: [StdioPlan::Null, StdioPlan::Pipe, StdioPlan::Pipe],
            terminal: None,
        }),
        ChannelMsg::Stdin(vec![0, 1, 2, 255]),
        ChannelMsg::Stdin(Vec::new()),
        ChannelMsg::StdinEof,
        ChannelMsg::Signal(2),
        ChannelMsg::Resize(size()),
        ChannelMsg::Kill,
        ChannelMsg::Started {
            pid: 4242,
            program: b"/usr/lib/clawrden/originals/usr/bin/\xffcat".to_vec(),
        },
        ChannelMsg::Stdout(vec![7; MAX_IO_PAYLOAD as usize]),
        ChannelMsg::Stderr(b"err".to_vec()),
        ChannelMsg::TtyOut(b"\x1b[31mred\r\n".to_vec()),
        ChannelMsg::Termios(termios()),
        ChannelMsg::StdinWindow(65536),
        ChannelMsg::Exit(255),
        ChannelMsg::Signaled(9),
        ChannelMsg::Failed(Failure {
            not_found: true,
            message: "cannot execute /usr/bin/x: No such file or directory".into(),
        }),
    ]
}

#[test]
fn every_channel_message_roundtrips_with_its_call_id() {
    for (i, msg) in every_message().into_iter().enumerate() {
        roundtrip(ChannelFrame {
            call: i as u32 * 7919,
            msg,
        });
    }
    roundtrip(ChannelFrame::single(ChannelMsg::Kill));
}

#[test]
fn channel_and_shim_frame_kinds_do_not_overlap() {
    for b in 0..=255u8 {
        assert!(
            !(ChannelKind::from_u8(b).is_some() && crate::Kind::from_u8(b).is_some()),
            "kind 0x{b:02x} is in both protocols"
        );
    }
    // A shim frame fed to the channel decoder is refused from its first byte.
    let mut shim = Vec::new();
    crate::Message::Exit(0).encode(&mut shim).unwrap();
    assert_eq!(
        ChannelFrame::decode_from(&shim),
        Err(ChannelError::UnknownKind(0x30))
    );
}

#[test]
fn oversized_and_malformed_channel_frames_are_refused() {
    // An I/O frame claiming 4 GiB is refused from the header alone.
    let raw = [ChannelKind::Stdout as u8, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        ChannelFrame::decode_from(&raw),
        Err(ChannelError::TooLarge { len: u32::MAX, .. })
    ));
    // The largest I/O frame fits; one byte more does not encode.
    let mut buf = Vec::new();
    ChannelFrame::single(ChannelMsg::Stdout(vec![0; MAX_IO_PAYLOAD as usize]))
        .encode(&mut buf)
        .unwrap();
    let err = ChannelFrame::single(ChannelMsg::Stdout(vec![0; MAX_IO_PAYLOAD as usize + 1]))
        .encode(&mut buf)
        .unwrap_err();
    assert!(matches!(err, ChannelError::TooLarge { .. }));
    // A frame without its call id.
    assert!(matches!(
        ChannelFrame::decode_from(&[ChannelKind::Kill as u8, 0, 0, 0, 2, 0, 1]),
        Err(ChannelError::Decode(DecodeError::Short(_)))
    ));
    // Trailing bytes after a fixed-size body.
    assert!(matches!(
        ChannelFrame::decode_from(&[ChannelKind::Kill as u8, 0, 0, 0, 5, 0, 0, 0, 1, 9]),
        Err(ChannelError::Decode(DecodeError::Trailing(1)))
    ));
    // A Start whose plans name a terminal but that carries none.
    let mut p = vec![ChannelKind::Start as u8, 0, 0, 0, 8, 0, 0, 0, 1, 2, 1, 1, 0];
    assert!(ChannelFrame::decode_from(&p).is_err());
    // ... and an unknown plan.
    p[9] = 3;
    assert!(ChannelFrame::decode_from(&p).is_err());
    // Termios with more than NCCS control characters.
    let mut t = Vec::new();
    let mut e = Encoder::new(&mut t);
    e.u32(1);
    for _ in 0..4 {
        e.u32(0);
    }
    e.bytes(&[0; 33]);
    let mut frame = vec![ChannelKind::Termios as u8];
    frame.extend_from_slice(&(t.len() as u32).to_be_bytes());
    frame.extend_from_slice(&t);
    assert!(matches!(
        ChannelFrame::decode_from(&frame),
        Err(ChannelError::Decode(DecodeError::BadValue(_)))
    ));
}

#[test]
fn write_io_splits_and_carries_the_call_id() {
    let data = vec![3u8; MAX_IO_PAYLOAD as usize * 2 + 1];
    let mut out = Vec::new();
    write_io(&mut out, ChannelKind::TtyOut, 42, &data);
    let mut rest = &out[..];
    let mut got = Vec::new();
    let mut frames = 0;
    while let Some((f, used)) = ChannelFrame::decode_from(rest).unwrap() {
        assert_eq!(f.call, 42);
        match f.msg {
            ChannelMsg::TtyOut(b) => got.extend(b),
            other => panic!("{other:?}"),
        }
        rest = &rest[used..];
        frames += 1;
    }
    assert!(rest.is_empty());
    assert_eq!(frames, 3);
    assert_eq!(got, data);
    let mut none = Vec::new();
    write_io(&mut none, ChannelKind::Stdin, 1, &[]);
    assert!(none.is_empty());
}

/// Deterministic fuzz slice of the channel decoder: mutated valid frames and random bytes
/// never panic, and whatever decodes re-encodes to an identical frame.
#[test]
fn channel_decoder_survives_mutated_and_random_input() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds: Vec<Vec<u8>> = every_message()
        .into_iter()
        .map(|m| {
            let mut b = Vec::new();
            ChannelFrame::single(m).encode(&mut b).unwrap();
            b
        })
        .collect();
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
        if let Ok(Some((frame, _))) = ChannelFrame::decode_from(&buf) {
            let mut again = Vec::new();
            frame.encode(&mut again).unwrap();
            assert_eq!(ChannelFrame::decode_from(&again).unwrap().unwrap().0, frame);
        }
    }
}
