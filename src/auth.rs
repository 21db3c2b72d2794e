//! Identity: turns a JWT into [`Claims`] (CONTRACT §1) and checks room tokens. Only the
//! configured algorithm is accepted; `iss`/`aud` are checked when configured. This module
//! knows nothing of transports: the socket and HTTP edges find the token and call
//! [`Verifier::verify`].

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Config, ConfigError, JwtAlgorithm};
use crate::domain::{Role, Tenant, UserId, valid_id};

/// Why a token was refused; the variant names the contract code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or an empty one.
    #[error("NO_TOKEN")]
    NoToken,
    /// Bad signature, malformed, expired, wrong algorithm, missing or bad claim.
    #[error("INVALID_TOKEN")]
    InvalidToken,
}

/// Who is calling, after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`.
    pub user: UserId,
    /// `role`.
    pub role: Role,
    /// `tenant`, `default` when absent.
    pub tenant: Tenant,
    /// `name`, when given.
    pub name: Option<String>,
    /// `channels` grants such as `order:o1`.
    pub channels: Vec<String>,
    /// `exp`, seconds since the epoch: the connection lives no longer (CONTRACT §1 v1.1).
    pub exp: i64,
}

impl Claims {
    /// True when `channels` grants the client-visible room name `room`.
    pub fn grants(&self, room: &str) -> bool {
        self.channels.iter().any(|c| c == room)
    }
}

#[derive(Deserialize)]
struct RawClaims {
    sub: String,
    role: String,
    exp: i64,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawRoomClaims {
    sub: String,
    room: String,
    #[serde(default)]
    tenant: Option<String>,
}

fn key_error(reason: impl Into<String>) -> ConfigError {
    ConfigError { field: "jwt-public-key-file", reason: reason.into() }
}

/// Verifies user and room tokens with the configured key. Cheap to clone.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// Builds the verifier from the config; reads the public key file for RS256/ES256.
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let (alg, key) = match cfg.jwt_algorithm {
            JwtAlgorithm::Hs256 => (Algorithm::HS256, DecodingKey::from_secret(cfg.hs256_secret().as_bytes())),
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                let path = cfg.jwt_public_key_file.as_ref().ok_or_else(|| key_error("required"))?;
                let pem = std::fs::read(path).map_err(|e| key_error(format!("{}: {e}", path.display())))?;
                if cfg.jwt_algorithm == JwtAlgorithm::Rs256 {
                    let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| key_error(e.to_string()))?;
                    (Algorithm::RS256, key)
                } else {
                    let key = DecodingKey::from_ec_pem(&pem).map_err(|e| key_error(e.to_string()))?;
                    (Algorithm::ES256, key)
                }
            }
        };
        let mut validation = Validation::new(alg);
        // Contract: expired tokens are rejected. No grace period beyond the clock itself.
        validation.leeway = 0;
        let mut required = vec!["exp", "sub"];
        match &cfg.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &cfg.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { inner: Arc::new(VerifierInner { key, validation }) })
    }

    /// Verifies a user token (raw or `Bearer …`).
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = strip_bearer(token);
        if token.is_empty() {
            return Err(AuthError::NoToken);
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &self.inner.key, &self.inner.validation)
            .map_err(|_| AuthError::InvalidToken)?;
        let raw = data.claims;
        let role: Role = raw.role.parse().map_err(|_| AuthError::InvalidToken)?;
        if !valid_id(&raw.sub) {
            return Err(AuthError::InvalidToken);
        }
        let tenant = raw.tenant.unwrap_or_else(|| "default".to_string());
        if !valid_id(&tenant) {
            return Err(AuthError::InvalidToken);
        }
        // A grant no room could have (too long, a control character) grants nothing; it does
        // not make the token unusable. More than 1,000 grants is not a token of ours.
        let mut channels = raw.channels.unwrap_or_default();
        if channels.len() > 1_000 {
            return Err(AuthError::InvalidToken);
        }
        channels.retain(|c| crate::limits::room_name(c).is_ok());
        Ok(Claims {
            user: UserId(raw.sub),
            role,
            tenant: Tenant(tenant),
            name: raw.name.filter(|n| n.len() <= 1024),
            channels,
            exp: raw.exp,
        })
    }

    /// True when `token` is a room token signed like user tokens for this user, room and
    /// tenant (CONTRACT §6).
    pub fn room_token_grants(&self, token: &str, claims: &Claims, room: &str) -> bool {
        let Ok(data) =
            jsonwebtoken::decode::<RawRoomClaims>(strip_bearer(token), &self.inner.key, &self.inner.validation)
        else {
            return false;
        };
        let c = data.claims;
        c.sub == claims.user.0 && c.room == room && c.tenant.as_deref().unwrap_or("default") == claims.tenant.0
    }
}

