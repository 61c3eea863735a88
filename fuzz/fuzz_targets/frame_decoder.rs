//! Feeds arbitrary bytes to the frame decoders: the shim protocol's slice decoder the
//! warden uses and blocking reader the shim uses, and the executor channel's decoder the
//! warden and the exec-helper use. None may panic, loop, or allocate more than the input
//! backs; a decoded message must re-encode to the bytes it came from.
#![no_main]

use clawrden_protocol::channel::ChannelFrame;
use clawrden_protocol::{decode_frame, read_message, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode_frame(rest) {
        let mut again = Vec::new();
        if msg.encode(&mut again).is_ok() {
            assert_eq!(Some(msg.clone()), decode_frame(&again).ok().flatten().map(|(m, _)| m));
        }
        rest = &rest[used..];
    }
    let mut r = data;
    while let Ok(Some(_)) = read_message::<&[u8]>(&mut r) {}
    let mut rest = data;
    while let Ok(Some((frame, used))) = ChannelFrame::decode_from(rest) {
        let mut again = Vec::new();
        if frame.encode(&mut again).is_ok() {
            assert_eq!(
                Some(frame.clone()),
                ChannelFrame::decode_from(&again).ok().flatten().map(|(f, _)| f)
            );
        }
        rest = &rest[used..];
    }
    let _ = Message::hello();
});
