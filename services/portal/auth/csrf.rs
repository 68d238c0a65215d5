//! Cross-site request forgery protection, the way Go's
//! `net/http.CrossOriginProtection` does it (no tokens to thread through
//! every form): a state-changing request is refused when the browser says
//! it comes from another site (`Sec-Fetch-Site`), or, from browsers that do
//! not send that, when its `Origin` is not this host. Requests from
//! non-browsers (neither header) pass: they carry no ambient cookies, and
//! a bearer token is not sent by a forged form. Session cookies are also
//! `SameSite=Lax`, so they are not sent on cross-site posts at all.

use axum::http::{HeaderMap, Method, Uri, header};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossOrigin(pub String);

/// Checks one request.
pub fn check(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), CrossOrigin> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") | Some("none") => return Ok(()),
        Some(site) => {
            return Err(CrossOrigin(format!(
                "a {site} request may not change anything here"
            )));
        }
        None => {}
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(CrossOrigin(format!(
            "a request from {origin} may not change anything here"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn cross_site_posts_are_refused_and_the_rest_pass() {
        let uri: Uri = "/students".parse().unwrap();
        let post = Method::POST;
        for (pairs, allowed) in [
            (vec![("sec-fetch-site", "same-origin")], true),
            (vec![("sec-fetch-site", "none")], true),
            (vec![("sec-fetch-site", "cross-site")], false),
            (vec![("sec-fetch-site", "same-site")], false),
            (
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080"),
                ],
                true,
            ),
            (
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
            (vec![("host", "localhost:8080"), ("origin", "null")], false),
            (vec![], true),
        ] {
            assert_eq!(
                check(&post, &uri, &headers(&pairs)).is_ok(),
                allowed,
                "{pairs:?}"
            );
        }
        let evil = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(check(&Method::GET, &uri, &evil).is_ok(), "reads are safe");
    }
}
