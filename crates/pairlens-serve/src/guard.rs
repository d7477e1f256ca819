//! What keeps other web pages from driving the server. A page the user visits elsewhere can
//! make the browser send requests to `http://127.0.0.1:7878`; the browser sends without asking
//! ("simple" requests) only GETs and POSTs whose `Content-Type` is absent or one of three form
//! types, and it names the site it believes it is talking to in `Host`. So:
//!
//! - every request's `Host`, when present, must name this server: a loopback name, or, when
//!   it listens beyond loopback, an IP address (a page that rebinds its own domain to
//!   127.0.0.1 still sends its domain, never an address);
//! - every POST must carry the content type the page's own script sends (`application/json`,
//!   or for uploads `application/octet-stream` or an image type), which no simple request can,
//!   so a foreign page's browser first asks permission (a CORS preflight) and this server never
//!   grants it.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Which `Host` values name this server.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hosts {
    /// Whether any IP address is accepted besides the loopback names: set when the server
    /// listens beyond loopback, where clients reach it by an address of the machine.
    pub any_address: bool,
}

impl Hosts {
    /// Whether `host` (a `Host` header's value, with or without port) names this server.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        let address = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok();
        name == "localhost"
            || name.ends_with(".localhost")
            || address.is_some_and(|ip| ip.is_loopback() || self.any_address)
    }
}

/// The host part of a `Host` value: `[::1]:80` → `[::1]`, `localhost:7878` → `localhost`.
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        // An IPv6 literal's colons are inside the brackets.
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

/// Refuses requests whose `Host` is another site's (403) and POSTs without the content type
/// the page sends (415).
pub async fn guard(State(hosts): State<Hosts>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !hosts.allows(host) {
            return ApiError::forbidden(format!(
                "Host {host:?} is not this server: requests must name it as localhost, \
                 127.0.0.1 or the address it listens on"
            ))
            .into_response();
        }
    }
    if req.method() == Method::POST {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let upload = req.uri().path() == "/api/images";
        let accepted = match (upload, content_type.as_deref()) {
            (false, Some("application/json")) => true,
            (true, Some("application/octet-stream")) => true,
            (true, Some(t)) => t.starts_with("image/"),
            _ => false,
        };
        if !accepted {
            let expected = match upload {
                true => "application/octet-stream (or the image's own type)",
                false => "application/json",
            };
            let got = content_type.as_deref().unwrap_or("none");
            return ApiError::unsupported(format!(
                "Content-Type {got:?}: this endpoint takes {expected}"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let local = Hosts::default();
        for ok in [
            "localhost",
            "localhost:7878",
            "LOCALHOST:1",
            "127.0.0.1:7878",
            "127.1.2.3",
            "[::1]:7878",
            "[::1]",
            "app.localhost:80",
        ] {
            assert!(local.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7878",
            "10.0.0.5:7878",
            "",
            "localhost.evil.com",
        ] {
            assert!(!local.allows(bad), "{bad}");
        }
        let lan = Hosts { any_address: true };
        assert!(
            lan.allows("10.0.0.5:7878") && lan.allows("[fe80::1]:80") && lan.allows("localhost")
        );
        assert!(!lan.allows("evil.example:7878"));
    }
}
