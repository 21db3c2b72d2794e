//! The pages every node serves (issue "web apps"): `/console` (operations: live map,
//! alerts, cluster charts, trip inspector, publish form), `/driver` (offers, the active
//! trip, positions), `/track/{tripId}` (a passenger's tracker with the ticket's QR code),
//! and `/` linking them. Their HTML, scripts and styles are in the repository's `web/`
//! folder, embedded into the binary at compile time; the browser side uses only
//! `fetch`, `EventSource` and `WebSocket` against the node's own contract routes. Each page
//! checks the caller's role through those routes, so the pages themselves are public.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::app::App;
use crate::mint::Signer;

/// Every page route, as `(method, path)`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/console"),
    ("GET", "/driver"),
    ("GET", "/track/{trip_id}"),
    ("GET", "/web/config.json"),
    ("GET", "/web/{file}"),
];

/// An embedded file: name under `/web/`, content type, body.
struct Asset {
    name: &'static str,
    kind: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $kind:expr) => {
        Asset { name: $name, kind: $kind, body: include_str!(concat!("../../web/", $name)) }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("console.html", HTML),
    asset!("driver.html", HTML),
    asset!("track.html", HTML),
    asset!("index.js", JS),
    asset!("app.css", CSS),
    asset!("common.js", JS),
    asset!("sio.js", JS),
    asset!("map.js", JS),
    asset!("chart.js", JS),
    asset!("console.js", JS),
    asset!("driver.js", JS),
    asset!("track.js", JS),
];

/// What the pages need to know of the node's settings.
struct Pages {
    /// The `Content-Security-Policy` of every page and asset.
    policy: HeaderValue,
    /// `/web/config.json`.
    config: String,
    /// `--web-dir`: read the files from there at each request.
    dir: Option<std::path::PathBuf>,
}

/// The pages' router, with the node settings they need (tile template, dev sign-in).
pub fn routes(app: &App) -> Router<Arc<App>> {
    let tile_url = app.cfg.map_tile_url.clone();
    let tile_origin = tile_url.as_deref().and_then(origin_of).unwrap_or_default();
    let policy = format!(
        "default-src 'self'; img-src 'self' data: {tile_origin}; connect-src 'self' ws: wss:; \
         style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    let config = json!({
        "tileUrl": tile_url,
        "devSignIn": Signer::development(&app.cfg).is_some(),
        "node": app.node_id,
    })
    .to_string();
    let pages = Arc::new(Pages {
        policy: HeaderValue::from_str(policy.trim()).unwrap_or(HeaderValue::from_static("default-src 'self'")),
        config,
        dir: app.cfg.web_dir.clone(),
    });
    let page = |name: &'static str| {
        let pages = pages.clone();
        get(move || async move { serve(&pages, name) })
    };
    let cfg_pages = pages.clone();
    let file_pages = pages.clone();
    Router::new()
        .route("/", page("index.html"))
        .route("/console", page("console.html"))
        .route("/driver", page("driver.html"))
        .route("/track/{trip_id}", page("track.html"))
        .route(
            "/web/config.json",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache")],
                    cfg_pages.config.clone(),
                )
                    .into_response()
            }),
        )
        .route("/web/{file}", get(move |Path(file): Path<String>| async move { serve(&file_pages, &file) }))
}

/// An embedded file with the pages' headers, or the JSON 404.
fn serve(pages: &Pages, name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, axum::Json(json!({ "error": "NOT_FOUND", "message": "no such page" })))
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, pages.policy.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        ],
        match &pages.dir {
            Some(dir) => std::fs::read_to_string(dir.join(asset.name)).unwrap_or_else(|_| asset.body.to_string()),
            None => asset.body.to_string(),
        },
    )
        .into_response()
}

/// `https://host[:port]` of a URL template, for the content security policy.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    // A `{s}` subdomain placeholder becomes a wildcard.
    let host = host.replace("{s}", "*");
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tile_template_gives_its_origin() {
        assert_eq!(
            super::origin_of("https://{s}.tile.example.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tile.example.org")
        );
        assert_eq!(
            super::origin_of("http://127.0.0.1:8088/t/{z}/{x}/{y}.png").as_deref(),
            Some("http://127.0.0.1:8088")
        );
        assert_eq!(super::origin_of("nonsense"), None);
    }

    #[test]
    fn every_asset_a_page_loads_is_embedded() {
        for page in super::ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
            for part in page.body.split("\"/web/").skip(1) {
                let name = part.split('"').next().unwrap_or_default();
                assert!(super::ASSETS.iter().any(|a| a.name == name), "{} loads /web/{name}", page.name);
            }
        }
    }
}
