//! The JSON API under `/api/` (contract: `../API.md`, summarised on each handler).
//! Every error is `{"error": …}` with 400/401/403/404/405/413/415/503, including malformed JSON.

use std::path::Path;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pairlens::attribution::ReferenceTerms;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::{AppState, CachedExplanation, MAX_CAPTIONS, MAX_CAPTION_CHARS};

type Shared = State<Arc<AppState>>;

/// `Json` whose rejections (bad syntax, wrong types, unknown fields, empty body) are 400s with a
/// JSON body (the Content-Type is checked before, by [`crate::guard`]).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "empty request body: expected a JSON object",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("bad JSON request: {e}")))
    }
}

fn body_rejection(r: BytesRejection) -> ApiError {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("request body too large: {}", r.body_text()))
    } else {
        ApiError::new(r.status(), r.body_text())
    }
}

// ---- GET /api/info -------------------------------------------------------------------------

#[derive(Serialize)]
pub struct Info {
    pub model: String,
    pub text_layers: usize,
    pub image_layers: usize,
    /// The image tower ends in an attention-pooling head (SigLIP): its input, layer
    /// `image_layers`, is a split point too (and the default).
    pub pooling_head: bool,
    pub image_size: usize,
    pub patch: usize,
    pub grid: [usize; 2],
    pub max_upload_bytes: usize,
    pub defaults: SettingsOut,
    pub examples: Vec<ExampleOut>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SettingsOut {
    pub text_layer: usize,
    pub image_layer: usize,
    pub steps: usize,
    pub mode: String,
}

#[derive(Serialize)]
pub struct ExampleOut {
    pub name: String,
    pub caption: String,
    pub image: String,
}

pub async fn info(State(state): Shared) -> Json<Info> {
    let cfg = state.explainer.model().config();
    let d = state
        .settings(None, None, None, None)
        .expect("the model's default settings are valid");
    let (rows, cols) = cfg.vision.grid();
    Json(Info {
        model: state.model_name.clone(),
        text_layers: cfg.text.transformer.layers,
        image_layers: cfg.vision.transformer.layers,
        pooling_head: !cfg.vision.class_token(),
        image_size: cfg.vision.image_size.0,
        patch: cfg.vision.patch_size,
        grid: [rows, cols],
        max_upload_bytes: state.config.max_upload_bytes,
        defaults: SettingsOut {
            text_layer: d.text_layer,
            image_layer: d.image_layer,
            steps: d.steps,
            mode: d.mode.to_string(),
        },
        examples: state
            .examples
            .iter()
            .map(|e| ExampleOut {
                name: e.name.clone(),
                caption: e.caption.clone(),
                image: e.image.clone(),
            })
            .collect(),
    })
}

// ---- POST /api/images, GET /api/images/{id} ------------------------------------------------

#[derive(Serialize, Deserialize, Debug)]
pub struct Uploaded {
    pub image: String,
    pub width: usize,
    pub height: usize,
}

/// Raw image bytes in the body. Decoding is a job on the queue (503 when it is full).
pub async fn upload(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Uploaded>, ApiError> {
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "upload too large: the limit is {} bytes",
                state.config.max_upload_bytes
            ))
        } else {
            body_rejection(r)
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "empty upload: send the image file's bytes as the request body",
        ));
    }
    let s = state.clone();
    let img = state
        .jobs
        .run(move |_| s.prepare_image(&bytes, Path::new("upload")))
        .await?;
    let img = state.add_upload(img);
    Ok(Json(Uploaded {
        image: img.id.clone(),
        width: img.width,
        height: img.height,
    }))
}

