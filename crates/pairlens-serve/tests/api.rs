//! Every endpoint of the viewer's API on the built-in model, through the router (no socket):
//! happy paths checked against direct library calls, and the bad inputs users can send.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use candle_core::Device;
use http_body_util::BodyExt;
use pairlens::attribution::patch_weights;
use pairlens::attribution::{Explanation, Mode};
use pairlens::io::image::decode_bytes;
use pairlens::io::preprocess::Geometry;
use pairlens::{Explainer, ModelSource};
use pairlens_serve::{assets, examples, router, AppState, Config};
use serde_json::{json, Value};
use tower::ServiceExt;

const CAPTION: &str = "a running shoe next to a boot and a pair of trousers beside a blouse";

fn load() -> Explainer {
    Explainer::open(ModelSource::Builtin, &Device::Cpu).expect("built-in model")
}

fn app_with(config: Config) -> (Router, Arc<AppState>) {
    let state = Arc::new(
        AppState::new(
            load(),
            "built-in".into(),
            examples::embedded().unwrap(),
            config,
        )
        .unwrap(),
    );
    (router(state.clone()), state)
}

fn app() -> (Router, Arc<AppState>) {
    app_with(Config::default())
}

struct Reply {
    status: StatusCode,
    content_type: String,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// An error reply: the expected status and a JSON `{"error": message}`; returns the message.
    fn error(&self, status: StatusCode) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(
            self.content_type.starts_with("application/json"),
            "{}",
            self.content_type
        );
        let v = self.json();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {v}"))
            .to_string();
        assert!(!msg.is_empty());
        msg
    }
}

/// A request as the page sends it: POSTs carry the page's content type.
async fn call(app: &Router, method: &str, uri: &str, body: impl Into<Body>) -> Reply {
    let content_type = match (method, uri) {
        ("POST", "/api/images") => Some("application/octet-stream"),
        ("POST", _) => Some("application/json"),
        _ => None,
    };
    call_with(app, method, uri, content_type, None, body).await
}

/// A request with the given `Content-Type` and `Host` headers (none when `None`).
async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    host: Option<&str>,
    body: impl Into<Body>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    if let Some(h) = host {
        req = req.header("host", h);
    }
    send(app, req.body(body.into()).unwrap()).await
}

async fn post_json(app: &Router, uri: &str, v: Value) -> Reply {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()))
        .unwrap();
    send(app, req).await
}

/// One request through the router, the whole reply read.
async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Reply {
        status,
        content_type,
        headers,
        body,
    }
}

fn ok(r: Reply) -> Value {
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

fn example_bytes(i: usize) -> &'static [u8] {
    assets::EXAMPLE_FILES[i].1
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-6, "{what}[{i}]: {x} vs {y}");
    }
}

/// What `pairlens explain` computes for an image file's bytes and one caption.
fn direct(
    ex: &Explainer,
    bytes: &[u8],
    caption: &str,
    layers: (usize, usize),
    steps: usize,
    mode: Mode,
) -> (Explanation, Geometry) {
    let decoded = decode_bytes(bytes, Path::new("x.png")).unwrap();
    let pre = ex.preprocess(&decoded).unwrap();
    let mut s = ex.default_settings();
    (s.text_layer, s.image_layer, s.steps, s.mode) = (layers.0, layers.1, steps, mode);
    let image = ex.image(&pre.pixels, &s).unwrap();
    let mut e = ex.explain(&image, &[caption]).unwrap();
    (e.remove(0), pre.geometry)
}

/// Explain example `i` with one caption at layers 1/1 (where spans are informative); returns
/// the first explanation object.
async fn explain_example(app: &Router, state: &AppState, i: usize, caption: &str) -> Value {
    let image = state.examples[i].image.clone();
    let v = ok(post_json(
        app,
        "/api/explain",
        json!({"image": image, "captions": [caption], "text_layer": 1, "image_layer": 1}),
    )
    .await);
    v["explanations"][0].clone()
}

