//! The viewer's HTTP API in-process: an HTTP-like request from the input goes through
//! `pairlens_serve::router` (the guard: Host, token and Content-Type checks; routing; body
//! limits; the JSON extractor and every handler, uploads decoding and explanations computing)
//! on the built-in model, with `tower::ServiceExt::oneshot`, no socket. The body is also
//! deserialised into each request type on its own.
//!
//! Input format (see `fuzz/README.md`), text-like:
//!
//! ```text
//! POST /api/explain
//! content-type: application/json
//! host: localhost
//!
//! {"image": "…", "captions": ["a bag"]}
//! ```
//!
//! The first line is `METHOD URI`, the next lines up to an empty one are headers (`name:
//! value`; lines that are not valid headers are skipped), the rest is the body. An input that
//! starts with the line `@token` goes to a server started with the token [`TOKEN`] (as
//! `pairlens serve --token`), others to one without. Any reply is fine as long as nothing
//! panics, a reply is never a 500, and an error reply is JSON `{"error": message}`.

#![no_main]

use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use pairlens::{Device, Explainer, ModelSource};
use pairlens_serve::api::{BoxRequest, ExplainRequest, SpanRequest};
use pairlens_serve::guard::Access;
use pairlens_serve::{examples, router, AppState, Config};
use tower::ServiceExt;

/// The token of the second server (its cookie name is in fuzz/seeds/make_seeds.py).
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Servers {
    runtime: tokio::runtime::Runtime,
    open: Router,
    with_token: Router,
}

/// A server on the built-in model with small limits (uploads stay quick), and one explanation
/// in its cache from the start for the span and box seeds to query (its id is in
/// fuzz/seeds/make_seeds.py).
fn server(runtime: &tokio::runtime::Runtime, token: Option<&str>) -> Router {
    let explainer = Explainer::open(ModelSource::Builtin, &Device::Cpu).expect("built-in model");
    let config = Config {
        max_upload_bytes: 1 << 20,
        max_image_pixels: 1 << 20,
        image_store_bytes: 64 << 20,
        access: Access {
            token: token.map(String::from),
            ..Access::default()
        },
        ..Config::default()
    };
    let examples = examples::embedded().expect("examples");
    let state = AppState::new(explainer, "built-in".into(), examples, config).expect("state");
    let state = Arc::new(state);
    let request = serde_json::json!({
        "image": state.examples[0].image, "captions": ["a bag"],
        "text_layer": 3, "image_layer": 3, "steps": 1,
    });
    let mut warm_up = Request::post("/api/explain").header("content-type", "application/json");
    if let Some(t) = token {
        warm_up = warm_up.header("authorization", format!("Bearer {t}"));
    }
    let warm_up = warm_up.body(Body::from(request.to_string())).unwrap();
    let app = router(state);
    let res = runtime.block_on(app.clone().oneshot(warm_up)).unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    app
}

static SERVERS: LazyLock<Servers> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    Servers {
        open: server(&runtime, None),
        with_token: server(&runtime, Some(TOKEN)),
        runtime,
    }
});

/// The request in the input, or `None` where its request line is not one.
fn parse(head: &[u8], body: &[u8]) -> Option<Request<Body>> {
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next()?;
    let mut words = request_line.splitn(2, |&b| b == b' ');
    let method = Method::from_bytes(words.next()?).ok()?;
    let uri = std::str::from_utf8(words.next()?).ok()?;
    let mut req = Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            req = req.header(name, value);
        }
    }
    req.body(Body::from(body.to_vec())).ok()
}

fuzz_target!(|data: &[u8]| {
    let servers = &*SERVERS;
    let (app, data) = match data.strip_prefix(b"@token\n") {
        Some(rest) => (&servers.with_token, rest),
        None => (&servers.open, data),
    };
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    // The request types on their own (what `ApiJson` runs after reading the body).
    let _ = serde_json::from_slice::<ExplainRequest>(body);
    let _ = serde_json::from_slice::<SpanRequest>(body);
    let _ = serde_json::from_slice::<BoxRequest>(body);

    let Some(req) = parse(head, body) else {
        return;
    };
    let head_request = req.method() == Method::HEAD;
    let (status, content_type, reply) = servers.runtime.block_on(async {
        let res = app.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (status, content_type, bytes)
    });
    if std::env::var_os("PAIRLENS_FUZZ_VERBOSE").is_some() {
        eprintln!(
            "{status} {content_type} {}",
            String::from_utf8_lossy(&reply)
        );
    }
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // (A reply to HEAD has no body.)
    if !status.is_success() && !head_request {
        assert!(
            content_type.starts_with("application/json"),
            "{status} {content_type}"
        );
        let v: serde_json::Value = serde_json::from_slice(&reply).expect("JSON error body");
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
});
