//! API errors: an HTTP status and a human-readable message, sent as `{"error": message}` so
//! the page can show every failure the same way.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds to wait before retrying, sent as `Retry-After` (503 only).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
        }
    }
    /// 400: a value the request may not have.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 403: a request from another site (see [`crate::guard`]).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    /// 404: an image or explanation id the server does not hold (or no longer holds).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 413: an upload over the size limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }
    /// 415: an upload that is not a decodable image.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }
    /// 401: a server started with a token, asked without it (see [`crate::guard`]).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    /// 503: the job queue is full (see [`crate::jobs`]); try again after `retry_after_s`.
    pub fn busy(message: impl Into<String>, retry_after_s: u32) -> Self {
        ApiError {
            retry_after_s: Some(retry_after_s),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
    /// 500: the server's fault (a failed computation, a panic in a worker).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// Library errors about the request's values (captions, spans, boxes, settings) are the
/// client's; anything else (tensor failures, I/O) is the server's.
impl From<pairlens::Error> for ApiError {
    fn from(e: pairlens::Error) -> Self {
        match e {
            pairlens::Error::InvalidArgument(_) | pairlens::Error::Caption { .. } => {
                Self::bad_request(e.to_string())
            }
            pairlens::Error::Image { .. } => Self::unsupported(e.to_string()),
            pairlens::Error::ImageTooLarge { .. } => Self::too_large(e.to_string()),
            // Only a job whose client has gone is cancelled: nobody reads this.
            pairlens::Error::Cancelled => Self::new(StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        response
    }
}