pub async fn image(
    State(state): Shared,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    // A path that does not decode (`%ff`) is a JSON 400 like every other error.
    let axum::extract::Path(id) = id.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let img = state
        .image(&id)
        .ok_or_else(|| ApiError::not_found(format!("unknown image {id:?}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        img.png.clone(),
    )
        .into_response())
}

// ---- POST /api/explain ---------------------------------------------------------------------

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    pub image: String,
    pub captions: Vec<String>,
    pub text_layer: Option<usize>,
    pub image_layer: Option<usize>,
    pub steps: Option<usize>,
    pub mode: Option<String>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ExplainResponse {
    pub settings: SettingsOut,
    pub explanations: Vec<ExplanationOut>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HeatmapOut {
    /// The CLS column; `null` for an image tower without a class token (SigLIP).
    pub cls: Option<f32>,
    pub patches: Vec<f32>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReferenceTermsOut {
    pub text_vs_image_reference: f32,
    pub text_reference_vs_image: f32,
    pub reference_vs_reference: f32,
}

impl From<ReferenceTerms> for ReferenceTermsOut {
    fn from(r: ReferenceTerms) -> Self {
        ReferenceTermsOut {
            text_vs_image_reference: r.text_vs_image_reference,
            text_reference_vs_image: r.text_reference_vs_image,
            reference_vs_reference: r.reference_vs_reference,
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
pub struct ExplanationOut {
    pub id: String,
    pub caption: String,
    pub tokens: Vec<String>,
    pub score: f32,
    pub sum: f32,
    pub residual: f32,
    pub reference_terms: ReferenceTermsOut,
    pub grid: [usize; 2],
    pub token_totals: Vec<f32>,
    pub heatmap: HeatmapOut,
    /// Words of the caption the vocabulary lacks: the model read `<unk>` for each.
    #[serde(default)]
    pub unknown_words: Vec<String>,
    pub cached: bool,
    pub seconds: f64,
}

fn explanation_out(
    e: &CachedExplanation,
    cached: bool,
    unknown_words: Vec<String>,
) -> ExplanationOut {
    let x = &e.explanation;
    ExplanationOut {
        id: e.id.clone(),
        caption: e.caption.clone(),
        tokens: x.tokens.clone(),
        score: x.score,
        sum: e.sum,
        residual: x.residual,
        reference_terms: x.reference_terms.into(),
        grid: [x.grid.0, x.grid.1],
        token_totals: e.token_totals.clone(),
        heatmap: HeatmapOut {
            cls: e.whole.cls,
            patches: e.whole.patches.clone(),
        },
        unknown_words,
        cached,
        seconds: e.seconds,
    }
}

pub async fn explain(
    State(state): Shared,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> Result<Json<ExplainResponse>, ApiError> {
    if req.captions.is_empty() {
        return Err(ApiError::bad_request("captions: give at least one caption"));
    }
    if req.captions.len() > MAX_CAPTIONS {
        return Err(ApiError::bad_request(format!(
            "{} captions: at most {MAX_CAPTIONS} per request",
            req.captions.len()
        )));
    }
    for c in &req.captions {
        if c.trim().is_empty() {
            return Err(ApiError::bad_request(
                "empty caption: every caption needs some text",
            ));
        }
        if c.chars().count() > MAX_CAPTION_CHARS {
            return Err(ApiError::bad_request(format!(
                "a caption of {} characters: at most {MAX_CAPTION_CHARS}",
                c.chars().count()
            )));
        }
    }
    let settings = state.settings(
        req.text_layer,
        req.image_layer,
        req.steps,
        req.mode.as_deref(),
    )?;
    let image = state.image(&req.image).ok_or_else(|| {
        ApiError::not_found(format!("unknown image {:?}: upload it again", req.image))
    })?;
    let settings_out = SettingsOut {
        text_layer: settings.text_layer,
        image_layer: settings.image_layer,
        steps: settings.steps,
        mode: settings.mode.to_string(),
    };
    let unknown = req
        .captions
        .iter()
        .map(|c| state.explainer.unknown_words(c))
        .collect::<pairlens::Result<Vec<_>>>()?;
    let explained = state.explain(image, &req.captions, settings).await?;
    Ok(Json(ExplainResponse {
        settings: settings_out,
        explanations: explained
            .iter()
            .zip(unknown)
            .map(|(e, words)| explanation_out(&e.entry, e.cached, words))
            .collect(),
    }))
}

fn lookup(state: &AppState, id: &str) -> Result<Arc<CachedExplanation>, ApiError> {
    state.explanation(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown explanation {id:?} (it may have left the cache: explain again)"
        ))
    })
}

// ---- POST /api/span ------------------------------------------------------------------------

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct SpanRequest {
    pub explanation: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct SpanResponse {
    pub cls: Option<f32>,
    pub patches: Vec<f32>,
    pub grid: [usize; 2],
}

pub async fn span(
    State(state): Shared,
    ApiJson(req): ApiJson<SpanRequest>,
) -> Result<Json<SpanResponse>, ApiError> {
    let e = lookup(&state, &req.explanation)?;
    let h = e.explanation.span_heatmap(req.start, req.end)?;
    Ok(Json(SpanResponse {
        cls: h.cls,
        patches: h.patches,
        grid: [h.grid.0, h.grid.1],
    }))
}

// ---- POST /api/box -------------------------------------------------------------------------

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct BoxRequest {
    pub explanation: String,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

#[derive(Serialize, Deserialize, Debug)]
pub struct BoxResponse {
    pub scores: Vec<f32>,
    pub tokens: Vec<String>,
}

/// Every token's interaction with a box in original-image pixels, as `pairlens explain --box`
/// computes it.
pub fn box_scores(e: &CachedExplanation, b: [f32; 4]) -> Result<Vec<f32>, ApiError> {
    Ok(e.explanation.box_scores(&e.geometry, b)?)
}

pub async fn bbox(
    State(state): Shared,
    ApiJson(req): ApiJson<BoxRequest>,
) -> Result<Json<BoxResponse>, ApiError> {
    let e = lookup(&state, &req.explanation)?;
    let scores = box_scores(&e, req.bbox)?;
    Ok(Json(BoxResponse {
        scores,
        tokens: e.explanation.tokens.clone(),
    }))
}

/// Unknown paths: a JSON 404 like every other error.
/// A known path with another method (`GET /api/explain`): 405, as JSON like every error.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {} (see API.md)", uri.path()),
    )
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such page or endpoint: {}", uri.path()))
}
