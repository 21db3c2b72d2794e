//! A live area (CONTRACT §7 "Live areas"): a bbox or a circle, checked against the
//! contract's bounds, the subscriber's interval and filter, and the geo cells
//! ([`super::cell`]) that cover it.

use super::Invalid;
pub use super::cell::{CELL_DEG, Cell};
use super::presence::Availability;
use super::rides::haversine_km;

/// Largest bbox side, km.
pub const MAX_SIDE_KM: f64 = 100.0;

/// Largest circle radius, km.
pub const MAX_RADIUS_KM: f64 = 50.0;

/// Smallest `intervalMs`.
pub const MIN_INTERVAL_MS: u64 = 250;

/// Largest `intervalMs` (a minute: slower maps poll `GET /api/v1/drivers`).
pub const MAX_INTERVAL_MS: u64 = 60_000;

/// Default `intervalMs`.
pub const DEFAULT_INTERVAL_MS: u64 = 1_000;

/// Longest `areaId`, characters.
pub const MAX_AREA_ID: usize = 64;

/// What a subscriber asked for (`area:subscribe`, the SSE area stream).
#[derive(Debug, Clone)]
pub struct AreaSpec {
    /// The client's name of the subscription (the SSE stream has none: empty).
    pub area_id: String,
    /// Where.
    pub area: Area,
    /// At most one frame per this.
    pub interval: std::time::Duration,
    /// Only drivers with these values (`None`: `AVAILABLE` and `BUSY`).
    pub availability: Option<Vec<Availability>>,
}

impl AreaSpec {
    /// Checks the interval (250 ms – 60 s, default 1 s) and the availability filter
    /// (`AVAILABLE` and/or `BUSY`: `OFFLINE` drivers are never in an area).
    pub fn new(
        area_id: String,
        area: Area,
        interval_ms: Option<u64>,
        availability: Option<Vec<String>>,
    ) -> Result<Self, Invalid> {
        let interval_ms = interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
            return Err(Invalid(format!("intervalMs must be {MIN_INTERVAL_MS}–{MAX_INTERVAL_MS}")));
        }
        let availability = match availability {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|a| match Availability::parse(a.trim()) {
                        Some(v @ (Availability::Available | Availability::Busy)) => Ok(v),
                        _ => Err(Invalid("availability may hold AVAILABLE and BUSY".into())),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if availability.as_ref().is_some_and(Vec::is_empty) {
            return Err(Invalid("availability must not be empty".into()));
        }
        Ok(AreaSpec { area_id, area, interval: std::time::Duration::from_millis(interval_ms), availability })
    }
}

/// Km per degree of latitude (as `haversine_km` measures it).
const KM_PER_DEG: f64 = 111.195;

/// Where an area is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Area {
    /// `[minLng, minLat, maxLng, maxLat]`.
    BBox {
        /// West edge.
        min_lng: f64,
        /// South edge.
        min_lat: f64,
        /// East edge.
        max_lng: f64,
        /// North edge.
        max_lat: f64,
    },
    /// A circle.
    Circle {
        /// Centre latitude.
        lat: f64,
        /// Centre longitude.
        lng: f64,
        /// Radius, km.
        radius_km: f64,
    },
}

/// A position the contract accepts (the location rules: finite, in range).
fn valid_position(lat: f64, lng: f64) -> bool {
    super::check_position(lat, lng, None, None, None).is_ok()
}

impl Area {
    /// A bbox within the contract's bounds (a side of at most 100 km; west before east: a
    /// box across the antimeridian is two areas).
    pub fn bbox(b: [f64; 4]) -> Result<Self, Invalid> {
        let [min_lng, min_lat, max_lng, max_lat] = b;
        if !valid_position(min_lat, min_lng) || !valid_position(max_lat, max_lng) {
            return Err(Invalid("bbox must be [minLng, minLat, maxLng, maxLat] of valid positions".into()));
        }
        if min_lng >= max_lng || min_lat >= max_lat {
            return Err(Invalid("bbox must have minLng < maxLng and minLat < maxLat".into()));
        }
        let height = (max_lat - min_lat) * KM_PER_DEG;
        // The widest parallel of the box is the one nearest the equator.
        let widest = if min_lat <= 0.0 && max_lat >= 0.0 { 0.0 } else { min_lat.abs().min(max_lat.abs()) };
        let width = (max_lng - min_lng) * KM_PER_DEG * widest.to_radians().cos();
        if height > MAX_SIDE_KM || width > MAX_SIDE_KM {
            return Err(Invalid(format!("bbox sides must be at most {MAX_SIDE_KM} km")));
        }
        Ok(Area::BBox { min_lng, min_lat, max_lng, max_lat })
    }

    /// A circle within the contract's bounds (radius more than 0, at most 50 km).
    pub fn circle(lat: f64, lng: f64, radius_km: f64) -> Result<Self, Invalid> {
        if !valid_position(lat, lng) {
            return Err(Invalid("center must be a valid position".into()));
        }
        if !(radius_km.is_finite() && radius_km > 0.0 && radius_km <= MAX_RADIUS_KM) {
            return Err(Invalid(format!("radiusKm must be more than 0 and at most {MAX_RADIUS_KM}")));
        }
        Ok(Area::Circle { lat, lng, radius_km })
    }

    /// True when the position is inside.
    pub fn contains(&self, lat: f64, lng: f64) -> bool {
        match *self {
            Area::BBox { min_lng, min_lat, max_lng, max_lat } => {
                (min_lat..=max_lat).contains(&lat) && (min_lng..=max_lng).contains(&lng)
            }
            Area::Circle { lat: clat, lng: clng, radius_km } => haversine_km((clat, clng), (lat, lng)) <= radius_km,
        }
    }

