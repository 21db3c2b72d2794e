//! `auth::Verifier` (HS256) on arbitrary tokens — the connect payload's `auth.token`, a room
//! token of `room:join`, an `auth:refresh` token: raw text, or a header and claims of the
//! fuzzer's choosing signed with the node's secret (so that the claim checks are reached).
//! Never panics; an accepted token has a valid `sub` and `tenant`, a known role, at most
//! 1,000 grants that are all usable room names, and a `name` of at most 1 KiB.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fleetcast::auth::{Claims, Verifier};
use fleetcast::config::Config;
use fleetcast::domain::{Role, Tenant, UserId, valid_id};
use fleetcast::limits::room_name;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fleetcast-fuzz-secret-0123456789";

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let cfg = Config::from_args(["--jwt-secret", SECRET]).expect("config");
    Verifier::from_config(&cfg).expect("verifier")
});

fn signed(header: &[u8], claims: &[u8]) -> String {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let token = match mode % 4 {
        // Raw text, as a client sends it.
        0 => String::from_utf8_lossy(rest).into_owned(),
        // The fuzzer's claims under a valid HS256 header.
        1 => signed(br#"{"alg":"HS256","typ":"JWT"}"#, rest),
        // The fuzzer's header and claims (split at the first 0xff).
        2 => {
            let cut = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
            signed(&rest[..cut], rest.get(cut + 1..).unwrap_or_default())
        }
        // Claims around a fixed valid set, with a `Bearer` prefix.
        _ => {
            let extra = String::from_utf8_lossy(rest);
            let claims = format!(r#"{{"sub":"u1","role":"DRIVER","exp":4102444800,{extra}"#);
            format!("Bearer {}", signed(br#"{"alg":"HS256","typ":"JWT"}"#, claims.as_bytes()))
        }
    };
    let v = &*VERIFIER;
    if let Ok(c) = v.verify(&token) {
        assert!(valid_id(&c.user.0) && valid_id(&c.tenant.0), "{c:?}");
        assert!(c.channels.len() <= 1000 && c.channels.iter().all(|g| room_name(g).is_ok()), "{c:?}");
        assert!(c.name.as_ref().is_none_or(|n| n.len() <= 1024));
        let _ = c.grants("chat:c1");
        if mode % 4 == 1 || mode % 4 == 2 {
            assert!(v.verify(&format!("  bearer {token}  ")).is_ok(), "a Bearer prefix and spaces are accepted");
        }
    }
    let me = Claims {
        user: UserId("u1".into()),
        role: Role::Driver,
        tenant: Tenant("default".into()),
        name: None,
        channels: Vec::new(),
        exp: 4102444800,
    };
    let _ = v.room_token_grants(&token, &me, "chat:c1");
});