#[tokio::test]
async fn info_describes_the_model_and_examples() {
    let (app, state) = app();
    let v = ok(call(&app, "GET", "/api/info", Body::empty()).await);
    assert_eq!(v["model"], "built-in");
    assert_eq!(v["text_layers"], 4);
    assert_eq!(v["image_layers"], 4);
    assert_eq!(v["image_size"], 64);
    assert_eq!(v["patch"], 8);
    assert_eq!(v["grid"], json!([8, 8]));
    assert_eq!(v["max_upload_bytes"], 8 << 20);
    assert_eq!(
        v["defaults"],
        json!({"text_layer": 3, "image_layer": 3, "steps": 10, "mode": "exclip"})
    );
    let ex = v["examples"].as_array().unwrap();
    assert_eq!(ex.len(), 4);
    assert_eq!(ex[0]["name"], "00000.png");
    assert_eq!(ex[0]["caption"], CAPTION);
    assert_eq!(ex[0]["image"], state.examples[0].image.as_str());
    assert_eq!(ex[0]["image"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn page_and_static_files_are_served() {
    let (app, _) = app();
    for (path, ctype, body) in [
        ("/", "text/html", assets::INDEX_HTML),
        ("/app.js", "text/javascript", assets::APP_JS),
        ("/style.css", "text/css", assets::STYLE_CSS),
    ] {
        let r = call(&app, "GET", path, Body::empty()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.content_type.starts_with(ctype),
            "{path}: {}",
            r.content_type
        );
        assert_eq!(r.body, body.as_bytes(), "{path}");
    }
    let msg = call(&app, "GET", "/nope", Body::empty())
        .await
        .error(StatusCode::NOT_FOUND);
    assert!(msg.contains("/nope"), "{msg}");
}

#[tokio::test]
async fn example_images_are_served_as_png() {
    let (app, state) = app();
    for (i, ex) in state.examples.iter().enumerate() {
        let r = call(
            &app,
            "GET",
            &format!("/api/images/{}", ex.image),
            Body::empty(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.content_type, "image/png");
        assert_eq!(r.body, example_bytes(i));
    }
    call(&app, "GET", "/api/images/0123456789abcdef", Body::empty())
        .await
        .error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_png_and_jpeg() {
    let (app, state) = app();
    // The same PNG as an example: the same content id.
    let v = ok(call(&app, "POST", "/api/images", example_bytes(2).to_vec()).await);
    assert_eq!(
        v,
        json!({"image": state.examples[2].image, "width": 64, "height": 64})
    );

    // A JPEG (non-square, so the geometry is not trivial), served back as a PNG of its size.
    let rgb: Vec<u8> = (0..40 * 30)
        .flat_map(|i| [(i % 40 * 6) as u8, (i / 40 * 8) as u8, 128])
        .collect();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode(&rgb, 40, 30, image::ExtendedColorType::Rgb8)
        .unwrap();
    let v = ok(call(&app, "POST", "/api/images", jpeg.clone()).await);
    let id = v["image"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(40), Some(30))
    );
    let r = call(&app, "GET", &format!("/api/images/{id}"), Body::empty()).await;
    assert_eq!(r.content_type, "image/png");
    let png = image::load_from_memory_with_format(&r.body, image::ImageFormat::Png).unwrap();
    assert_eq!((png.width(), png.height()), (40, 30));
    // The served pixels are the decoder's (libjpeg-turbo, as `pairlens explain`).
    let decoded = decode_bytes(&jpeg, Path::new("x.jpg")).unwrap();
    assert_eq!(png.to_rgb8().into_raw(), decoded.to_rgb());

    // Explaining the upload gives what the CLI's path gives for the file.
    let v = ok(post_json(
        &app,
        "/api/explain",
        json!({"image": id, "captions": ["a bag"]}),
    )
    .await);
    let (e, _) = direct(&state.explainer, &jpeg, "a bag", (3, 3), 10, Mode::Exclip);
    assert!((v["explanations"][0]["score"].as_f64().unwrap() as f32 - e.score).abs() <= 1e-6);
}

#[tokio::test]
async fn bad_uploads() {
    let (app, _) = app_with(Config {
        max_upload_bytes: 4096,
        ..Config::default()
    });
    let msg = call(&app, "POST", "/api/images", b"hello, not an image".to_vec())
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(msg.contains("not a decodable image"), "{msg}");
    // A PNG cut short: the header parses, the pixels do not.
    let cut = example_bytes(0)[..200].to_vec();
    call(&app, "POST", "/api/images", cut)
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let msg = call(&app, "POST", "/api/images", Vec::new())
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(msg.contains("empty"), "{msg}");
    let msg = call(&app, "POST", "/api/images", vec![0u8; 5000])
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(msg.contains("4096"), "{msg}");
}

#[tokio::test]
async fn decompression_bomb_is_refused_before_decoding() {
    // 7000×6000 = 42 megapixels of black: a few tens of kilobytes as a PNG.
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new_with_quality(
            &mut png,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::NoFilter,
        ),
        &vec![0u8; 7000 * 6000],
        7000,
        6000,
        image::ExtendedColorType::L8,
    )
    .unwrap();
    assert!(png.len() < 8 << 20);
    let (app, _) = app();
    let msg = call(&app, "POST", "/api/images", png)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        msg.contains("7000×6000") && msg.contains("megapixels"),
        "{msg}"
    );
}

#[tokio::test]
async fn explain_equals_the_library_and_is_cached() {
    let (app, state) = app();
    let e1 = explain_example(&app, &state, 0, CAPTION).await;
    let (e, _) = direct(
        &state.explainer,
        example_bytes(0),
        CAPTION,
        (1, 1),
        10,
        Mode::Exclip,
    );
    assert_eq!(e1["caption"], CAPTION);
    assert_eq!(e1["tokens"], json!(e.tokens));
    assert_eq!(e1["tokens"][0], "<sot>");
    assert_eq!(e1["grid"], json!([8, 8]));
    assert_eq!(e1["cached"], false);
    assert!(e1["seconds"].as_f64().unwrap() > 0.0);
    let f = |k: &str| e1[k].as_f64().unwrap() as f32;
    assert_close(
        &[f("score"), f("sum"), f("residual")],
        &[e.score, e.total().unwrap(), e.residual],
        "score, sum, residual",
    );
    let r = &e1["reference_terms"];
    assert_close(
        &floats(&json!([
            r["text_vs_image_reference"],
            r["text_reference_vs_image"],
            r["reference_vs_reference"]
        ])),
        &[
            e.reference_terms.text_vs_image_reference,
            e.reference_terms.text_reference_vs_image,
            e.reference_terms.reference_vs_reference,
        ],
        "reference terms",
    );
    let m = e.matrix().unwrap();
    let totals: Vec<f32> = e.interactions.sum(1).unwrap().to_vec1().unwrap();
    assert_close(&floats(&e1["token_totals"]), &totals, "token totals");
    let whole = e.span_heatmap(0, m.len()).unwrap();
    assert_close(
        &floats(&e1["heatmap"]["patches"]),
        &whole.patches,
        "whole heatmap",
    );
    assert_close(
        &[e1["heatmap"]["cls"].as_f64().unwrap() as f32],
        &[whole.cls.unwrap()],
        "whole CLS",
    );

    // Repeated: from the cache, same id and numbers.
    let e2 = explain_example(&app, &state, 0, CAPTION).await;
    assert_eq!(e2["cached"], true);
    assert_eq!(e2["id"], e1["id"]);
    assert_eq!(e2["token_totals"], e1["token_totals"]);
    // Other settings: another explanation; the response echoes the settings used.
    let image = state.examples[0].image.clone();
    let v = ok(post_json(
        &app,
        "/api/explain",
        json!({"image": image, "captions": [CAPTION, "a boot"], "steps": 3, "mode": "cosine"}),
    )
    .await);
    assert_eq!(
        v["settings"],
        json!({"text_layer": 3, "image_layer": 3, "steps": 3, "mode": "cosine"})
    );
    let ex = v["explanations"].as_array().unwrap();
    assert_eq!(ex.len(), 2);
    assert!(ex
        .iter()
        .all(|x| x["cached"] == false && x["id"] != e1["id"]));
    let (c, _) = direct(
        &state.explainer,
        example_bytes(0),
        "a boot",
        (3, 3),
        3,
        Mode::Cosine,
    );
    assert_close(
        &floats(&ex[1]["token_totals"]),
        &c.interactions.sum(1).unwrap().to_vec1::<f32>().unwrap(),
        "cosine mode",
    );
}

#[tokio::test]
async fn span_equals_span_heatmap() {
    let (app, state) = app();
    let e1 = explain_example(&app, &state, 0, CAPTION).await;
    let id = e1["id"].as_str().unwrap();
    let (e, _) = direct(
        &state.explainer,
        example_bytes(0),
        CAPTION,
        (1, 1),
        10,
        Mode::Exclip,
    );
    for (a, b) in [(2, 4), (0, 1), (0, e.tokens.len())] {
        let v = ok(post_json(
            &app,
            "/api/span",
            json!({"explanation": id, "start": a, "end": b}),
        )
        .await);
        let h = e.span_heatmap(a, b).unwrap();
        assert_close(&floats(&v["patches"]), &h.patches, &format!("span {a}:{b}"));
        assert_close(
            &[v["cls"].as_f64().unwrap() as f32],
            &[h.cls.unwrap()],
            "span CLS",
        );
        assert_eq!(v["grid"], json!([8, 8]));
    }
    let n = e.tokens.len();
    for (a, b) in [(3, 3), (4, 2), (0, n + 1)] {
        let msg = post_json(
            &app,
            "/api/span",
            json!({"explanation": id, "start": a, "end": b}),
        )
        .await
        .error(StatusCode::BAD_REQUEST);
        assert!(msg.contains("out of range"), "{msg}");
    }
    post_json(
        &app,
        "/api/span",
        json!({"explanation": id, "start": -1, "end": 2}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    post_json(
        &app,
        "/api/span",
        json!({"explanation": "0000000000000000", "start": 0, "end": 2}),
    )
    .await
    .error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn box_equals_the_cli_path() {
    let (app, state) = app();
    let e1 = explain_example(&app, &state, 0, CAPTION).await;
    let id = e1["id"].as_str().unwrap();
    let (e, geometry) = direct(
        &state.explainer,
        example_bytes(0),
        CAPTION,
        (1, 1),
        10,
        Mode::Exclip,
    );
    let patch = state.explainer.model().vision.config.patch_size;
    // As crates/pairlens-cli/src/cmd/explain.rs maps a --box.
    let cli = |b: [f32; 4]| {
        let (x0, y0) = geometry.to_input(b[0], b[1]);
        let (x1, y1) = geometry.to_input(b[2], b[3]);
        e.region_token_scores(&patch_weights(e.grid, patch, (x0, y0, x1, y1)).unwrap())
            .unwrap()
    };
    for b in [
        [0.0, 8.0, 31.0, 25.0],
        [33.5, 5.0, 61.0, 26.25],
        [0.0, 0.0, 64.0, 64.0],
    ] {
        let v = ok(post_json(&app, "/api/box", json!({"explanation": id, "box": b})).await);
        assert_close(&floats(&v["scores"]), &cli(b), &format!("box {b:?}"));
        assert_eq!(v["tokens"], json!(e.tokens));
    }
    // Partly outside: clipped to the image.
    let v = ok(post_json(
        &app,
        "/api/box",
        json!({"explanation": id, "box": [-10, -10, 31, 25]}),
    )
    .await);
    assert_close(
        &floats(&v["scores"]),
        &cli([0.0, 0.0, 31.0, 25.0]),
        "clipped box",
    );

    for b in [
        json!([64, 0, 80, 10]),
        json!([-20, -20, 0, 10]),
        json!([5, 5, 5, 9]),
        json!([10, 10, 5, 20]),
    ] {
        let msg = post_json(&app, "/api/box", json!({"explanation": id, "box": b}))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert!(msg.contains("outside") || msg.contains("empty"), "{msg}");
    }
    post_json(
        &app,
        "/api/box",
        json!({"explanation": id, "box": [1, 2, 3]}),
    )
    .await
    .error(StatusCode::BAD_REQUEST);
    post_json(
        &app,
        "/api/box",
        json!({"explanation": "ffffffffffffffff", "box": [0, 0, 10, 10]}),
    )
    .await
    .error(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_explain_requests() {
    let (app, state) = app();
    let image = state.examples[1].image.clone();
    let bad = |extra: Value| {
        let mut req = json!({"image": image, "captions": ["a bag"]});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        req
    };
    for (req, needle) in [
        (
            bad(json!({"text_layer": 4})),
            "text layer 4 is out of range",
        ),
        (
            bad(json!({"image_layer": 9})),
            "image layer 9 is out of range",
        ),
        (bad(json!({"steps": 0})), "steps"),
        (bad(json!({"steps": 201})), "at most 200"),
        (bad(json!({"mode": "gradcam"})), "unknown mode"),
        (bad(json!({"captions": [""]})), "empty caption"),
        (bad(json!({"captions": ["   "]})), "empty caption"),
        (bad(json!({"captions": []})), "at least one caption"),
        (bad(json!({"captions": vec!["a bag"; 9]})), "at most 8"),
        (
            bad(json!({"captions": ["a bag ".repeat(60)]})),
            "context length",
        ),
        (bad(json!({"text_layer": -1})), "bad JSON"),
        (bad(json!({"steps": "ten"})), "bad JSON"),
        (bad(json!({"colour": "red"})), "unknown field"),
        (json!({"captions": ["a bag"]}), "missing field `image`"),
    ] {
        let msg = post_json(&app, "/api/explain", req.clone())
            .await
            .error(StatusCode::BAD_REQUEST);
        assert!(msg.contains(needle), "{req}: {msg}");
    }
    let msg = call(&app, "POST", "/api/explain", "{\"image\": ")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(msg.contains("bad JSON"), "{msg}");
    let msg = call(&app, "POST", "/api/explain", "")
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(msg.contains("empty request body"), "{msg}");
    let msg = post_json(
        &app,
        "/api/explain",
        json!({"image": "0123456789abcdef", "captions": ["a bag"]}),
    )
    .await
    .error(StatusCode::NOT_FOUND);
    assert!(msg.contains("unknown image"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_explains_both_succeed() {
    let (app, state) = app();
    let image = state.examples[3].image.clone();
    let req = |caption: &str| json!({"image": image, "captions": [caption], "text_layer": 0, "image_layer": 2, "steps": 4});
    let (a, b, c) = tokio::join!(
        post_json(&app, "/api/explain", req("a sandal and a boot")),
        post_json(&app, "/api/explain", req("two shirts")),
        post_json(&app, "/api/explain", req("two shirts")),
    );
    let (a, b, c) = (ok(a), ok(b), ok(c));
    assert_eq!(a["explanations"][0]["caption"], "a sandal and a boot");
    assert_eq!(b["explanations"][0]["caption"], "two shirts");
    // Identical concurrent requests may compute twice, but agree.
    assert_eq!(b["explanations"][0]["id"], c["explanations"][0]["id"]);
    assert_eq!(
        b["explanations"][0]["token_totals"],
        c["explanations"][0]["token_totals"]
    );
    let (e, _) = direct(
        &state.explainer,
        example_bytes(3),
        "two shirts",
        (0, 2),
        4,
        Mode::Exclip,
    );
    assert_close(
        &floats(&b["explanations"][0]["token_totals"]),
        &e.interactions.sum(1).unwrap().to_vec1::<f32>().unwrap(),
        "concurrent",
    );
}

#[tokio::test]
async fn evicted_explanations_are_404() {
    let (app, state) = app_with(Config {
        explanation_bytes: 1,
        ..Config::default()
    });
    let first = explain_example(&app, &state, 1, "a bag").await;
    explain_example(&app, &state, 1, "a boot").await;
    let msg = post_json(
        &app,
        "/api/span",
        json!({"explanation": first["id"], "start": 0, "end": 2}),
    )
    .await
    .error(StatusCode::NOT_FOUND);
    assert!(msg.contains("explain again"), "{msg}");
}

/// Other web pages cannot drive the server: a request naming another host is refused (DNS
/// rebinding), and POSTs without the page's own content type (which a page elsewhere could send
/// without a CORS preflight) are refused before any work.
#[tokio::test]
async fn other_sites_cannot_drive_the_server() {
    let (app, state) = app();
    let image = state.examples[0].image.clone();
    let body = json!({"image": image, "captions": ["a bag"]}).to_string();
    let explain = |content_type, host| {
        call_with(
            &app,
            "POST",
            "/api/explain",
            content_type,
            host,
            body.clone(),
        )
    };
    let msg = explain(Some("application/json"), Some("evil.example:7878"))
        .await
        .error(StatusCode::FORBIDDEN);
    assert!(msg.contains("evil.example"), "{msg}");
    for host in ["localhost:7878", "127.0.0.1:7878", "[::1]:7878"] {
        ok(explain(Some("application/json"), Some(host)).await);
    }
    for simple in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let msg = explain(simple, Some("127.0.0.1:7878"))
            .await
            .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(msg.contains("application/json"), "{msg}");
    }
    let upload = |content_type| {
        call_with(
            &app,
            "POST",
            "/api/images",
            content_type,
            None,
            example_bytes(1).to_vec(),
        )
    };
    upload(Some("text/plain"))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    upload(Some("multipart/form-data; boundary=x"))
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    ok(upload(Some("image/png")).await);
    let r = call_with(
        &app,
        "GET",
        "/api/info",
        None,
        Some("rebound.example"),
        Body::empty(),
    )
    .await;
    r.error(StatusCode::FORBIDDEN);
}

/// Errors speak the API's language: an over-long caption does not mention a command-line flag,
/// and a known path with the wrong method answers with a JSON error too.
#[tokio::test]
async fn api_errors_name_no_cli_flags() {
    let (app, state) = app();
    let image = state.examples[1].image.clone();
    let long = json!({"image": image, "captions": ["a bag ".repeat(60)]});
    let msg = post_json(&app, "/api/explain", long)
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(
        msg.contains("context length") && !msg.contains("--"),
        "{msg}"
    );
    assert!(msg.len() < 300, "the caption is not echoed whole: {msg}");
    let msg = call(&app, "GET", "/api/explain", Body::empty())
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
    assert!(msg.contains("GET") && msg.contains("/api/explain"), "{msg}");
}

/// A server with a token (as beyond loopback) answers only requests that show it: in the
/// `Authorization` header, in the query (which sets a cookie for the page's own requests), or in
/// that cookie. A wrong or missing token is 401 before any work.
#[tokio::test]
async fn a_server_with_a_token_needs_it() {
    let token = "s3cret-token";
    let (app, _) = app_with(Config {
        access: pairlens_serve::guard::Access {
            token: Some(token.into()),
            ..Default::default()
        },
        ..Config::default()
    });
    let get = |uri: &str, header: Option<(&str, String)>| {
        let mut req = Request::builder().method("GET").uri(uri);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        send(&app, req.body(Body::empty()).unwrap())
    };
    for (uri, header) in [
        ("/api/info", None),
        ("/", None),
        ("/api/info?token=wrong-token", None),
        ("/api/info?tokens=s3cret-token", None),
        (
            "/api/info",
            Some(("authorization", "Bearer s3cret-tokem".to_string())),
        ),
        (
            "/api/info",
            Some(("cookie", "pairlens-token=s3cret-token".to_string())),
        ),
    ] {
        let msg = get(uri, header.clone())
            .await
            .error(StatusCode::UNAUTHORIZED);
        assert!(msg.contains("token"), "{uri} {header:?}: {msg}");
    }
    let r = get(
        "/api/info",
        Some(("authorization", format!("Bearer {token}"))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers.get("set-cookie").is_none());
    // The printed URL: the page, and a same-site cookie its own requests then carry.
    let r = get(&format!("/?token={token}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = get("/api/info", Some(("cookie", format!("theme=dark; {pair}")))).await;
    assert_eq!(r.status, StatusCode::OK, "{pair}");
}

/// Caches are bounded in bytes: explanations weigh what they hold, so a budget smaller than two
/// of them keeps one.
#[tokio::test]
async fn caches_are_bounded_in_bytes() {
    let (app, state) = app();
    let first = explain_example(&app, &state, 1, "a bag").await;
    let entry = state.explanation(first["id"].as_str().unwrap()).unwrap();
    let weight = entry.bytes() as u64;
    let interactions = entry.explanation.interactions.elem_count() as u64 * 4;
    assert!(
        weight >= interactions && weight < interactions + 4096,
        "{weight} vs {interactions}"
    );
    let (app, state) = app_with(Config {
        explanation_bytes: weight * 3 / 2,
        ..Config::default()
    });
    let first = explain_example(&app, &state, 1, "a bag").await;
    let second = explain_example(&app, &state, 1, "a boot").await;
    assert!(state.explanation(first["id"].as_str().unwrap()).is_none());
    assert!(state.explanation(second["id"].as_str().unwrap()).is_some());
}

/// Words the model's vocabulary lacks are named in the response (the model read `<unk>`).
#[tokio::test]
async fn unknown_words_are_named() {
    let (app, state) = app();
    let image = state.examples[0].image.clone();
    let body = json!({"image": image, "captions": ["a fluffy bag", "a bag"]});
    let v = ok(post_json(&app, "/api/explain", body).await);
    assert_eq!(v["explanations"][0]["unknown_words"], json!(["fluffy"]));
    assert_eq!(v["explanations"][1]["unknown_words"], json!([]));
}

/// An image id that is not UTF-8 once percent-decoded is a JSON 400 (found by the fuzzer).
#[tokio::test]
async fn an_undecodable_image_id_is_a_json_400() {
    let (app, _) = app();
    let msg = call(&app, "GET", "/api/images/%ff", Body::empty())
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(msg.contains("UTF-8"), "{msg}");
}

/// A SigLIP model through the API: the pooling head is a layer (and the default), every text
/// position is a token, and there is no CLS column (`cls` null) in explanations and spans.
#[tokio::test]
async fn siglip_has_no_cls_and_a_head_layer() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/siglip-a");
    let ex = Explainer::open(ModelSource::Dir(dir), &Device::Cpu).unwrap();
    let state = Arc::new(
        AppState::new(
            ex,
            "siglip-a".into(),
            examples::embedded().unwrap(),
            Config::default(),
        )
        .unwrap(),
    );
    let app = router(state.clone());
    let info = ok(call(&app, "GET", "/api/info", Body::empty()).await);
    assert_eq!(
        (info["image_layers"].clone(), info["pooling_head"].clone()),
        (json!(2), json!(true))
    );
    assert_eq!(info["defaults"]["image_layer"], 2);
    let image = state.examples[0].image.clone();
    let v = ok(post_json(
        &app,
        "/api/explain",
        json!({"image": image, "captions": ["a cat"]}),
    )
    .await);
    let e = &v["explanations"][0];
    assert_eq!(e["tokens"].as_array().unwrap().len(), 16);
    assert_eq!(e["heatmap"]["cls"], Value::Null);
    assert_eq!(e["heatmap"]["patches"].as_array().unwrap().len(), 16);
    let span = json!({"explanation": e["id"], "start": 0, "end": 2});
    let s = ok(post_json(&app, "/api/span", span).await);
    assert_eq!(s["cls"], Value::Null);
}
