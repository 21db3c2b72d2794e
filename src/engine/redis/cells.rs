//! The Redis engine's geo cells on a Redis Cluster: the tenant's GEO index and freshness
//! set are split in cells of [`GEO_CELL_DEG`] degrees, each on its own slot, so that no one
//! key takes every location update of a city; a search reads the cells around its origin
//! concurrently and merges them. (One Redis keeps one index per tenant: one round trip per
//! update is worth more there.)

use crate::domain::rides::haversine_km;

/// Side of a geo cell, in degrees (≈ 14 km of latitude): half a live-area cell
/// (`domain::area::CELL_DEG`), so each area cell is exactly four geo cells and a geo cell's
/// script can tell whether its area cell is watched. A city spans tens of cells, spread over
/// the shards, and an offer search of 10 km reads at most nine.
pub const GEO_CELL_DEG: f64 = crate::domain::area::CELL_DEG / 2.0;

/// Most cells one search reads (a radius past it is clamped: ≈ 50 km at mid latitudes).
const MAX_CELLS: usize = 121;

/// The geo cell of a position, by name.
pub fn geo_cell(lat: f64, lng: f64) -> String {
    name((lat / GEO_CELL_DEG).floor() as i64, (lng / GEO_CELL_DEG).floor() as i64)
}

fn name(a: i64, b: i64) -> String {
    format!("g{a}_{b}")
}

/// The four geo cells of a live-area cell.
pub fn geo_cells_of(cell: crate::domain::area::Cell) -> [String; 4] {
    let (a, b) = (cell.0 * 2, cell.1 * 2);
    [name(a, b), name(a, b + 1), name(a + 1, b), name(a + 1, b + 1)]
}

/// The cell index range of the box around a circle: `(lat0, lat1, lng0, lng1)`.
fn bounds(lat: f64, lng: f64, radius_km: f64) -> (i64, i64, i64, i64) {
    let dlat = radius_km / 111.0;
    let dlng = radius_km / (111.0 * lat.to_radians().cos().abs().max(0.01));
    let idx = |v: f64| (v / GEO_CELL_DEG).floor() as i64;
    (
        idx((lat - dlat).max(-90.0)),
        idx((lat + dlat).min(90.0)),
        idx((lng - dlng).max(-180.0)),
        idx((lng + dlng).min(180.0)),
    )
}

/// The cells a search of `radius_km` around `(lat, lng)` must read, or `None` when the box
/// holds more than a search reads one by one (then: the tenant's cells that hold drivers,
/// filtered with [`in_box`]).
pub fn cells_around(lat: f64, lng: f64, radius_km: f64) -> Option<Vec<String>> {
    let (lat0, lat1, lng0, lng1) = bounds(lat, lng, radius_km);
    let n = (lat1 - lat0 + 1).saturating_mul(lng1 - lng0 + 1);
    if n > MAX_CELLS as i64 {
        return None;
    }
    Some((lat0..=lat1).flat_map(|a| (lng0..=lng1).map(move |b| name(a, b))).collect())
}

/// Whether a cell (by name) is in the box of a search.
pub fn in_box(cell: &str, lat: f64, lng: f64, radius_km: f64) -> bool {
    let Some((a, b)) = cell.strip_prefix('g').and_then(|r| r.split_once('_')) else { return false };
    let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) else { return false };
    let (lat0, lat1, lng0, lng1) = bounds(lat, lng, radius_km);
    (lat0..=lat1).contains(&a) && (lng0..=lng1).contains(&b)
}

/// Merges the drivers found in several cells: nearest first, each driver once.
pub fn merge(lat: f64, lng: f64, found: Vec<(String, f64, f64)>) -> Vec<(String, f64, f64)> {
    let mut seen = std::collections::HashSet::new();
    let mut all: Vec<(f64, (String, f64, f64))> =
        found.into_iter().map(|d| (haversine_km((lat, lng), (d.1, d.2)), d)).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().filter(|(_, d)| seen.insert(d.0.clone())).map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_reads_the_cells_around_its_origin() {
        assert_eq!(geo_cell(48.85, 2.35), "g390_18");
        assert_eq!(geo_cell(-0.05, -0.05), "g-1_-1");
        // A position's geo cell is one of its area cell's four.
        for (lat, lng) in [(48.85, 2.35), (-33.9, 151.2), (0.0, -0.01), (89.9, 179.9)] {
            let area = crate::domain::area::Cell::of(lat, lng);
            assert!(geo_cells_of(area).contains(&geo_cell(lat, lng)), "{lat},{lng}");
        }
        let cells = cells_around(48.85, 2.35, 10.0).expect("a few cells");
        assert!(cells.contains(&"g390_18".to_string()) && cells.len() <= 9, "{cells:?}");
        // Positions 9 km east and north are in them.
        assert!(cells.contains(&geo_cell(48.85, 2.35 + 9.0 / 73.0)), "{cells:?}");
        assert!(cells.contains(&geo_cell(48.85 + 9.0 / 111.0, 2.35)), "{cells:?}");
        // A wide search goes by the cells that hold drivers.
        assert_eq!(cells_around(48.85, 2.35, 200.0), None);
        assert!(in_box(&geo_cell(48.877, 2.35), 48.85, 2.35, 200.0));
        assert!(!in_box(&geo_cell(52.5, 13.4), 48.85, 2.35, 200.0));
        let merged = merge(0.0, 0.0, vec![("b".into(), 0.2, 0.0), ("a".into(), 0.1, 0.0), ("b".into(), 0.2, 0.0)]);
        assert_eq!(merged.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
