//! `fleetcast::engine::frame::decode` on arbitrary text (what a node reads from a room
//! channel): never panics; a decoded frame's parts come from the text, its event and except
//! fields hold no newline; re-encoding it decodes to the same frame whenever its flags fit the
//! one ASCII byte `encode` writes (flags < 80: see the report in faults/fuzz-results.md).
#![no_main]

use fleetcast::engine::frame::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Some(f) = decode(&text) else { return };
    assert!(!f.event.contains('\n'), "event with a newline: {f:?}");
    if let Some(e) = f.except {
        assert!(!e.is_empty() && !e.contains('\n'), "bad except field: {f:?}");
    }
    assert!(text.ends_with(f.json), "payload is not the text's tail: {f:?}");
    if f.flags < 80 {
        let again = encode(f.event, f.flags, f.except, f.json);
        assert_eq!(decode(&again), Some(f), "re-encoded frame {again:?}");
    }
});