/// Removes a leading `Bearer ` (any case) and surrounding spaces.
pub fn strip_bearer(token: &str) -> &str {
    let t = token.trim();
    if t.eq_ignore_ascii_case("bearer") {
        return "";
    }
    match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim(),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123";

    fn verifier(extra: &[&str]) -> Verifier {
        let mut args = vec!["--jwt-secret", SECRET];
        args.extend_from_slice(extra);
        Verifier::from_config(&Config::from_args(args).expect("cfg")).expect("verifier")
    }

    fn sign(claims: serde_json::Value) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
    }

    fn exp() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    #[test]
    fn valid_token_yields_claims_with_default_tenant() {
        let v = verifier(&[]);
        let c = v.verify(&format!("Bearer {}", sign(json!({"sub":"u1","role":"DRIVER","exp":exp()})))).expect("valid");
        assert_eq!(c.user.0, "u1");
        assert_eq!(c.role, Role::Driver);
        assert_eq!(c.tenant.0, "default");
    }

    #[test]
    fn bad_tokens_are_refused_with_the_contract_codes() {
        let v = verifier(&[]);
        assert_eq!(v.verify(""), Err(AuthError::NoToken));
        assert_eq!(v.verify("Bearer "), Err(AuthError::NoToken));
        assert_eq!(v.verify("garbage"), Err(AuthError::InvalidToken));
        let expired = sign(json!({"sub":"u1","role":"DRIVER","exp":chrono::Utc::now().timestamp() - 5}));
        assert_eq!(v.verify(&expired), Err(AuthError::InvalidToken));
        let unknown_role = sign(json!({"sub":"u1","role":"PILOT","exp":exp()}));
        assert_eq!(v.verify(&unknown_role), Err(AuthError::InvalidToken));
        let no_role = sign(json!({"sub":"u1","exp":exp()}));
        assert_eq!(v.verify(&no_role), Err(AuthError::InvalidToken));
        let other_key = encode(
            &Header::default(),
            &json!({"sub":"u1","role":"DRIVER","exp":exp()}),
            &EncodingKey::from_secret(b"another-secret-of-length"),
        )
        .expect("sign");
        assert_eq!(v.verify(&other_key), Err(AuthError::InvalidToken));
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub":"u1","role":"DRIVER","exp":exp()}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign");
        assert_eq!(v.verify(&hs384), Err(AuthError::InvalidToken));
        // alg: none, hand-made
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&json!({"sub":"u1","role":"DRIVER","exp":exp()}).to_string())
        );
        assert_eq!(v.verify(&none), Err(AuthError::InvalidToken));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let v = verifier(&["--jwt-issuer", "fleet", "--jwt-audience", "apps"]);
        let good = sign(json!({"sub":"u","role":"ADMIN","exp":exp(),"iss":"fleet","aud":"apps"}));
        assert!(v.verify(&good).is_ok());
        let bad_iss = sign(json!({"sub":"u","role":"ADMIN","exp":exp(),"iss":"other","aud":"apps"}));
        assert_eq!(v.verify(&bad_iss), Err(AuthError::InvalidToken));
        let no_aud = sign(json!({"sub":"u","role":"ADMIN","exp":exp(),"iss":"fleet"}));
        assert_eq!(v.verify(&no_aud), Err(AuthError::InvalidToken));
        // Without configuration an `aud` claim is simply not checked.
        let v = verifier(&[]);
        assert!(v.verify(&sign(json!({"sub":"u","role":"ADMIN","exp":exp(),"aud":"x"}))).is_ok());
    }

    #[test]
    fn room_tokens_must_match_user_room_and_tenant() {
        let v = verifier(&[]);
        let c = v.verify(&sign(json!({"sub":"u1","role":"PASSENGER","exp":exp(),"tenant":"t1"}))).expect("ok");
        let t = sign(json!({"sub":"u1","room":"chat:c1","exp":exp(),"tenant":"t1"}));
        assert!(v.room_token_grants(&t, &c, "chat:c1"));
        assert!(!v.room_token_grants(&t, &c, "chat:c2"));
        let other_tenant = sign(json!({"sub":"u1","room":"chat:c1","exp":exp()}));
        assert!(!v.room_token_grants(&other_tenant, &c, "chat:c1"));
    }

    fn base64_url(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
            let chars = chunk.len() + 1;
            for i in 0..chars {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

/// What a booking's ticket token (its QR code) carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Ticket {
    /// Token type, always `ticket` (a user token is never a ticket).
    pub typ: String,
    /// Booking id.
    pub bid: String,
    /// Trip id.
    pub tid: String,
    /// Tenant of the booking.
    pub tenant: String,
    /// Issued at (seconds).
    pub iat: i64,
}

/// Signs and checks ticket tokens: HS256 with the ticket secret, no expiry (a ticket is
/// valid for as long as its booking; boarding is once only).
#[derive(Clone)]
pub struct Tickets {
    inner: Arc<(jsonwebtoken::EncodingKey, DecodingKey, Validation)>,
}

impl Tickets {
    /// Tickets signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.validate_aud = false;
        v.set_required_spec_claims::<&str>(&[]);
        let enc = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
        Self { inner: Arc::new((enc, DecodingKey::from_secret(secret.as_bytes()), v)) }
    }

    /// The ticket token of a booking.
    pub fn sign(&self, tenant: &Tenant, booking: &str, trip: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let t = Ticket {
            typ: "ticket".into(),
            bid: booking.into(),
            tid: trip.into(),
            tenant: tenant.0.clone(),
            iat: chrono::Utc::now().timestamp(),
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &t, &self.inner.0)
    }

    /// The ticket, if `token` is one signed with the ticket secret.
    pub fn verify(&self, token: &str) -> Option<Ticket> {
        let t = jsonwebtoken::decode::<Ticket>(token.trim(), &self.inner.1, &self.inner.2).ok()?.claims;
        (t.typ == "ticket" && valid_id(&t.bid) && valid_id(&t.tenant)).then_some(t)
    }
}

#[cfg(test)]
mod ticket_tests {
    use super::*;

    #[test]
    fn tickets_verify_only_with_their_secret() {
        let tickets = Tickets::new("ticket-secret-0123456789");
        let token = tickets.sign(&Tenant("t1".into()), "b1", "trip1").expect("sign");
        let t = tickets.verify(&token).expect("valid");
        assert_eq!((t.bid.as_str(), t.tid.as_str(), t.tenant.as_str()), ("b1", "trip1", "t1"));
        assert!(Tickets::new("another-secret-0123456789").verify(&token).is_none());
        assert!(tickets.verify("garbage").is_none());
        let mut forged = token.clone();
        forged.pop();
        assert!(tickets.verify(&forged).is_none());
    }
}
