//! Security headers on every HTTP answer of the portal: a Content Security
//! Policy that allows no inline script and no framing, no MIME sniffing,
//! and no referrer sent to other sites.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// The policy: everything from this origin only, no inline script, styles
/// inline allowed (the one small stylesheet is in the page), no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Adds the headers to `response`.
pub async fn add(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CONTENT_SECURITY_POLICY),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}
