//! The bad-input matrix of the viewer's JSON API, in process (the router on the built-in model,
//! requests sent with tower's `oneshot`, no socket): every case is one request that must be
//! refused with the expected 4xx status and a JSON body `{"error": "…"}` whose message names the
//! problem, in under 4 KB (the input is not echoed whole), without a panic (each request runs in
//! its own task, so a panicking handler is reported as that case's failure). Peak memory per
//! request is not measurable in process; the command-line matrix
//! (`crates/pairlens-cli/tests/bad_input.rs`) bounds it for the same decoding and loading code.
//!
//! Placeholders in URIs and bodies: `{img}` is the id of the first example image, `{exp}` the
//! id of an explanation of it with the caption "a bag" (4 tokens: `<sot> a bag <eot>`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use pairlens::{Device, Explainer, ModelSource};
use pairlens_serve::{examples, router, AppState, Config};
use serde_json::Value;
use tower::ServiceExt;

/// The upload limit of the server under test (the images below fit in it).
const MAX_UPLOAD: usize = 512 << 10;
const MAX_BODY: usize = 4096;

/// One request of the matrix and what it must get back.
struct Case {
    name: &'static str,
    method: &'static str,
    uri: String,
    content_type: Option<&'static str>,
    host: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    want: Vec<&'static str>,
}

impl Case {
    /// Send with this `Content-Type` instead (None: no header).
    fn content_type(mut self, t: Option<&'static str>) -> Self {
        self.content_type = t;
        self
    }
    fn host(mut self, h: &'static str) -> Self {
        self.host = Some(h);
        self
    }
    fn with_method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
}

fn req(method: &'static str, uri: &str, ctype: Option<&'static str>, body: Vec<u8>) -> Case {
    Case {
        name: "",
        method,
        uri: uri.into(),
        content_type: ctype,
        host: None,
        body,
        status: 0,
        want: Vec::new(),
    }
}

/// A JSON POST (as the page sends it).
fn post(uri: &str, body: impl Into<Vec<u8>>) -> Case {
    req("POST", uri, Some("application/json"), body.into())
}

/// An upload to `/api/images`.
fn upload(bytes: Vec<u8>) -> Case {
    req(
        "POST",
        "/api/images",
        Some("application/octet-stream"),
        bytes,
    )
}

fn get(uri: &str) -> Case {
    req("GET", uri, None, Vec::new())
}

/// A row of the table: `name`, the request, the expected status and message pieces.
fn c(name: &'static str, r: Case, status: u16, want: &[&'static str]) -> Case {
    Case {
        name,
        status,
        want: want.to_vec(),
        ..r
    }
}

// The same hand-built images as the command-line matrix: a PNG whose header may lie about its
// size (every CRC correct), a real JPEG whose frame header may lie.

fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn zlib_stored(raw: &[u8]) -> Vec<u8> {
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push((i + 1 == blocks.len()) as u8);
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    if raw.is_empty() {
        z.extend([1, 0, 0, 0xFF, 0xFF]);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend(((b << 16) | a).to_be_bytes());
    z
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    c.extend(crc32(&c[4..]).to_be_bytes());
    c
}

/// An 8-bit RGB PNG whose IHDR says `w`×`h`, with `rows` rows of pixel data.
fn png(w: u32, h: u32, rows: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let row: Vec<u8> = std::iter::once(0)
        .chain(std::iter::repeat_n(128, 3 * w as usize))
        .collect();
    let mut f = b"\x89PNG\r\n\x1a\n".to_vec();
    f.extend(png_chunk(b"IHDR", &ihdr));
    f.extend(png_chunk(b"IDAT", &zlib_stored(&row.repeat(rows as usize))));
    f.extend(png_chunk(b"IEND", &[]));
    f
}

/// A WebP file of one VP8X chunk whose canvas is `w`×`h` (and no image data).
fn webp_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut body = b"WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00".to_vec();
    body.extend(&(w - 1).to_le_bytes()[..3]);
    body.extend(&(h - 1).to_le_bytes()[..3]);
    let mut f = b"RIFF".to_vec();
    f.extend((body.len() as u32).to_le_bytes());
    f.extend(body);
    f
}

