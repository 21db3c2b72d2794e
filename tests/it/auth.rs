//! CONTRACT §1: who may connect, and the exact `connect_error` messages.

use serde_json::json;

use crate::both_modes;
use crate::common::*;

fn ws<'a>(url: &'a str, auth: Option<serde_json::Value>) -> Connect<'a> {
    Connect { url, auth, header: None, polling: false }
}

async fn missing_or_empty_token_is_refused_with_no_token(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let url = h.a();
    assert_eq!(Client::try_connect(ws(&url, None)).await.err().as_deref(), Some("NO_TOKEN"));
    assert_eq!(Client::try_connect(ws(&url, Some(json!({})))).await.err().as_deref(), Some("NO_TOKEN"));
    assert_eq!(Client::try_connect(ws(&url, Some(json!({"token": ""})))).await.err().as_deref(), Some("NO_TOKEN"));
    h.stop().await;
}

async fn bad_tokens_are_refused_with_invalid_token(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let url = h.a();
    let expired = sign(json!({"sub": "u1", "role": "DRIVER", "exp": chrono::Utc::now().timestamp() - 10}));
    let unknown_role = sign(json!({"sub": "u1", "role": "PILOT"}));
    let no_sub = sign(json!({"role": "DRIVER"}));
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "u1", "role": "DRIVER", "exp": chrono::Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-entirely"),
    )
    .expect("sign");
    for bad in ["garbage", "a.b.c", &expired, &unknown_role, &no_sub, &other_key] {
        let r = Client::try_connect(ws(&url, Some(json!({"token": bad})))).await;
        assert_eq!(r.err().as_deref(), Some("INVALID_TOKEN"), "token {bad}");
    }
    let r = Client::try_connect(ws(&url, Some(json!({"token": 42})))).await;
    assert_eq!(r.err().as_deref(), Some("INVALID_TOKEN"));
    h.stop().await;
}

async fn bearer_tokens_and_the_authorization_header_are_accepted(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let url = h.a();
    let t = token("u1", "PASSENGER");
    let c = Client::try_connect(ws(&url, Some(json!({"token": format!("Bearer {t}")})))).await.expect("bearer auth");
    assert_ok(&c.ack("heartbeat", json!({})).await);
    c.close().await;
    let c = Client::try_connect(Connect { url: &url, auth: None, header: Some(format!("Bearer {t}")), polling: false })
        .await
        .expect("header auth");
    assert_ok(&c.ack("heartbeat", json!({})).await);
    c.close().await;
    h.stop().await;
}

async fn connection_flood_from_one_address_is_rate_limited(mode: Mode) {
    let h = Harness::start(mode, &["--conn-rate-per-sec", "1", "--conn-rate-burst", "3"]).await;
    let url = h.a();
    let mut refused = 0;
    let mut kept = Vec::new();
    for i in 0..6 {
        match Client::try_connect(ws(&url, Some(json!({"token": token(&format!("f{i}"), "PASSENGER")})))).await {
            Ok(c) => kept.push(c),
            Err(e) => {
                assert_eq!(e, "RATE_LIMITED");
                refused += 1;
            }
        }
    }
    assert!(refused >= 2, "expected the burst of 3 to be exceeded, refused {refused}");
    for c in kept {
        c.close().await;
    }
    h.stop().await;
}

