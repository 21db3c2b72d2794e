//! GPX tracks: every `<trk>` is one driver (named by its `<name>`, else `trk<i>`), its
//! `<trkpt lat=".." lon="..">` points in order with their `<time>` (and GPX 1.0's optional
//! `<speed>` m/s and `<course>` degrees).
//!
//! A small tag scanner, not an XML parser: it reads the elements above, ignores everything
//! else (extensions, comments, declarations), never panics on broken input, and counts
//! points it cannot use. A point without `<time>` comes one second after the previous one.

use super::record::{Parsed, Record, check_fix, iso_seconds};
use crate::trips::schedule::Fix;

/// One tag: its local name (namespace prefix dropped), its attribute text, and its kind.
struct Tag<'a> {
    name: &'a str,
    attrs: &'a str,
    closing: bool,
    self_closing: bool,
}

/// The tags of `text` with the byte offset just after each one's `>`.
fn tags(text: &str) -> impl Iterator<Item = (Tag<'_>, usize)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            let start = pos + text.get(pos..)?.find('<')?;
            if text[start..].starts_with("<!--") {
                pos = start + 4 + text[start + 4..].find("-->")? + 3;
                continue;
            }
            let end = start + text[start..].find('>')?;
            pos = end + 1;
            let inner = &text[start + 1..end];
            if inner.starts_with(['!', '?']) {
                continue;
            }
            let closing = inner.starts_with('/');
            let inner = inner.trim_start_matches('/');
            let self_closing = inner.ends_with('/');
            let inner = inner.trim_end_matches('/');
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let full = &inner[..name_end];
            let name = full.rsplit(':').next().unwrap_or(full);
            return Some((Tag { name, attrs: &inner[name_end..], closing, self_closing }, pos));
        }
    })
}

/// The value of attribute `name` (single or double quotes).
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = attrs[from..].find(name) {
        let at = from + i;
        from = at + name.len();
        let before_ok = at == 0 || attrs[..at].ends_with(char::is_whitespace);
        let rest = attrs[from..].trim_start();
        if before_ok && let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start();
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let value = &rest[1..];
            return value.find(quote).map(|end| &value[..end]);
        }
    }
    None
}

/// Text content from `after` up to the next tag.
fn text_at(text: &str, after: usize) -> &str {
    let rest = text.get(after..).unwrap_or("");
    rest[..rest.find('<').unwrap_or(rest.len())].trim()
}

#[derive(Default)]
struct Point {
    lat: Option<f64>,
    lng: Option<f64>,
    time: Option<f64>,
    speed: Option<f64>,
    course: Option<f64>,
}

/// Parses a GPX document.
pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let (mut in_trk, mut trk_count) = (false, 0usize);
    let mut name: Option<String> = None;
    let mut points: Vec<Point> = Vec::new();
    let mut current: Option<Point> = None;
    let mut point_no = 0usize;
    for (tag, after) in tags(text) {
        match (tag.name, tag.closing) {
            ("trk", false) => {
                (in_trk, name) = (true, None);
                points.clear();
            }
            ("trk", true) if in_trk => {
                in_trk = false;
                let driver = name.take().unwrap_or_else(|| format!("trk{trk_count}"));
                trk_count += 1;
                finish_track(&mut out, &driver, std::mem::take(&mut points));
            }
            ("name", false) if in_trk && current.is_none() && name.is_none() => {
                name = Some(text_at(text, after).to_owned()).filter(|n| !n.is_empty());
            }
            ("trkpt", false) if in_trk => {
                point_no += 1;
                let num = |k: &str| attr(tag.attrs, k).and_then(|v| v.trim().parse::<f64>().ok());
                let p = Point { lat: num("lat"), lng: num("lon"), ..Point::default() };
                if tag.self_closing { points.push(p) } else { current = Some(p) }
            }
            ("trkpt", true) => points.extend(current.take()),
            ("time", false) => {
                if let Some(p) = &mut current {
                    p.time = iso_seconds(text_at(text, after));
                }
            }
            ("speed" | "course", false) => {
                if let Some(p) = &mut current {
                    let v = text_at(text, after).parse::<f64>().ok();
                    if tag.name == "speed" { p.speed = v } else { p.course = v }
                }
            }
            _ => {}
        }
    }
    if point_no == 0 {
        out.skip(0, "no <trkpt> in the document".to_owned());
    }
    out
}

fn finish_track(out: &mut Parsed, driver: &str, points: Vec<Point>) {
    let mut last_t: Option<f64> = None;
    for (i, p) in points.into_iter().enumerate() {
        let (Some(lat), Some(lng)) = (p.lat, p.lng) else {
            out.skip(i + 1, format!("track {driver}: point without lat/lon"));
            continue;
        };
        let t = p.time.or(last_t.map(|t| t + 1.0)).unwrap_or(0.0);
        last_t = Some(t);
        let fix = Fix { lat, lng, speed: p.speed, heading: p.course };
        match check_fix(&fix) {
            Ok(()) => out.records.push(Record { driver: driver.to_owned(), trip: None, t, fix }),
            Err(why) => out.skip(i + 1, format!("track {driver}: {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <metadata><name>not a track name</name></metadata>
  <trk><name>cab-7</name><trkseg>
    <trkpt lat="-1.2921" lon="36.8219"><ele>1661</ele><time>2024-05-01T08:00:00Z</time></trkpt>
    <trkpt lon='36.8229' lat='-1.2911'><time>2024-05-01T08:00:05.500Z</time><speed>4.2</speed><course>45</course></trkpt>
    <!-- <trkpt lat="0" lon="0"><time>2024-05-01T08:00:06Z</time></trkpt> -->
  </trkseg></trk>
  <trk><trkseg>
    <trkpt lat="10" lon="20"/>
    <trkpt lat="11" lon="21"></trkpt>
    <trkpt lat="95" lon="21"></trkpt>
    <trkpt lon="21"></trkpt>
  </trkseg></trk>
</gpx>"#;

    #[test]
    fn reads_tracks_points_and_times() {
        let p = parse(DOC);
        assert_eq!(p.records.len(), 4, "{:?}", p.first_error);
        assert_eq!(p.skipped, 2);
        let a = &p.records[0];
        assert_eq!((a.driver.as_str(), a.fix.lat, a.fix.lng), ("cab-7", -1.2921, 36.8219));
        let b = &p.records[1];
        assert!((b.t - a.t - 5.5).abs() < 1e-9);
        assert_eq!((b.fix.lat, b.fix.lng, b.fix.speed, b.fix.heading), (-1.2911, 36.8229, Some(4.2), Some(45.0)));
        // Unnamed track, no times: one second apart from 0.
        let (c, d) = (&p.records[2], &p.records[3]);
        assert_eq!((c.driver.as_str(), c.t, d.t), ("trk1", 0.0, 1.0));
        assert_eq!((d.fix.lat, d.fix.lng), (11.0, 21.0));
    }

    #[test]
    fn survives_garbage() {
        for doc in ["", "<", "<trk><trkpt lat=\"1", "<trk><trkpt lat=1 lon=2></trkpt></trk>", "<<<>>>", "<trk></trk>"] {
            let p = parse(doc);
            assert!(p.records.is_empty(), "{doc:?}");
        }
        assert_eq!(attr(r#" xlat="1" lat="2""#, "lat"), Some("2"));
        assert_eq!(attr(r#" lat = '3' "#, "lat"), Some("3"));
        assert_eq!(attr(r#" lat=4"#, "lat"), None);
    }
}
