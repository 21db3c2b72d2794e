//! `GET /api/v1/drivers?availability=&near=lat,lng&radiusKm=&limit=` (CONTRACT §7): the
//! tenant's drivers that are `AVAILABLE` or `BUSY`, for ADMIN, BUSINESS and SERVICE callers
//! (flow: `flows::presence::list`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ErrorBody;
use crate::app::App;
use crate::domain::Location;
use crate::domain::presence::Availability;
use crate::error::{Error, Result};
use crate::flows::presence::{self, DriverQuery, MAX_LIST};

/// The query, as text: every field is checked here with a clear error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriversQuery {
    availability: Option<String>,
    near: Option<String>,
    radius_km: Option<String>,
    limit: Option<String>,
}

/// One driver.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriverOut {
    driver_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[schema(value_type = String, example = "AVAILABLE")]
    availability: Availability,
    #[serde(skip_serializing_if = "Option::is_none")]
    trip_id: Option<String>,
    /// The latest live `Location`, or `null`.
    #[schema(value_type = Option<Object>)]
    location: Option<Location>,
}

/// `{drivers, total}`; `total` counts the matches before `limit`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DriversOut {
    drivers: Vec<DriverOut>,
    total: usize,
}

fn parse(q: DriversQuery) -> Result<DriverQuery> {
    let availability = match q.availability.as_deref().filter(|s| !s.is_empty()) {
        None => vec![Availability::Available, Availability::Busy],
        Some(list) => list
            .split(',')
            .map(|a| match Availability::parse(a.trim()) {
                Some(v @ (Availability::Available | Availability::Busy)) => Ok(v),
                _ => Err(Error::invalid("availability must be AVAILABLE, BUSY or AVAILABLE,BUSY")),
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let near = match q.near.as_deref() {
        None => None,
        Some(s) => {
            let bad = || Error::invalid("near must be lat,lng");
            let (lat, lng) = s.split_once(',').ok_or_else(bad)?;
            let lat: f64 = lat.trim().parse().map_err(|_| bad())?;
            let lng: f64 = lng.trim().parse().map_err(|_| bad())?;
            if !(lat.is_finite() && lng.is_finite() && (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lng))
            {
                return Err(Error::invalid("near is not a valid position"));
            }
            Some((lat, lng))
        }
    };
    let radius_km = match q.radius_km.as_deref() {
        None => None,
        Some(s) => {
            let r: f64 = s.trim().parse().map_err(|_| Error::invalid("radiusKm must be a number"))?;
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::invalid("radiusKm must be more than 0"));
            }
            if near.is_none() {
                return Err(Error::invalid("radiusKm needs near"));
            }
            Some(r)
        }
    };
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(s) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIST).contains(&n) => n,
            _ => return Err(Error::invalid(format!("limit must be 1–{MAX_LIST}"))),
        },
    };
    Ok(DriverQuery { availability, near, radius_km, limit })
}

/// Handler of the drivers call.
#[utoipa::path(get, path = "/api/v1/drivers", tag = "dispatch",
    params(("availability" = Option<String>, Query, description = "AVAILABLE, BUSY or AVAILABLE,BUSY (default both)"),
        ("near" = Option<String>, Query, description = "lat,lng: sort by distance from here"),
        ("radiusKm" = Option<f64>, Query, description = "with near: only drivers within it"),
        ("limit" = Option<usize>, Query, description = "1–1000 (default 100)")),
    responses((status = 200, body = DriversOut), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Caller(who): Caller,
    Query(q): Query<DriversQuery>,
) -> Result<Json<DriversOut>> {
    let q = parse(q)?;
    let (drivers, total) = presence::list(&app, &who, &q).await?;
    let drivers = drivers
        .into_iter()
        .map(|d| DriverOut {
            driver_id: d.driver_id,
            name: d.name,
            availability: d.availability,
            trip_id: d.trip_id,
            location: d.location,
        })
        .collect();
    Ok(Json(DriversOut { drivers, total }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(availability: Option<&str>, near: Option<&str>, radius: Option<&str>, limit: Option<&str>) -> DriversQuery {
        DriversQuery {
            availability: availability.map(str::to_string),
            near: near.map(str::to_string),
            radius_km: radius.map(str::to_string),
            limit: limit.map(str::to_string),
        }
    }

    #[test]
    fn queries_are_checked() {
        let ok = parse(q(Some("BUSY"), Some("52.5,13.4"), Some("3"), Some("1000"))).expect("valid");
        assert_eq!(ok.availability, vec![Availability::Busy]);
        assert_eq!(ok.near, Some((52.5, 13.4)));
        assert_eq!(parse(q(None, None, None, None)).expect("defaults").limit, 100);
        for bad in [
            q(Some("OFFLINE"), None, None, None),
            q(Some("AVAILABLE,NAPPING"), None, None, None),
            q(None, Some("52.5"), None, None),
            q(None, Some("95,0"), None, None),
            q(None, None, Some("3"), None),
            q(None, Some("1,1"), Some("-1"), None),
            q(None, None, None, Some("0")),
            q(None, None, None, Some("1001")),
        ] {
            assert!(parse(bad).is_err());
        }
    }
}