async fn a_user_holds_at_most_the_configured_connections_across_nodes(mode: Mode) {
    let h = Harness::start(mode, &["--max-connections-per-user", "2"]).await;
    let t = token("cap-user", "PASSENGER");
    let c1 = Client::connect(&h.a(), &t).await;
    let c2 = Client::connect(&h.b(), &t).await;
    let r = Client::try_connect(ws(&h.a(), Some(json!({"token": t.clone()})))).await;
    assert_eq!(r.err().as_deref(), Some("RATE_LIMITED"));
    // Another user is not affected.
    let other = Client::connect(&h.b(), &token("someone-else", "PASSENGER")).await;
    c1.close().await;
    // The freed slot is reusable once the disconnect is processed.
    let mut c3 = None;
    for _ in 0..50 {
        if let Ok(c) = Client::try_connect(ws(&h.b(), Some(json!({"token": t.clone()})))).await {
            c3 = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let c3 = c3.expect("slot freed by disconnect within 5 s");
    for c in [c2, c3, other] {
        c.close().await;
    }
    h.stop().await;
}

/// CONTRACT §1 (v1.1): a connection lives no longer than its token. A socket that does not
/// refresh gets `server:auth:expired` at `exp` plus the grace and is disconnected; one that
/// refreshes (same `sub`, `tenant`, `role`) stays; an SSE stream ends at the same time.
async fn a_connection_lives_no_longer_than_its_token(mode: Mode) {
    let h = Harness::start(mode, &["--auth-expiry-grace-ms", "1000"]).await;
    let tenant = unique("tn");
    let exp = chrono::Utc::now().timestamp() + 3;
    let short = |sub: &str, role: &str| sign(json!({"sub": sub, "role": role, "tenant": tenant, "exp": exp}));
    let mut leaving = Client::connect(&h.a(), &short("u1", "PASSENGER")).await;
    let staying = Client::connect(&h.b(), &short("u2", "PASSENGER")).await;
    // Refreshing needs a valid token of the same user, tenant and role.
    let other_user = sign(json!({"sub": "u9", "role": "PASSENGER", "tenant": tenant}));
    let other_role = sign(json!({"sub": "u2", "role": "DRIVER", "tenant": tenant}));
    let other_tenant = sign(json!({"sub": "u2", "role": "PASSENGER"}));
    for bad in [other_user, other_role, other_tenant, "garbage".to_string()] {
        assert_err(&staying.ack("auth:refresh", json!({ "token": bad })).await, "INVALID_TOKEN");
    }
    assert_err(&staying.ack("auth:refresh", json!({})).await, "INVALID_PAYLOAD");
    let later = chrono::Utc::now().timestamp() + 600;
    let fresh = sign(json!({"sub": "u2", "role": "PASSENGER", "tenant": tenant, "exp": later}));
    let ack = staying.ack("auth:refresh", json!({ "token": fresh })).await;
    assert_ok(&ack);
    assert_eq!(ack["exp"], json!(later));
    // An SSE stream with the short token, on the other node.
    let stream = reqwest::Client::new()
        .get(format!("{}/api/v1/realtime/orders/o1/stream", h.b()))
        .bearer_auth(sign(json!({"sub": "u3", "role": "BUSINESS", "tenant": tenant, "exp": exp})))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    let ended = tokio::spawn(async move {
        let mut stream = stream;
        while let Ok(Some(_)) = stream.chunk().await {}
        std::time::Instant::now()
    });
    // Past exp + grace (+ the once-a-second sweep): the unrefreshed socket is told and closed.
    let told = leaving.next("server:auth:expired", std::time::Duration::from_secs(8)).await;
    assert_eq!(told, Some(json!({})), "server:auth:expired {{}}");
    let deadline = std::time::Duration::from_secs(10);
    tokio::time::timeout(deadline, ended).await.expect("the SSE stream ended").expect("reader");
    assert!(chrono::Utc::now().timestamp() > exp, "not before exp + grace");
    // The refreshed socket still works; the cluster counts it alone.
    assert_ok(&staying.ack("heartbeat", json!({})).await);
    let admin = sign(json!({"sub": "adm", "role": "ADMIN", "tenant": tenant}));
    let mut connections = None;
    for _ in 0..50 {
        let stats: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/admin/stats", h.a()))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        connections = stats["cluster"]["connections"].as_u64();
        if connections == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(connections, Some(1), "only the refreshed socket is left");
    staying.close().await;
    leaving.close().await;
    h.stop().await;
}

/// A `channels` grant no room could have does not make the token unusable: it grants
/// nothing (issue 13's defect: such a token was refused with `INVALID_TOKEN`).
async fn an_unusable_grant_grants_nothing(mode: Mode) {
    let h = Harness::start(mode, &[]).await;
    let long = "r".repeat(300);
    let c =
        Client::connect(&h.a(), &sign(json!({"sub": "u1", "role": "PASSENGER", "channels": [long, "chat:c1"]}))).await;
    assert_err(&c.ack("room:join", json!({ "room": long })).await, "INVALID_PAYLOAD");
    assert_ok(&c.ack("room:join", json!({ "room": "chat:c1" })).await);
    c.close().await;
    h.stop().await;
}

both_modes!(
    a_connection_lives_no_longer_than_its_token,
    an_unusable_grant_grants_nothing,
    missing_or_empty_token_is_refused_with_no_token,
    bad_tokens_are_refused_with_invalid_token,
    bearer_tokens_and_the_authorization_header_are_accepted,
    connection_flood_from_one_address_is_rate_limited,
    a_user_holds_at_most_the_configured_connections_across_nodes,
);

/// RS256 and ES256: only the configured algorithm with the configured public key passes.
async fn asymmetric_algorithms_use_the_configured_public_key(alg: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let lower = alg.to_lowercase();
    let public = dir.join(format!("{lower}-public.pem"));
    let private = std::fs::read(dir.join(format!("{lower}-private.pem"))).expect("fixture key");
    let h = Harness::start(
        Mode::Embedded,
        &[
            "--jwt-algorithm",
            alg,
            "--jwt-public-key-file",
            public.to_str().expect("utf-8 path"),
            "--ticket-secret",
            "ticket-secret-of-the-test",
        ],
    )
    .await;
    let (algorithm, key) = if alg == "RS256" {
        (jsonwebtoken::Algorithm::RS256, jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("rsa"))
    } else {
        (jsonwebtoken::Algorithm::ES256, jsonwebtoken::EncodingKey::from_ec_pem(&private).expect("ec"))
    };
    let claims = json!({"sub": "u1", "role": "PASSENGER", "exp": chrono::Utc::now().timestamp() + 600});
    let good = jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, &key).expect("sign");
    let url = h.a();
    let c = Client::try_connect(ws(&url, Some(json!({"token": good})))).await.expect("signed with the key pair");
    assert_ok(&c.ack("heartbeat", json!({})).await);
    c.close().await;
    // An HS256 token (algorithm swap) is refused even if signed with the public key bytes.
    let public_bytes = std::fs::read(&public).expect("public key");
    let swapped = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_bytes),
    )
    .expect("sign");
    let r = Client::try_connect(ws(&url, Some(json!({"token": swapped})))).await;
    assert_eq!(r.err().as_deref(), Some("INVALID_TOKEN"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_are_verified_with_the_configured_public_key() {
    asymmetric_algorithms_use_the_configured_public_key("RS256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_verified_with_the_configured_public_key() {
    asymmetric_algorithms_use_the_configured_public_key("ES256").await;
}
