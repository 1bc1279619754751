//! Web interface sessions: the login page opens one (a cookie), every form of it
//! carries its CSRF token.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::header;

use crate::auth::Principal;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "sqlraft_session";
/// How long a web session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes when a new one would exceed it.
const MAX_SESSIONS: usize = 10_000;
/// Largest form a web POST may carry (the CSRF token is read from it).
pub(crate) const MAX_FORM_BYTES: usize = 8 << 10;
/// Largest web form of all (the query console's SQL); each route limits its own.
pub(crate) const MAX_LARGE_FORM_BYTES: usize = 1 << 20;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) principal: Principal,
    /// Every form of this session carries it.
    pub(crate) csrf: String,
    expires: Instant,
}

/// Web sessions of this node (a restart signs everyone out).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// A new session for `principal`: its cookie value.
    pub(crate) fn open(&self, principal: Principal) -> String {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        let id = token();
        map.insert(
            id.clone(),
            Session {
                principal,
                csrf: token(),
                expires: now + SESSION_TTL,
            },
        );
        id
    }

    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub(crate) fn close(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// The session id a request's cookie names.
pub(crate) fn session_id(request: &Request) -> Option<String> {
    request
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The session of a web request, for its handler (forms need the CSRF token).
#[derive(Debug, Clone)]
pub(crate) struct WebSession {
    pub(crate) id: String,
    pub(crate) session: Session,
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::header;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let request = Request::builder()
            .header(header::COOKIE, "a=1; sqlraft_session=abc; b=2")
            .body(Body::empty())
            .unwrap();
        assert_eq!(session_id(&request).as_deref(), Some("abc"));
        let none = Request::builder()
            .header(header::COOKIE, "sqlraft_sessionx=1")
            .body(Body::empty())
            .unwrap();
        assert_eq!(session_id(&none), None);
    }

    #[test]
    fn sessions_are_bounded_and_closed() {
        let sessions = Sessions::default();
        let users = crate::auth::Users::parse(std::path::Path::new("a"), "[]").expect("users");
        let id = sessions.open(users.anonymous());
        assert!(sessions.get(&id).is_some());
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
        for _ in 0..MAX_SESSIONS + 5 {
            sessions.open(users.anonymous());
        }
        assert!(sessions.map.lock().unwrap().len() <= MAX_SESSIONS);
    }
}
