//! Issuing user tokens (CONTRACT §1 claims): what `fleetcast token` prints for scripts and
//! curl, and what the embedded node's development sign-in (`POST /api/dev/token`) hands a
//! browser. Signs with the configured HS256 secret, or with a private key file for
//! RS256/ES256 — the counterpart of [`crate::auth::Verifier`], which checks them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::config::{Config, DEV_JWT_SECRET, JwtAlgorithm};
use crate::domain::{Role, valid_id};

/// Longest lifetime a development sign-in may ask for.
pub const DEV_TOKEN_MAX_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a token says about its holder.
#[derive(Debug, Clone, Serialize)]
pub struct TokenClaims {
    /// `sub`.
    pub sub: String,
    /// `role`, one of the contract's roles.
    pub role: String,
    /// `exp`, seconds since the epoch.
    pub exp: i64,
    /// `tenant`, omitted for `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `channels` grants.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// `iss`, when the node checks one (set by the [`Signer`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// `aud`, when the node checks one (set by the [`Signer`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// A claim the contract would refuse.
    #[error("{0}")]
    Claim(String),
    /// The signing key could not be read or used.
    #[error("signing key: {0}")]
    Key(String),
}

impl TokenClaims {
    /// Claims for `sub` with `role`, valid for `ttl` from now; checked as the verifier
    /// would check them (an id of 1–128 characters, a known role, a valid tenant).
    pub fn new(sub: &str, role: &str, ttl: Duration) -> Result<Self, MintError> {
        if !valid_id(sub) {
            return Err(MintError::Claim("sub must be 1-128 characters".into()));
        }
        let role: Role = role.parse().map_err(|_| MintError::Claim(format!("unknown role {role:?}")))?;
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2).max(1);
        Ok(Self {
            sub: sub.to_string(),
            role: role.as_str().to_string(),
            exp: chrono::Utc::now().timestamp().saturating_add(ttl),
            tenant: None,
            name: None,
            channels: Vec::new(),
            iss: None,
            aud: None,
        })
    }

    /// Sets the tenant (`default` is left out, as the verifier assumes it).
    pub fn tenant(mut self, tenant: Option<&str>) -> Result<Self, MintError> {
        match tenant {
            None | Some("default") => self.tenant = None,
            Some(t) if valid_id(t) => self.tenant = Some(t.to_string()),
            Some(_) => return Err(MintError::Claim("tenant must be 1-128 characters".into())),
        }
        Ok(self)
    }

    /// Sets the display name (at most 200 characters).
    pub fn name(mut self, name: Option<&str>) -> Result<Self, MintError> {
        match name {
            Some(n) if n.chars().count() > 200 => return Err(MintError::Claim("name over 200 characters".into())),
            Some(n) if !n.is_empty() => self.name = Some(n.to_string()),
            _ => self.name = None,
        }
        Ok(self)
    }
}

/// A signing key and its algorithm.
pub struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    iss: Option<String>,
    aud: Option<String>,
}

impl Signer {
    /// A signer for `alg`: HS256 with `secret` (the development secret when `None`),
    /// RS256/ES256 with the PEM file `private_key`.
    pub fn new(alg: JwtAlgorithm, secret: Option<&str>, private_key: Option<&Path>) -> Result<Self, MintError> {
        let (alg, key) = match alg {
            JwtAlgorithm::Hs256 => {
                (Algorithm::HS256, EncodingKey::from_secret(secret.unwrap_or(DEV_JWT_SECRET).as_bytes()))
            }
            alg => {
                let path = private_key
                    .ok_or_else(|| MintError::Key("--private-key-file is required for RS256/ES256".into()))?;
                let pem = std::fs::read(path).map_err(|e| MintError::Key(format!("{}: {e}", path.display())))?;
                if alg == JwtAlgorithm::Rs256 {
                    (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).map_err(|e| MintError::Key(e.to_string()))?)
                } else {
                    (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).map_err(|e| MintError::Key(e.to_string()))?)
                }
            }
        };
        Ok(Self { alg, key, iss: None, aud: None })
    }

    /// The development signer: only for an embedded node that verifies with the public
    /// development secret (no secret of its own, HS256), else `None`.
    pub fn development(cfg: &Config) -> Option<Self> {
        let dev = !cfg.is_cluster()
            && cfg.jwt_algorithm == JwtAlgorithm::Hs256
            && cfg.jwt_secret.as_deref().is_none_or(|s| s == DEV_JWT_SECRET);
        dev.then(|| {
            let hs256 = Self {
                alg: Algorithm::HS256,
                key: EncodingKey::from_secret(DEV_JWT_SECRET.as_bytes()),
                iss: None,
                aud: None,
            };
            hs256.checked_as(cfg.jwt_issuer.clone(), cfg.jwt_audience.clone())
        })
    }

    /// Adds the `iss`/`aud` claims the verifying node checks, if it checks them.
    pub fn checked_as(mut self, iss: Option<String>, aud: Option<String>) -> Self {
        self.iss = iss;
        self.aud = aud;
        self
    }

    /// The signed token (the node's `iss`/`aud` added when it checks them).
    pub fn sign(&self, claims: TokenClaims) -> Result<String, MintError> {
        let claims = TokenClaims { iss: self.iss.clone(), aud: self.aud.clone(), ..claims };
        jsonwebtoken::encode(&Header::new(self.alg), &claims, &self.key).map_err(|e| MintError::Key(e.to_string()))
    }
}

