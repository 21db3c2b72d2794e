//! A minimal Socket.IO v5 / Engine.IO v4 client, written for load: the text framing in
//! [`codec`] (`0{..}` open, `2`/`3` ping/pong, `40` connect with auth, `42[..]` events,
//! `43<id>[..]` acks, `44{..}` connect errors), one websocket connection per [`SioClient`] in
//! [`client`]. Both are re-exported here for the rest of the crate; the client imports the
//! codec directly, never through this file.
//!
//! The codec knows no fleetcast event names except the one hot frame it can scan without
//! parsing ([`scan_location`]). It must not panic or allocate without bound on anything the
//! server sends: every decode failure is an error value. Only the default namespace `/` and
//! text packets are supported; binary packets are reported as [`SioPacket::Unsupported`].

mod client;
mod codec;

pub use self::client::{ClientError, Incoming, SioClient, set_source_addresses, socket_url};
pub use self::codec::{AckOutcome, Packet, SioPacket, decode, encode_connect, encode_event, scan_location};
