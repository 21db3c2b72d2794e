//! `encode` then `decode` of any frame a node can build: an event name and an except field
//! without newlines (event names are constants; except fields are socket ids or
//! `frame::except_rooms` of room keys, whose tenants and names pass `valid_id` and
//! `limits::room_name`), flags made of the defined bits. The decoded frame is the one encoded,
//! and an except list of rooms splits back into the same rooms.
#![no_main]

use arbitrary::Arbitrary;
use fleetcast::domain::{RoomKey, Tenant, valid_id};
use fleetcast::engine::frame::{self, CONTROL, EXCEPT_ROOM, VOLATILE, decode, encode};
use fleetcast::limits::room_name;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    event: String,
    flags: u8,
    except: Option<String>,
    json: String,
    tenant: String,
    rooms: Vec<String>,
}

fuzz_target!(|i: Input| {
    let flags = i.flags & (VOLATILE | EXCEPT_ROOM | CONTROL);
    if !i.event.contains('\n') && !i.except.as_deref().is_some_and(|e| e.contains('\n')) {
        let s = encode(&i.event, flags, i.except.as_deref(), &i.json);
        let f = decode(&s).expect("an encoded frame decodes");
        assert_eq!(f.event, i.event);
        assert_eq!(f.flags, flags);
        assert_eq!(f.except, i.except.as_deref().filter(|e| !e.is_empty()));
        assert_eq!(f.json, i.json);
    }
    // Rooms built from validated names never break the frame.
    if !valid_id(&i.tenant) {
        return;
    }
    let tenant = Tenant(i.tenant);
    let keys: Vec<RoomKey> =
        i.rooms.iter().filter(|r| room_name(r).is_ok()).map(|r| RoomKey::named(&tenant, r)).collect();
    if keys.is_empty() {
        return;
    }
    let refs: Vec<&RoomKey> = keys.iter().collect();
    let except = frame::except_rooms(&refs);
    let s = encode("server:location:update", VOLATILE | EXCEPT_ROOM, Some(&except), &i.json);
    let f = decode(&s).expect("a frame with an except list decodes");
    assert_eq!(f.json, i.json);
    let back: Vec<&str> = f.except.expect("an except list").split('\u{1e}').collect();
    assert_eq!(back, keys.iter().map(|k| k.as_str()).collect::<Vec<_>>());
    for (k, b) in keys.iter().zip(back) {
        let parsed = RoomKey::parse(b).expect("a room key parses back");
        assert_eq!(parsed.tenant(), tenant.0);
        assert_eq!(parsed.name(), k.name());
    }
});
