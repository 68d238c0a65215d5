//! Who is asking, and may they: every HTTP request but the sign-in page and
//! the health endpoints needs a signed-in user, by session cookie (the web
//! app) or personal API token (`Authorization: Bearer`, the JSON API and
//! scripts); the mesh's operations pages need the admin role. State-changing
//! requests from other sites are refused first ([`csrf`]).
//!
//! # Layout
//!
//! - [`csrf`]: the cross-origin check on state-changing requests.
//! - [`headers`]: security headers on every answer.
//! - [`login`]: the sign-in and sign-out pages.

pub mod csrf;
pub mod headers;
pub mod login;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use tokio::time::Instant;

use crate::portal::AppState;
use crate::portal::accounts::store::SecretKind;
use crate::portal::accounts::throttle::LoginThrottle;
use crate::portal::accounts::{AccountStore, User};
use crate::portal::error::PortalError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "gradebook_session";
/// How long a checked secret is trusted without asking the database again
/// (a sign-out on another portal takes at most this long to reach this one).
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Secrets remembered at most.
const CACHE_MAX: usize = 10_000;

/// The portal's accounts, failed-login limits and a short-lived cache of
/// checked secrets.
#[derive(Debug)]
pub struct Auth {
    store: Arc<AccountStore>,
    throttle: Mutex<LoginThrottle>,
    checked: Mutex<HashMap<String, (Option<User>, Instant)>>,
}

impl Auth {
    /// Authentication over `store`.
    pub fn new(store: Arc<AccountStore>) -> Arc<Self> {
        Arc::new(Auth {
            store,
            throttle: Mutex::default(),
            checked: Mutex::default(),
        })
    }

    /// The accounts.
    pub fn store(&self) -> &Arc<AccountStore> {
        &self.store
    }

    /// The failed-login limits.
    pub fn throttle(&self) -> std::sync::MutexGuard<'_, LoginThrottle> {
        self.throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<User>, Instant)>> {
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The user `secret` (of `kind`) belongs to, if any.
    pub async fn user_for(
        &self,
        secret: &str,
        kind: SecretKind,
    ) -> Result<Option<User>, PortalError> {
        let key = format!("{kind:?}:{secret}");
        let now = Instant::now();
        if let Some((user, at)) = self.cache().get(&key)
            && now.duration_since(*at) < CACHE_TTL
        {
            return Ok(user.clone());
        }
        let store = self.store.clone();
        let owned = secret.to_owned();
        let user = tokio::task::spawn_blocking(move || {
            store.authenticate(&owned, kind, SystemTime::now())
        })
        .await
        .map_err(|e| PortalError::unavailable(format!("the accounts database: {e}")))?
        .map_err(|e| PortalError::unavailable(e.to_string()))?;
        let mut cache = self.cache();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (user.clone(), now));
        Ok(user)
    }

    /// Forgets a secret at once (signed out).
    pub fn forget(&self, secret: &str) {
        let mut cache = self.cache();
        cache.remove(&format!("{:?}:{secret}", SecretKind::Session));
        cache.remove(&format!("{:?}:{secret}", SecretKind::Token));
    }
}

/// What a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: sign-in, health, static files.
    Public,
    /// A signed-in user.
    User,
    /// A signed-in admin.
    Admin,
}

fn access_of(path: &str) -> Access {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if ["/login", "/healthz", "/readyz", "/static"]
        .iter()
        .any(|p| under(p))
    {
        Access::Public
    } else if [
        "/services",
        "/logs",
        "/traces",
        "/api/services",
        "/api/logs",
        "/api/traces",
    ]
    .iter()
    .any(|p| under(p))
    {
        Access::Admin
    } else {
        Access::User
    }
}

/// The session secret in a request's cookies, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// A refusal in the request's language: JSON under `/api`, a page elsewhere.
fn refuse(api: bool, error: PortalError) -> Response {
    let unauthenticated = error.status == StatusCode::UNAUTHORIZED;
    let mut response = if api {
        error.into_response()
    } else {
        crate::portal::pages::error_page(&error)
    };
    if unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The middleware: refuses cross-site writes, finds the user, checks the
/// role, and hands the user to the handler as a request extension.
pub async fn authorize(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let api = path.starts_with("/api/");
    if let Err(csrf::CrossOrigin(why)) =
        csrf::check(request.method(), request.uri(), request.headers())
    {
        return refuse(api, PortalError::forbidden(why));
    }
    let access = access_of(&path);
    if access == Access::Public {
        return next.run(request).await;
    }
    let found = match (bearer(request.headers()), session_cookie(request.headers())) {
        (Some(token), _) => app.auth.user_for(token, SecretKind::Token).await,
        (None, Some(session)) => app.auth.user_for(session, SecretKind::Session).await,
        (None, None) => Ok(None),
    };
    let user = match found {
        Ok(Some(user)) => user,
        Ok(None) if api => {
            return refuse(
                true,
                PortalError::unauthenticated(
                    "sign in, or send a personal API token as Authorization: Bearer TOKEN (gradebook users token NAME)",
                ),
            );
        }
        Ok(None) => {
            let next_page = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".to_owned());
            return Redirect::to(&login::login_url(&next_page)).into_response();
        }
        Err(error) => return refuse(api, error),
    };
    if access == Access::Admin && !user.is_admin() {
        return refuse(
            api,
            PortalError::forbidden(format!("{path} is for admins; {} is a teacher", user.name)),
        );
    }
    request.extensions_mut().insert(user);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_need_what_they_show() {
        assert_eq!(access_of("/login"), Access::Public);
        assert_eq!(access_of("/healthz"), Access::Public);
        assert_eq!(access_of("/static/live.js"), Access::Public);
        assert_eq!(access_of("/loginx"), Access::User);
        assert_eq!(access_of("/students"), Access::User);
        assert_eq!(access_of("/api/students/1"), Access::User);
        assert_eq!(access_of("/services"), Access::Admin);
        assert_eq!(access_of("/logs"), Access::Admin);
        assert_eq!(access_of("/api/services"), Access::Admin);
    }

    #[test]
    fn secrets_are_read_from_cookies_and_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; gradebook_session=abc; b=2".parse().unwrap(),
        );
        headers.insert(header::AUTHORIZATION, "Bearer tok".parse().unwrap());
        assert_eq!(session_cookie(&headers), Some("abc"));
        assert_eq!(bearer(&headers), Some("tok"));
        headers.insert(header::AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
