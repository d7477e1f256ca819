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
//!   grants it;
//! - when the server has a token (required when it listens beyond loopback, where other people
//!   and machines can reach it), every request must show it: `Authorization: Bearer TOKEN`, a
//!   `?token=TOKEN` query (the URL `pairlens serve` prints; opening it sets a same-site cookie, so
//!   the page's own requests carry it), or that cookie.

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Which requests reach the API.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Which `Host` values name this server.
    pub hosts: Hosts,
    /// The secret every request must show, if any.
    pub token: Option<String>,
}

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

/// A fresh token: 128 random bits in hex, from the operating system's generator.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The cookie that carries the token, named after it so that servers with different tokens on
/// one host (cookies ignore ports) do not overwrite each other's.
fn cookie_name(token: &str) -> String {
    use sha2::{Digest, Sha256};
    let tag: String = Sha256::digest(token.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("pairlens-token-{tag}")
}

/// Equal strings, in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// How the request shows the token, if it does.
enum Shown {
    /// In the `Authorization` header or the cookie.
    Header,
    /// In the query: the response sets the cookie.
    Query,
}

fn shows_token(req: &Request, token: &str) -> Option<Shown> {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| same_secret(t.trim(), token)) {
        return Some(Shown::Header);
    }
    let name = cookie_name(token);
    let in_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(k, v)| k == name && same_secret(v, token));
    if in_cookie {
        return Some(Shown::Header);
    }
    let in_query = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .any(|(k, v)| k == "token" && same_secret(v, token));
    in_query.then_some(Shown::Query)
}

/// Refuses requests whose `Host` is another site's (403), requests without the token when
/// there is one (401), and POSTs without the content type the page sends (415).
pub async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("");
        if !access.hosts.allows(host) {
            return ApiError::forbidden(format!(
                "Host {host:?} is not this server: requests must name it as localhost, \
                 127.0.0.1 or the address it listens on"
            ))
            .into_response();
        }
    }
    let mut set_cookie = None;
    if let Some(token) = &access.token {
        match shows_token(&req, token) {
            None => {
                return ApiError::unauthorized(
                    "this server needs its token: open the URL `pairlens serve` printed \
                     (…/?token=…), or send the header `Authorization: Bearer TOKEN`",
                )
                .into_response()
            }
            Some(Shown::Query) => {
                set_cookie = Some(format!(
                    "{}={token}; Path=/; HttpOnly; SameSite=Strict",
                    cookie_name(token)
                ))
            }
            Some(Shown::Header) => {}
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
    let mut response = next.run(req).await;
    if let Some(cookie) = set_cookie.and_then(|c| header::HeaderValue::try_from(c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
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
