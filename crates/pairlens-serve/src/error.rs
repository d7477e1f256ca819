//! API errors: an HTTP status and a human-readable message, sent as `{"error": message}` so
//! the page can show every failure the same way.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
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
            _ => Self::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
