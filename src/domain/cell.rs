//! A geo cell: a fixed 0.25° × 0.25° square of latitude and longitude. Each cell has a
//! room (`RoomKey::area_cell`) that the location path publishes into only while some node
//! watches the cell, so a live area costs the positions inside its cells only.
//! `redis/location.lua` computes a driver's previous cell with the same formula.

/// Size of a geo cell, degrees of latitude and longitude.
pub const CELL_DEG: f64 = 0.25;

/// A geo cell: latitude and longitude indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell(pub i64, pub i64);

impl Cell {
    /// The cell holding a position.
    pub fn of(lat: f64, lng: f64) -> Self {
        Cell((lat / CELL_DEG).floor() as i64, (lng / CELL_DEG).floor() as i64)
    }

    /// Its name in room names: `c{lat}_{lng}`.
    pub fn name(self) -> String {
        format!("c{}_{}", self.0, self.1)
    }
}
