//! The routes of the HTTP API, each declared with the access it needs: the table of
//! permissions is the list of routes ([`crate::access`] enforces it).

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, on};

use crate::auth::Perm;

/// The HTTP methods routes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    /// The method's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    /// The method as requests carry it.
    pub(crate) fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Delete => Method::DELETE,
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: readiness, the web interface's login page and static files.
    Public,
    /// Basic auth (or anonymous), with every one of these permissions.
    Api(&'static [Perm]),
    /// The web interface: a session (or basic auth for pages), with every one of
    /// these permissions; a POST needs a session and its CSRF token.
    Web(&'static [Perm]),
}

/// One route and what it needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Declared {
    pub(crate) verb: Verb,
    pub(crate) path: &'static str,
    pub(crate) access: Access,
}

/// A router whose every route declares its access.
pub(crate) struct Routes<S> {
    router: Router<S>,
    table: Vec<Declared>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub(crate) fn new() -> Routes<S> {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Adds `handler` for `verb` on `path`, needing `access`.
    pub(crate) fn add<H, T>(
        mut self,
        verb: Verb,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Routes<S>
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self.router.route(path, on(verb.filter(), handler));
        self.table.push(Declared { verb, path, access });
        self
    }

    /// These routes and `other`'s.
    pub(crate) fn merge(mut self, other: Routes<S>) -> Routes<S> {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Changes the router (adds layers) without adding routes.
    pub(crate) fn map(mut self, f: impl FnOnce(Router<S>) -> Router<S>) -> Routes<S> {
        self.router = f(self.router);
        self
    }

    pub(crate) fn into_parts(self) -> (Router<S>, Vec<Declared>) {
        (self.router, self.table)
    }
}
