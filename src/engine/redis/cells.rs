//! The Redis engine's geo cells on a Redis Cluster: the tenant's GEO index and freshness
//! set are split in cells of [`GEO_CELL_DEG`] degrees, each on its own slot, so that no one
//! key takes every location update of a city; a search reads the cells around its origin
//! concurrently and merges them. (One Redis keeps one index per tenant: one round trip per
//! update is worth more there.)

use crate::domain::rides::haversine_km;

/// Side of a geo cell, in degrees (≈ 11 km of latitude): a city spans tens of cells, spread
/// over the shards, and an offer search of 10 km reads at most nine.
pub const GEO_CELL_DEG: f64 = 0.1;

/// Most cells one search reads (a radius past it is clamped: ≈ 50 km at mid latitudes).
const MAX_CELLS: usize = 121;

/// The geo cell of a position, by name.
pub fn geo_cell(lat: f64, lng: f64) -> String {
    name((lat / GEO_CELL_DEG).floor() as i64, (lng / GEO_CELL_DEG).floor() as i64)
}

fn name(a: i64, b: i64) -> String {
    format!("g{a}_{b}")
}

/// The cells a search of `radius_km` around `(lat, lng)` must read.
pub fn cells_around(lat: f64, lng: f64, radius_km: f64) -> Vec<String> {
    let dlat = radius_km / 111.0;
    let dlng = radius_km / (111.0 * lat.to_radians().cos().abs().max(0.01));
    let (lat0, lat1) = (
        ((lat - dlat).max(-90.0) / GEO_CELL_DEG).floor() as i64,
        ((lat + dlat).min(90.0) / GEO_CELL_DEG).floor() as i64,
    );
    let (lng0, lng1) = (
        ((lng - dlng).max(-180.0) / GEO_CELL_DEG).floor() as i64,
        ((lng + dlng).min(180.0) / GEO_CELL_DEG).floor() as i64,
    );
    let mut out = Vec::new();
    'rows: for a in lat0..=lat1 {
        for b in lng0..=lng1 {
            if out.len() == MAX_CELLS {
                break 'rows;
            }
            out.push(name(a, b));
        }
    }
    // The origin's own cell first, so a clamped search still reads it.
    let own = geo_cell(lat, lng);
    if !out.contains(&own) {
        out.insert(0, own);
    }
    out
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
        assert_eq!(geo_cell(48.85, 2.35), "g488_23");
        assert_eq!(geo_cell(-0.05, -0.05), "g-1_-1");
        let cells = cells_around(48.85, 2.35, 10.0);
        assert!(cells.contains(&"g488_23".to_string()) && cells.len() <= 9, "{cells:?}");
        // A position 9 km east is in one of them.
        assert!(cells.contains(&geo_cell(48.85, 2.35 + 9.0 / 73.0)), "{cells:?}");
        assert!(cells_around(48.85, 2.35, 500.0).len() <= MAX_CELLS + 1);
        let merged = merge(0.0, 0.0, vec![("b".into(), 0.2, 0.0), ("a".into(), 0.1, 0.0), ("b".into(), 0.2, 0.0)]);
        assert_eq!(merged.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