/// `fleetcast token`: prints a token for scripts and curl (what `centrifugo gentoken`
/// does). The key comes from the node's own settings (`FLEETCAST_JWT_SECRET`, …).
#[derive(Debug, clap::Args)]
pub struct TokenCommand {
    /// `sub`: the user id.
    #[arg(long)]
    pub sub: String,
    /// `role`: PASSENGER, DRIVER, CONDUCTOR, ADMIN, BUSINESS or SERVICE.
    #[arg(long)]
    pub role: String,
    /// `name`: the display name.
    #[arg(long)]
    pub name: Option<String>,
    /// `tenant` (default: `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// A `channels` grant such as `order:o1` (repeatable).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Lifetime: `90s`, `15m`, `1h`, `2d`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Signing algorithm (as the node's `--jwt-algorithm`).
    #[arg(long, env = "FLEETCAST_JWT_ALGORITHM", value_enum, default_value = "HS256")]
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 secret (as the node's); without one, the public development secret of an
    /// embedded node.
    #[arg(long, env = "FLEETCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM private key for RS256/ES256 (the node holds only the public key).
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
    /// `iss` claim (as the node's `--jwt-issuer`).
    #[arg(long, env = "FLEETCAST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` claim (as the node's `--jwt-audience`).
    #[arg(long, env = "FLEETCAST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl TokenCommand {
    /// The signed token.
    pub fn run(&self) -> Result<String, MintError> {
        let signer = Signer::new(self.jwt_algorithm, self.jwt_secret.as_deref(), self.private_key_file.as_deref())?
            .checked_as(self.jwt_issuer.clone(), self.jwt_audience.clone());
        let mut claims = TokenClaims::new(&self.sub, &self.role, parse_ttl(&self.ttl)?)?
            .tenant(self.tenant.as_deref())?
            .name(self.name.as_deref())?;
        if let Some(bad) = self.channels.iter().find(|c| c.is_empty() || c.chars().count() > 200) {
            return Err(MintError::Claim(format!("channel {bad:?} must be 1-200 characters")));
        }
        claims.channels.clone_from(&self.channels);
        signer.sign(claims)
    }
}

/// Parses a lifetime such as `90s`, `15m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<Duration, MintError> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| MintError::Claim(format!("bad ttl {text:?} (e.g. 90s, 15m, 1h, 2d)")))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(MintError::Claim(format!("bad ttl unit in {text:?} (s, m, h or d)"))),
    };
    if secs == 0 {
        return Err(MintError::Claim("ttl must be positive".into()));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Verifier;

    #[test]
    fn a_minted_token_is_accepted_by_the_node_it_was_made_for() {
        let cfg = Config::from_args(["--jwt-secret", "0123456789abcdef0123"]).expect("config");
        let signer = Signer::new(cfg.jwt_algorithm, cfg.jwt_secret.as_deref(), None).expect("signer");
        let claims = TokenClaims::new("d1", "DRIVER", Duration::from_secs(60))
            .and_then(|c| c.tenant(Some("acme")))
            .and_then(|c| c.name(Some("Dana")))
            .expect("claims");
        let token = signer.sign(claims).expect("token");
        let got = Verifier::from_config(&cfg).expect("verifier").verify(&token).expect("verified");
        assert_eq!((got.user.0.as_str(), got.role, got.tenant.0.as_str()), ("d1", Role::Driver, "acme"));
        assert_eq!(got.name.as_deref(), Some("Dana"));
        let other = Config::from_args(["--jwt-secret", "another-secret-of-20b"]).expect("config");
        assert!(
            Verifier::from_config(&other)
                .expect("verifier")
                .verify(
                    &signer
                        .sign(TokenClaims::new("d1", "DRIVER", Duration::from_secs(60)).expect("claims"))
                        .expect("token")
                )
                .is_err()
        );
    }

    #[test]
    fn bad_claims_and_lifetimes_are_refused() {
        assert!(TokenClaims::new("", "DRIVER", Duration::from_secs(1)).is_err());
        assert!(TokenClaims::new("d1", "PILOT", Duration::from_secs(1)).is_err());
        assert_eq!(parse_ttl("1h").expect("1h"), Duration::from_secs(3600));
        assert_eq!(parse_ttl("90").expect("90"), Duration::from_secs(90));
        assert_eq!(parse_ttl("2d").expect("2d"), Duration::from_secs(172_800));
        assert!(parse_ttl("0s").is_err() && parse_ttl("1w").is_err() && parse_ttl("h").is_err());
    }

    #[test]
    fn the_development_signer_exists_only_with_the_public_secret_in_embedded_mode() {
        assert!(Signer::development(&Config::from_args(Vec::<&str>::new()).expect("embedded")).is_some());
        assert!(
            Signer::development(&Config::from_args(["--jwt-secret", "0123456789abcdef0123"]).expect("own")).is_none()
        );
        let cluster = Config::from_args([
            "--jwt-secret",
            DEV_JWT_SECRET,
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--database-url",
            "postgres://postgres@127.0.0.1/test",
        ])
        .expect("cluster config");
        assert!(Signer::development(&cluster).is_none(), "never in cluster mode, even with the public secret");
    }
}