/// A real 16×16 JPEG whose SOF0 says `w`×`h`.
fn jpeg_claiming(w: u16, h: u16) -> Vec<u8> {
    let rgb: Vec<u8> = (0..16 * 16)
        .flat_map(|i| [i as u8, 255 - i as u8, 90])
        .collect();
    let mut j = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut j, 90)
        .encode(&rgb, 16, 16, image::ExtendedColorType::Rgb8)
        .unwrap();
    let sof = j.windows(2).position(|m| m == [0xFF, 0xC0]).expect("SOF0");
    j[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    j[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    j
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let explain = |fields: &str| post("/api/explain", format!(r#"{{"image": "{{img}}", "captions": ["a bag"]{fields}}}"#));
    let span = |fields: &str| post("/api/span", format!(r#"{{"explanation": "{{exp}}"{fields}}}"#));
    let bbox = |b: &str| post("/api/box", format!(r#"{{"explanation": "{{exp}}", "box": {b}}}"#));
    let nested = "[".repeat(100_000);
    let words = "bag ".repeat(100);
    let huge = "x".repeat(10_000);
    let nine = ["\"a bag\""; 9].join(", ");
    vec![
        // --- POST /api/explain: the body is not the JSON object asked for ---
        c("explain: malformed JSON", post("/api/explain", r#"{"image": "#), 400, &["bad JSON"]),
        c("explain: empty body", post("/api/explain", ""), 400, &["empty request body"]),
        c("explain: a JSON array", post("/api/explain", "[1, 2, 3]"), 400, &["bad JSON", "invalid type"]),
        c("explain: not UTF-8", post("/api/explain", b"{\"image\": \"\xff\xfe\"}".to_vec()), 400, &["bad JSON"]),
        c("explain: nested 100000 deep", post("/api/explain", nested), 400, &["bad JSON"]),
        c("explain: trailing garbage", post("/api/explain", r#"{"image": "{img}", "captions": ["a bag"]} xyz"#), 400, &["bad JSON", "trailing characters"]),
        c("explain: duplicate field", post("/api/explain", r#"{"image": "{img}", "image": "{img}", "captions": ["a bag"]}"#), 400, &["duplicate field `image`"]),
        c("explain: lone surrogate in a caption", post("/api/explain", r#"{"image": "{img}", "captions": ["a \ud800 bag"]}"#), 400, &["bad JSON"]),
        c("explain: body over 2 MB", post("/api/explain", format!(r#"{{"image": "{}"}}"#, "x".repeat(3 << 20))), 413, &["too large"]),
        // --- wrong types, missing and unknown fields ---
        c("explain: captions a string", explain(r#", "captions": "a bag""#), 400, &["bad JSON"]),
        c("explain: caption a number", post("/api/explain", r#"{"image": "{img}", "captions": [42]}"#), 400, &["invalid type: integer `42`"]),
        c("explain: steps a word", explain(r#", "steps": "ten""#), 400, &["invalid type", "\"ten\""]),
        c("explain: steps \"NaN\"", explain(r#", "steps": "NaN""#), 400, &["invalid type", "\"NaN\""]),
        c("explain: steps 1e30", explain(r#", "steps": 1e30"#), 400, &["invalid type: floating point"]),
        c("explain: steps 2^64", explain(r#", "steps": 18446744073709551616"#), 400, &["invalid type: floating point"]),
        c("explain: steps -1", explain(r#", "steps": -1"#), 400, &["invalid value: integer `-1`"]),
        c("explain: text_layer null-ish string", explain(r#", "text_layer": "last""#), 400, &["invalid type", "\"last\""]),
        c("explain: missing image", post("/api/explain", r#"{"captions": ["a bag"]}"#), 400, &["missing field `image`"]),
        c("explain: missing captions", post("/api/explain", r#"{"image": "{img}"}"#), 400, &["missing field `captions`"]),
        c("explain: unknown field", explain(r#", "colour": "red""#), 400, &["unknown field `colour`"]),
        // --- values out of range ---
        c("explain: steps 0", explain(r#", "steps": 0"#), 400, &["steps"]),
        c("explain: steps 201", explain(r#", "steps": 201"#), 400, &["at most 200"]),
        c("explain: steps 10^12", explain(r#", "steps": 1000000000000"#), 400, &["at most 200"]),
        c("explain: text_layer 4", explain(r#", "text_layer": 4"#), 400, &["text layer 4 is out of range"]),
        c("explain: image_layer u64::MAX", explain(r#", "image_layer": 18446744073709551615"#), 400, &["image layer 18446744073709551615 is out of range"]),
        c("explain: mode unknown", explain(r#", "mode": "gradcam""#), 400, &["unknown mode", "gradcam"]),
        c("explain: no captions", post("/api/explain", r#"{"image": "{img}", "captions": []}"#), 400, &["at least one caption"]),
        c("explain: blank caption", post("/api/explain", r#"{"image": "{img}", "captions": ["  "]}"#), 400, &["empty caption"]),
        c("explain: 9 captions", post("/api/explain", format!(r#"{{"image": "{{img}}", "captions": [{nine}]}}"#)), 400, &["9 captions", "at most 8"]),
        c("explain: caption of 10000 characters", post("/api/explain", format!(r#"{{"image": "{{img}}", "captions": ["{huge}"]}}"#)), 400, &["10000 characters", "at most 2000"]),
        c("explain: caption of 100 words", post("/api/explain", format!(r#"{{"image": "{{img}}", "captions": ["{words}"]}}"#)), 400, &["context length"]),
        // --- unknown images ---
        c("explain: unknown image", post("/api/explain", r#"{"image": "0123456789abcdef", "captions": ["a bag"]}"#), 404, &["unknown image", "0123456789abcdef"]),
        c("explain: image id a path", post("/api/explain", r#"{"image": "../../etc/passwd", "captions": ["a bag"]}"#), 404, &["unknown image", "../../etc/passwd"]),
        // --- who may ask, and how ---
        c("explain: text/plain", explain("").content_type(Some("text/plain")), 415, &["application/json"]),
        c("explain: form encoded", explain("").content_type(Some("application/x-www-form-urlencoded")), 415, &["application/json"]),
        c("explain: application/jsonx", explain("").content_type(Some("application/jsonx")), 415, &["application/json"]),
        c("explain: no content type", explain("").content_type(None), 415, &["application/json"]),
        c("explain: foreign Host", explain("").host("evil.example:7878"), 403, &["evil.example"]),
        c("info: foreign Host", get("/api/info").host("rebound.example"), 403, &["rebound.example"]),
        c("explain: Host localhost.evil.example", explain("").host("localhost.evil.example"), 403, &["localhost.evil.example"]),
        c("explain: Host 127.0.0.1.nip.io", explain("").host("127.0.0.1.nip.io:7878"), 403, &["127.0.0.1.nip.io"]),
        c("explain: GET", get("/api/explain"), 405, &["GET", "/api/explain"]),
        c("explain: PUT", explain("").content_type(Some("application/json")).with_method("PUT"), 405, &["PUT", "/api/explain"]),
        c("info: POST", post("/api/info", "{}"), 405, &["POST", "/api/info"]),
        c("unknown endpoint", get("/api/nope"), 404, &["/api/nope"]),
        // --- POST /api/span ---
        c("span: unknown explanation", post("/api/span", r#"{"explanation": "0000000000000000", "start": 0, "end": 2}"#), 404, &["unknown explanation"]),
        c("span: end past the tokens", span(r#", "start": 0, "end": 5"#), 400, &["out of range"]),
        c("span: reversed", span(r#", "start": 3, "end": 1"#), 400, &["out of range"]),
        c("span: empty", span(r#", "start": 2, "end": 2"#), 400, &["out of range"]),
        c("span: end u64::MAX", span(r#", "start": 0, "end": 18446744073709551615"#), 400, &["out of range"]),
        c("span: negative start", span(r#", "start": -1, "end": 2"#), 400, &["invalid value: integer `-1`"]),
        c("span: start \"NaN\"", span(r#", "start": "NaN", "end": 2"#), 400, &["invalid type", "\"NaN\""]),
        c("span: start 1e300", span(r#", "start": 1e300, "end": 2"#), 400, &["invalid type: floating point"]),
        c("span: no end", span(r#", "start": 0"#), 400, &["missing field `end`"]),
        // --- POST /api/box ---
        c("box: unknown explanation", post("/api/box", r#"{"explanation": "ffffffffffffffff", "box": [0, 0, 10, 10]}"#), 404, &["unknown explanation"]),
        c("box: three numbers", bbox("[1, 2, 3]"), 400, &["invalid length 3"]),
        c("box: \"NaN\"", bbox(r#"["NaN", 0, 10, 10]"#), 400, &["invalid type", "\"NaN\""]),
        c("box: \"inf\"", bbox(r#"[0, 0, "inf", 10]"#), 400, &["invalid type", "\"inf\""]),
        c("box: null", bbox("[null, 0, 10, 10]"), 400, &["invalid type: null"]),
        c("box: 1e400", bbox("[0, 0, 1e400, 10]"), 400, &["number out of range"]),
        c("box: 1e39 (infinite as f32)", bbox("[0, 0, 1e39, 10]"), 400, &["finite"]),
        c("box: outside the image", bbox("[100, 100, 200, 200]"), 400, &["outside"]),
        c("box: empty", bbox("[5, 5, 5, 9]"), 400, &["empty"]),
        c("box: reversed", bbox("[10, 10, 5, 20]"), 400, &["empty"]),
        // --- POST /api/images (uploads) ---
        c("upload: not an image", upload(b"hello, not an image".to_vec()), 415, &["not a decodable image"]),
        c("upload: empty", upload(Vec::new()), 400, &["empty upload"]),
        c("upload: over the limit", upload(vec![0; MAX_UPLOAD + 1]), 413, &["upload too large", "524288"]),
        c("upload: PNG header says 20000×20000", upload(png(20000, 20000, 1)), 413, &["20000×20000", "megapixels"]),
        c("upload: JPEG SOF says 65000×65000", upload(jpeg_claiming(65000, 65000)), 413, &["65000×65000", "megapixels"]),
        c("upload: 100000×1 PNG (aspect ratio)", upload(png(100_000, 1, 1)), 400, &["100000x1", "aspect ratio"]),
        c("upload: 1×100000 PNG (aspect ratio)", upload(png(1, 100_000, 100_000)), 400, &["1x100000", "aspect ratio"]),
        c("upload: WebP VP8X says 10000×10000, no data", upload(webp_claiming(10000, 10000)), 415, &["WebP"]),
        c("upload: PNG cut short", upload(png(8, 8, 8)[..60].to_vec()), 415, &["PNG"]),
        c("upload: PNG of zero width", upload(png(0, 4, 0)), 415, &["PNG"]),
        c("upload: GIF", upload(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;".to_vec()), 415, &["not a JPEG, PNG or WebP"]),
        c("upload: as application/json", upload(png(4, 4, 4)).content_type(Some("application/json")), 415, &["octet-stream"]),
        c("upload: as text/plain", upload(png(4, 4, 4)).content_type(Some("text/plain")), 415, &["octet-stream"]),
        c("upload: SVG as image/svg+xml", upload(br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>"#.to_vec()).content_type(Some("image/svg+xml")), 415, &["not a decodable image"]),
        // --- GET /api/images/{id} ---
        c("image: unknown id", get("/api/images/0123456789abcdef"), 404, &["unknown image"]),
        c("image: encoded path traversal", get("/api/images/..%2F..%2Fetc%2Fpasswd"), 404, &["unknown image", "../../etc/passwd"]),
        c("image: raw path traversal", get("/api/images/../../etc/passwd"), 404, &["etc/passwd"]),
        c("image: NUL in the id", get("/api/images/%00"), 404, &["unknown image"]),
        c("image: very long id", get(&format!("/api/images/{}", "a".repeat(3000))), 404, &["unknown image"]),
    ]
}

/// What went wrong with one case's reply (empty: refused as it should be).
fn problems(case: &Case, status: u16, content_type: &str, body: &[u8]) -> Vec<String> {
    let mut p = Vec::new();
    if status != case.status {
        p.push(format!("status {status}, expected {}", case.status));
    }
    if !content_type.starts_with("application/json") {
        p.push(format!("content type {content_type:?}"));
    }
    if body.len() >= MAX_BODY {
        p.push(format!("body is {} bytes", body.len()));
    }
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| Some(v.get("error")?.as_str()?.to_string()));
    match msg {
        None => p.push("body is not {\"error\": \"…\"}".into()),
        Some(m) => {
            for w in &case.want {
                if !m.contains(w) {
                    p.push(format!("message lacks {w:?}"));
                }
            }
        }
    }
    p
}

async fn send(app: &Router, req: Request<Body>) -> (u16, String, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ctype, body)
}

fn request(
    method: &str,
    uri: &str,
    ctype: Option<&str>,
    host: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = ctype {
        r = r.header("content-type", t);
    }
    if let Some(h) = host {
        r = r.header("host", h);
    }
    r.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn bad_requests_are_refused_cleanly() {
    let explainer = Explainer::open(ModelSource::Builtin, &Device::Cpu).expect("built-in model");
    let config = Config {
        max_upload_bytes: MAX_UPLOAD,
        ..Config::default()
    };
    let state = AppState::new(
        explainer,
        "built-in".into(),
        examples::embedded().unwrap(),
        config,
    )
    .unwrap();
    let state = Arc::new(state);
    let app = router(state.clone());

    // One explanation to query: "a bag" on the first example (4 tokens).
    let img = state.examples[0].image.clone();
    let body = format!(r#"{{"image": "{img}", "captions": ["a bag"]}}"#);
    let (status, _, reply) = send(
        &app,
        request(
            "POST",
            "/api/explain",
            Some("application/json"),
            None,
            body.into(),
        ),
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let v: Value = serde_json::from_slice(&reply).unwrap();
    let exp = v["explanations"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(v["explanations"][0]["tokens"].as_array().unwrap().len(), 4);

    let cases = cases();
    let mut report = String::new();
    let mut failed = 0;
    for case in &cases {
        let fill = |b: &[u8]| match std::str::from_utf8(b) {
            Ok(s) => s.replace("{img}", &img).replace("{exp}", &exp).into_bytes(),
            Err(_) => b.to_vec(),
        };
        let uri = String::from_utf8(fill(case.uri.as_bytes())).unwrap();
        let req = request(
            case.method,
            &uri,
            case.content_type,
            case.host,
            fill(&case.body),
        );
        // Its own task: a panicking handler fails this case, not the whole test.
        let app = app.clone();
        let p = match tokio::spawn(async move { send(&app, req).await }).await {
            Ok((status, ctype, body)) => {
                let p = problems(case, status, &ctype, &body);
                if !p.is_empty() {
                    let shown: String = String::from_utf8_lossy(&body).chars().take(300).collect();
                    report += &format!(
                        "\n[{}] {} {uri}: {}\n  reply {status}: {shown}\n",
                        case.name,
                        case.method,
                        p.join("; ")
                    );
                }
                p
            }
            Err(e) => {
                report += &format!(
                    "\n[{}] {} {uri}: the handler panicked: {e}\n",
                    case.name, case.method
                );
                vec!["panic".into()]
            }
        };
        failed += !p.is_empty() as usize;
    }
    eprintln!("{} API cases, {failed} failed", cases.len());
    assert!(failed == 0, "{failed} of {} cases:{report}", cases.len());
}
