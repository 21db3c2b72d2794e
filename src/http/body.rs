//! Request bodies: JSON parsed within the contract's payload limits (depth, string sizes)
//! before typed decoding, so errors name the offending field; and the bare `{ok:true}`
//! answer.

use axum::body::Bytes;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::limits::check_json;

/// Parses a JSON body within the payload limits; errors name the field.
pub(super) fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("body is not JSON: {e}")))?;
    check_json(&v, 1)?;
    serde_path_to_error::deserialize(v).map_err(|e| Error::invalid(e.to_string()))
}

/// `{ok:true}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Done {
    ok: bool,
}

impl Done {
    /// The one value.
    pub const OK: Done = Done { ok: true };
}