    /// The area widened by `km` on every side (a circle's radius grows by `km`; a box's
    /// edges move out by at least `km`).
    pub fn grown(&self, km: f64) -> Area {
        match *self {
            Area::Circle { lat, lng, radius_km } => Area::Circle { lat, lng, radius_km: radius_km + km },
            Area::BBox { min_lng, min_lat, max_lng, max_lat } => {
                let dlat = km / KM_PER_DEG;
                // A degree of longitude is shortest on the parallel farthest from the equator.
                let cos = (min_lat.abs().max(max_lat.abs()) + dlat).min(89.9).to_radians().cos();
                let dlng = km / (KM_PER_DEG * cos);
                Area::BBox {
                    min_lng: (min_lng - dlng).max(-180.0),
                    min_lat: (min_lat - dlat).max(-90.0),
                    max_lng: (max_lng + dlng).min(180.0),
                    max_lat: (max_lat + dlat).min(90.0),
                }
            }
        }
    }

    /// The area's bounding box `(min_lat, min_lng, max_lat, max_lng)`.
    fn bounds(&self) -> (f64, f64, f64, f64) {
        match *self {
            Area::BBox { min_lng, min_lat, max_lng, max_lat } => (min_lat, min_lng, max_lat, max_lng),
            Area::Circle { lat, lng, radius_km } => {
                let dlat = radius_km / KM_PER_DEG;
                let cos = (lat.abs() + dlat).min(89.9).to_radians().cos();
                let dlng = (radius_km / (KM_PER_DEG * cos)).min(180.0);
                ((lat - dlat).max(-90.0), (lng - dlng).max(-180.0), (lat + dlat).min(90.0), (lng + dlng).min(180.0))
            }
        }
    }

    /// The cells covering the area.
    pub fn cells(&self) -> Vec<Cell> {
        let (min_lat, min_lng, max_lat, max_lng) = self.bounds();
        let (lo, hi) = (Cell::of(min_lat, min_lng), Cell::of(max_lat, max_lng));
        (lo.0..=hi.0).flat_map(|a| (lo.1..=hi.1).map(move |b| Cell(a, b))).collect()
    }

    /// A circle `(lat, lng, radius_km)` holding the whole area (for the GEO index search of
    /// the snapshot).
    pub fn enclosing_circle(&self) -> (f64, f64, f64) {
        match *self {
            Area::Circle { lat, lng, radius_km } => (lat, lng, radius_km),
            Area::BBox { min_lng, min_lat, max_lng, max_lat } => {
                let (lat, lng) = ((min_lat + max_lat) / 2.0, (min_lng + max_lng) / 2.0);
                let corners = [(min_lat, min_lng), (min_lat, max_lng), (max_lat, min_lng), (max_lat, max_lng)];
                let r = corners.iter().map(|c| haversine_km((lat, lng), *c)).fold(0.0, f64::max);
                (lat, lng, r + 0.01)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_of_the_contract() {
        assert!(Area::bbox([13.0, 52.3, 13.8, 52.7]).is_ok(), "Berlin, about 55 × 45 km");
        assert!(Area::bbox([13.0, 52.0, 14.5, 52.5]).is_err(), "over 100 km wide");
        assert!(Area::bbox([13.0, 52.0, 13.5, 53.0]).is_err(), "over 100 km high");
        assert!(Area::bbox([13.5, 52.0, 13.0, 52.5]).is_err(), "west after east");
        assert!(Area::bbox([13.0, 91.0, 13.5, 92.0]).is_err());
        assert!(Area::circle(52.5, 13.4, 50.0).is_ok());
        assert!(Area::circle(52.5, 13.4, 50.1).is_err());
        assert!(Area::circle(52.5, 13.4, 0.0).is_err());
    }

    #[test]
    fn a_grown_area_holds_every_point_within_the_margin() {
        let b = Area::bbox([13.0, 52.3, 13.8, 52.7]).expect("valid");
        let g = b.grown(0.05);
        // 50 m north of the north edge, east of the east edge, and beyond both.
        assert!(!b.contains(52.7004, 13.4) && g.contains(52.7004, 13.4));
        assert!(!b.contains(52.5, 13.8007) && g.contains(52.5, 13.8007));
        assert!(!g.contains(52.7006, 13.4) && !g.contains(52.5, 13.8009));
        let c = Area::circle(52.5, 13.4, 1.0).expect("valid");
        assert!(!c.contains(52.5094, 13.4) && c.grown(0.05).contains(52.5094, 13.4));
    }

    #[test]
    fn areas_contain_and_cells_cover() {
        let b = Area::bbox([13.0, 52.3, 13.8, 52.7]).expect("valid");
        assert!(b.contains(52.5, 13.4) && !b.contains(52.8, 13.4));
        let cells = b.cells();
        assert!(cells.contains(&Cell::of(52.3, 13.0)) && cells.contains(&Cell::of(52.7, 13.8)));
        assert_eq!(cells.len(), 2 * 4);
        let c = Area::circle(0.01, 0.01, 5.0).expect("valid");
        assert!(c.contains(0.01, 0.05) && !c.contains(0.01, 0.1));
        let cells = c.cells();
        assert!(cells.contains(&Cell(0, 0)) && cells.contains(&Cell(-1, -1)), "{cells:?}");
        let (lat, lng, r) = b.enclosing_circle();
        assert!(Area::circle(lat, lng, r.min(50.0)).expect("valid").contains(52.69, 13.79));
        assert_eq!(Cell::of(-0.1, 0.3).name(), "c-1_1");
        assert_eq!(Cell::of(-0.0, 0.0).name(), "c0_0");
    }
}
