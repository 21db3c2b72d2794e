//! Mints the HS256 JWTs that load clients connect with (contract §1).
//!
//! Owns the claim shape `{sub, role, exp, tenant?}` and the signing key; it never reads
//! keys from files and never verifies anything (the server under test does that).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

/// The roles the load scenarios act as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Passenger,
    Driver,
    Admin,
    Business,
    Service,
}

impl Role {
    /// The claim value, spelled as the contract spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passenger => "PASSENGER",
            Self::Driver => "DRIVER",
            Self::Admin => "ADMIN",
            Self::Business => "BUSINESS",
            Self::Service => "SERVICE",
        }
    }
}

#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'static str,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    /// Extra grants such as `order:o1` (contract §1), absent when empty.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
}

/// Signs tokens for one run: same secret, tenant and expiry for every user.
pub struct TokenMinter {
    key: EncodingKey,
    header: Header,
    tenant: Option<String>,
    exp: u64,
}

impl TokenMinter {
    /// `valid_for_secs` must cover the whole run: the server may re-check expiry on reconnect.
    pub fn new(secret: &str, tenant: Option<String>, valid_for_secs: u64) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::default(), // HS256
            tenant,
            exp: now.saturating_add(valid_for_secs),
        }
    }

    /// A signed token for user `sub` acting as `role`.
    pub fn mint(&self, sub: &str, role: Role) -> anyhow::Result<String> {
        self.mint_with_channels(sub, role, &[])
    }

    /// A signed token for user `sub` acting as `role` with the extra `channels` grants.
    pub fn mint_with_channels(&self, sub: &str, role: Role, channels: &[String]) -> anyhow::Result<String> {
        let claims = Claims { sub, role: role.as_str(), exp: self.exp, tenant: self.tenant.as_deref(), channels };
        jsonwebtoken::encode(&self.header, &claims, &self.key).context("signing a token")
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    use serde_json::Value;

    use super::*;

    #[test]
    fn minted_token_verifies_with_the_secret_and_carries_the_claims() {
        let minter = TokenMinter::new("s3cret", Some("acme".to_owned()), 3600);
        let token = minter.mint("ltd-1-0", Role::Driver).expect("mint");
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .expect("verify");
        assert_eq!(data.header.alg, Algorithm::HS256);
        assert_eq!(data.claims["sub"], "ltd-1-0");
        assert_eq!(data.claims["role"], "DRIVER");
        assert_eq!(data.claims["tenant"], "acme");
        assert!(data.claims["exp"].as_u64().is_some());
    }

    #[test]
    fn tenant_claim_is_absent_when_not_given() {
        let minter = TokenMinter::new("s", None, 60);
        let token = minter.mint("u", Role::Admin).expect("mint");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(b"s"), &validation).expect("verify");
        assert!(data.claims.get("tenant").is_none());
        assert!(data.claims.get("channels").is_none());
        assert_eq!(data.claims["role"], "ADMIN");
    }

    #[test]
    fn channels_claim_carries_the_grants() {
        let minter = TokenMinter::new("s", None, 60);
        let token = minter.mint_with_channels("u", Role::Passenger, &["order:o1".to_owned()]).expect("mint");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(b"s"), &validation).expect("verify");
        assert_eq!(data.claims["channels"], serde_json::json!(["order:o1"]));
        assert_eq!(data.claims["role"], "PASSENGER");
    }
}
