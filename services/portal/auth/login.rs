//! The sign-in and sign-out pages. A sign-in checks the failed-login limits
//! first, then the password (on the blocking pool: Argon2id takes tens of
//! milliseconds), then starts a session: a random secret in an HTTP-only,
//! `SameSite=Lax` cookie (`Secure` over HTTPS) whose digest the store keeps.

use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::html;
use serde::Deserialize;
use tokio::time::Instant;

use crate::mesh::tls::Peer;
use crate::portal::AppState;
use crate::portal::accounts::store::{SESSION_LIFETIME, SecretKind};
use crate::portal::auth::{SESSION_COOKIE, session_cookie};
use crate::portal::error::{PortalError, with_retry_after};
use crate::portal::pages::{bare_layout, error_page};

/// `?next=` of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// The sign-in page's URL, returning to `next` afterwards.
pub fn login_url(next: &str) -> String {
    let encoded: String = next
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("/login?next={encoded}")
}

/// Where to go after signing in: a path on this site only.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next
    } else {
        "/students"
    }
}

fn login_page(next: &str, name: &str, error: Option<&str>) -> maud::Markup {
    bare_layout(
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(safe_next(next));
                label for="name" { "Name" }
                input id="name" name="name" autocomplete="username" required value=(name);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

async fn show(Query(query): Query<NextQuery>) -> Response {
    Html(login_page(query.next.as_deref().unwrap_or("/students"), "", None).into_string())
        .into_response()
}

fn session_cookie_header(secret: &str, encrypted: bool) -> HeaderValue {
    let secure = if encrypted { "; Secure" } else { "" };
    let value = format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        SESSION_LIFETIME.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn sign_in(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let address = peer.as_ref().and_then(|p| p.remote).map(|a| a.ip());
    let encrypted = peer.as_ref().is_some_and(|p| p.encrypted);
    if let Err(wait) = app
        .auth
        .throttle()
        .check(&form.name, address, Instant::now())
    {
        let error = PortalError::too_many(format!(
            "too many failed sign-ins: try again in {} s",
            wait.as_secs()
        ));
        let mut response = error_page(&error);
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return response;
    }
    let store = app.auth.store().clone();
    let (name, password) = (form.name.clone(), form.password);
    let checked = tokio::task::spawn_blocking(move || {
        let user = store.verify_password(&name, &password)?;
        user.map(|user| {
            store
                .new_secret(&user.name, SecretKind::Session, SystemTime::now())
                .map(|secret| (user, secret))
        })
        .transpose()
    })
    .await;
    match checked {
        Ok(Ok(Some((user, secret)))) => {
            app.auth.throttle().succeeded(&user.name);
            tracing::info!(user = %user.name, "signed in");
            let mut response = Redirect::to(safe_next(&form.next)).into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie_header(&secret, encrypted),
            );
            response
        }
        Ok(Ok(None)) => {
            app.auth
                .throttle()
                .failed(&form.name, address, Instant::now());
            tracing::warn!(user = %form.name, ?address, "failed sign-in");
            let page = login_page(&form.next, &form.name, Some("Wrong name or password."));
            (StatusCode::UNAUTHORIZED, Html(page.into_string())).into_response()
        }
        Ok(Err(error)) => error_page(&PortalError::unavailable(error.to_string())),
        Err(error) => with_retry_after(
            StatusCode::SERVICE_UNAVAILABLE,
            error_page(&PortalError::unavailable(error.to_string())),
        ),
    }
}

async fn sign_out(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(secret) = session_cookie(&headers) {
        app.auth.forget(secret);
        let store = app.auth.store().clone();
        let secret = secret.to_owned();
        let _ = tokio::task::spawn_blocking(move || store.revoke(&secret)).await;
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("gradebook_session=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    response
}

/// `/login` and `/logout`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(show).post(sign_in))
        .route("/logout", post(sign_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/students/1"), "/students/1");
        assert_eq!(safe_next("//evil.example"), "/students");
        assert_eq!(safe_next("https://evil.example"), "/students");
        assert_eq!(
            login_url("/students?q=a b"),
            "/login?next=/students%3Fq%3Da%20b"
        );
    }
}
