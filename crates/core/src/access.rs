//! Who may call which route.
//!
//! Every route is added through [`Routes::add`](crate::routes::Routes::add) with the
//! access it needs, so the table of permissions is the list of routes: [`authorize`]
//! looks a request up in it, and a route that somehow got into the router without an
//! entry is refused to everyone (fails closed). Without `--auth` everything is open,
//! as in rqlite.
//!
//! API routes take HTTP basic auth (or nothing: then what the auth file's `*` user
//! grants). The web interface takes a session from its login page; its forms carry the
//! session's CSRF token, and a form post without a session is refused (a browser
//! replays cached basic credentials on its own, which a forged form could use).

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{Perm, Principal, Users, basic_credentials};
use crate::http_error::json_response;
use crate::routes::{Access, Declared};
use crate::sessions::{MAX_LARGE_FORM_BYTES, WebSession, session_id};
use crate::state::AppState;

/// Checks the request against the route table; see the module's documentation.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(users) = state.options.auth.clone() else {
        return next.run(request).await;
    };
    let Some(path) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
    else {
        // No route: the router answers 404.
        return next.run(request).await;
    };
    let method = request.method().clone();
    let method = if method == Method::HEAD {
        Method::GET
    } else {
        method
    };
    let on_path: Vec<&Declared> = state.routes.iter().filter(|d| d.path == path).collect();
    if on_path.is_empty() {
        tracing::error!(path, "a route without a declared permission was refused");
        return refuse(
            Access::Api(&[]),
            StatusCode::FORBIDDEN,
            "this route declares no permission",
        );
    }
    let Some(declared) = on_path.iter().find(|d| d.verb.method() == method) else {
        // The router answers 405.
        return next.run(request).await;
    };
    match declared.access {
        Access::Public => next.run(request).await,
        Access::Api(perms) => {
            // Read before awaiting: a request is not `Sync`.
            let credentials = basic_credentials(request.headers());
            let principal = match principal(&users, credentials).await {
                Ok(principal) => principal,
                Err(()) => {
                    return refuse(
                        declared.access,
                        StatusCode::UNAUTHORIZED,
                        "wrong user name or password",
                    );
                }
            };
            if principal.may_all(perms) {
                return next.run(request).await;
            }
            deny(declared.access, &principal, perms)
        }
        Access::Web(perms) => web(&state, &users, request, next, declared.access, perms).await,
    }
}

async fn web(
    state: &AppState,
    users: &Users,
    mut request: Request,
    next: Next,
    access: Access,
    perms: &'static [Perm],
) -> Response {
    let session = session_id(&request).and_then(|id| {
        state
            .sessions
            .get(&id)
            .map(|session| WebSession { id, session })
    });
    if request.method() == Method::POST {
        let Some(session) = session else {
            return refuse(
                access,
                StatusCode::UNAUTHORIZED,
                "sign in first: your session ended",
            );
        };
        if !session.session.principal.may_all(perms) {
            return deny(access, &session.session.principal, perms);
        }
        let (parts, body) = request.into_parts();
        // Read whole, after the session and its permissions passed: the largest form
        // any route takes (each route's own limit applies after this).
        let Ok(bytes) = axum::body::to_bytes(body, MAX_LARGE_FORM_BYTES).await else {
            return refuse(
                access,
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is too large",
            );
        };
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !token.is_some_and(|t| constant_eq(t.as_bytes(), session.session.csrf.as_bytes())) {
            return refuse(
                access,
                StatusCode::FORBIDDEN,
                "the form's security token is missing or stale: reload the page and send it again",
            );
        }
        let mut request = Request::from_parts(parts, Body::from(bytes));
        request.extensions_mut().insert(session);
        return next.run(request).await;
    }
    let principal = match &session {
        Some(s) => s.session.principal.clone(),
        None => match principal(users, basic_credentials(request.headers())).await {
            Ok(principal) => principal,
            Err(()) => {
                return refuse(
                    access,
                    StatusCode::UNAUTHORIZED,
                    "wrong user name or password",
                );
            }
        },
    };
    if !principal.may_all(perms) {
        if principal.username.is_none() {
            // Not signed in: to the login page, and back here afterwards.
            let back = request.uri().path().to_string();
            return (
                StatusCode::SEE_OTHER,
                [(
                    header::LOCATION,
                    format!("/ui/login?next={}", crate::web::encode_component(&back)),
                )],
            )
                .into_response();
        }
        return deny(access, &principal, perms);
    }
    if let Some(session) = session {
        request.extensions_mut().insert(session);
    }
    next.run(request).await
}

/// The basic-auth principal of a request, anonymous without credentials; `Err` for
/// credentials that are unreadable or wrong.
async fn principal(
    users: &Users,
    credentials: Option<Result<(String, String), ()>>,
) -> Result<Principal, ()> {
    match credentials {
        None => Ok(users.anonymous()),
        Some(Err(())) => Err(()),
        Some(Ok((user, password))) => users.authenticate(&user, &password).await.ok_or(()),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 401 for anonymous requests (they may sign in), 403 for a user without `perms`: the
/// message names the permissions the user lacks (found by a review: a user with
/// `execute` but not `query` was told it lacked both).
fn deny(access: Access, principal: &Principal, perms: &[Perm]) -> Response {
    let missing = principal.missing(perms);
    let lacked = if missing.is_empty() {
        perms
    } else {
        &missing[..]
    };
    let needed: Vec<&str> = perms.iter().map(|p| p.name()).collect();
    let lacked: Vec<&str> = lacked.iter().map(|p| p.name()).collect();
    match &principal.username {
        None => refuse(
            access,
            StatusCode::UNAUTHORIZED,
            &format!("credentials required (permission {})", needed.join(" and ")),
        ),
        Some(user) => refuse(
            access,
            StatusCode::FORBIDDEN,
            &format!("user {user} lacks the permission {}", lacked.join(" and ")),
        ),
    }
}

fn refuse(access: Access, status: StatusCode, message: &str) -> Response {
    let mut response = match access {
        Access::Web(_) => crate::web::refusal_page(status, message),
        _ => json_response(status, &json!({ "error": message }), false),
    };
    if status == StatusCode::UNAUTHORIZED && !matches!(access, Access::Web(_)) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sqlraft\", charset=\"UTF-8\""),
        );
    }
    response
}
