//! Everything the binary carries: the page (no CDN, works offline) and the default examples
//! (the repository's `examples/mosaics`), so `pairlens serve` needs no files next to it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub const INDEX_HTML: &str = include_str!("../assets/index.html");
pub const APP_JS: &str = include_str!("../assets/app.js");
pub const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The default examples' `data.jsonl` (mosaics format: one object per image, with at least
/// `image` and `caption`).
pub const EXAMPLES_JSONL: &str = include_str!("../../../examples/mosaics/data.jsonl");

/// The default examples' image files, by the names `data.jsonl` uses.
pub const EXAMPLE_FILES: [(&str, &[u8]); 4] = [
    (
        "00000.png",
        include_bytes!("../../../examples/mosaics/00000.png"),
    ),
    (
        "00001.png",
        include_bytes!("../../../examples/mosaics/00001.png"),
    ),
    (
        "00002.png",
        include_bytes!("../../../examples/mosaics/00002.png"),
    ),
    (
        "00003.png",
        include_bytes!("../../../examples/mosaics/00003.png"),
    ),
];

/// A static text file with its type; `no-cache` so a rebuilt binary's page is picked up.
fn text(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    text(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn app_js() -> Response {
    text(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn style_css() -> Response {
    text(STYLE_CSS, "text/css; charset=utf-8")
}
