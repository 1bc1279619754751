//! The web interface at `/`: the cluster page (every core service with its role, term,
//! applied index, lag and reachability), a form that creates a core service and shows
//! its install command, and removal with a confirmation page.
//!
//! Server-rendered HTML; every value is escaped ([`escape`]). Forms post to `/ui/...`
//! routes that redirect back to `/` with a message in the query string (POST, redirect,
//! GET), so errors show on the page. A few lines of plain JavaScript refresh the
//! cluster table every two seconds and copy the install command. Assets are embedded:
//! the page loads nothing from outside the node.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sqlraft::ServiceState;

use crate::http_error::status_of;
use crate::services::{
    self, Overview, ServiceView, display_role, install_command, join_address, this_role_name,
};
use crate::state::AppState;

const STYLE: &str = include_str!("web/style.css");
const SCRIPT: &str = include_str!("web/app.js");
use axum::Extension;

use crate::auth::Perm;
use crate::routes::{Access, Routes, Verb};
use crate::sessions::{MAX_FORM_BYTES, SESSION_COOKIE, WebSession};
/// Longest message carried back in the query string.
const MAX_MESSAGE_CHARS: usize = 500;

pub(crate) fn routes() -> Routes<AppState> {
    Routes::new()
        .add(Verb::Get, "/", Access::Web(&[Perm::Status]), page)
        .add(
            Verb::Get,
            "/ui/cluster",
            Access::Web(&[Perm::Status]),
            cluster_fragment,
        )
        .add(Verb::Get, "/ui/style.css", Access::Public, style)
        .add(Verb::Get, "/ui/app.js", Access::Public, script)
        .add(Verb::Get, "/ui/login", Access::Public, login_page)
        .add(Verb::Post, "/ui/login", Access::Public, login)
        .add(Verb::Post, "/ui/logout", Access::Web(&[]), logout)
        .add(
            Verb::Post,
            "/ui/services",
            Access::Web(&[Perm::Join]),
            create,
        )
        .add(
            Verb::Get,
            "/ui/services/{id}/remove",
            Access::Web(&[Perm::Remove]),
            confirm_removal,
        )
        .add(
            Verb::Post,
            "/ui/services/{id}/remove",
            Access::Web(&[Perm::Remove]),
            remove,
        )
        .map(|router| router.layer(DefaultBodyLimit::max(MAX_FORM_BYTES)))
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string or path component.
pub fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn redirect(location: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

fn probe_timeout(state: &AppState) -> Duration {
    Duration::from_millis(state.options.probe_timeout_ms)
}

/// What the page shows besides the cluster.
#[derive(Debug, Default)]
pub(crate) struct PageMessages {
    pub(crate) error: Option<String>,
    pub(crate) notice: Option<String>,
    /// The form's values to show again after an error.
    pub(crate) fqdn: String,
    pub(crate) raft_addr: String,
    /// A created service whose install command is shown.
    pub(crate) created: Option<String>,
    /// The signed-in user (with `--auth`) and the session's CSRF token for the forms.
    pub(crate) user: Option<String>,
    pub(crate) csrf: String,
    /// The API takes users (`--auth`): install commands name the users file.
    pub(crate) auth: bool,
    /// The created service's certificate, issued by this node (shown once).
    pub(crate) certificate: Option<crate::certs::Issued>,
}

async fn page(
    State(state): State<AppState>,
    session: Option<Extension<WebSession>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let get = |k: &str| query.get(k).map(|v| clip(v));
    let (user, csrf) = signed_in(session.as_deref());
    let mut messages = PageMessages {
        error: get("error"),
        notice: None,
        fqdn: get("fqdn").unwrap_or_default(),
        raft_addr: get("raft_addr").unwrap_or_default(),
        created: get("created"),
        user,
        csrf,
        auth: state.options.auth.is_some(),
        certificate: None,
    };
    messages.certificate = messages
        .created
        .as_deref()
        .and_then(|id| state.issued.take(session_key(session.as_deref()), id));
    let overview = services::overview(&state.node, probe_timeout(&state)).await;
    if let (Some(removed), Ok(o)) = (get("removed"), &overview) {
        let name = o
            .services
            .iter()
            .find(|v| v.service.id == removed)
            .map_or(removed.clone(), |v| v.service.name.clone());
        messages.notice = Some(format!("{name} was removed from the cluster."));
    }
    let join = join_address(&state.node);
    let body = match overview {
        Ok(o) => render_page(&o, &messages, &join),
        Err(e) => render_unavailable(&e.to_string()),
    };
    html(StatusCode::OK, body)
}

async fn cluster_fragment(State(state): State<AppState>) -> Response {
    match services::overview(&state.node, probe_timeout(&state)).await {
        Ok(o) => html(StatusCode::OK, render_cluster(&o)),
        Err(e) => html(
            status_of(&e),
            format!(
                "<p class=\"error\">The cluster cannot be shown: {}</p>",
                escape(&e.to_string())
            ),
        ),
    }
}

/// The page a form sent from another site gets ([`crate::app`] refuses it).
pub(crate) fn cross_site_page() -> Response {
    html(
        StatusCode::FORBIDDEN,
        render_shell(
            "Refused",
            "<p class=\"error\">This form was sent from another site; it was refused. Open the web interface of the core service and use its forms.</p><p><a href=\"/\">Back to the cluster</a></p>",
        ),
    )
}

#[derive(Debug, Deserialize)]
struct CreateForm {
    fqdn: String,
    raft_addr: String,
}

async fn create(
    State(state): State<AppState>,
    session: Option<Extension<WebSession>>,
    form: Result<Form<CreateForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                render_shell(
                    "Too large",
                    "<p class=\"error\">The form is larger than a host name and an address can be.</p><p><a href=\"/\">Back to the cluster</a></p>",
                ),
            );
        }
        Err(_) => {
            return redirect(format!(
                "/?error={}#create",
                encode_component("Fill in both fields: the host name (fqdn) and the raft address.")
            ));
        }
    };
    let fqdn = form.fqdn.trim().to_string();
    let raft_addr = form.raft_addr.trim().to_string();
    match services::create(&state.node, &fqdn, &raft_addr, state.options.auth.is_some()).await {
        Ok(created) => {
            if let Some(issued) = created.certificate {
                state
                    .issued
                    .keep(session_key(session.as_deref()), &created.service.id, issued);
            }
            redirect(format!(
                "/?created={}#install",
                encode_component(&created.service.id)
            ))
        }
        Err(e) => redirect(format!(
            "/?error={}&fqdn={}&raft_addr={}#create",
            encode_component(&clip(&format!("Cannot create the core service: {e}"))),
            encode_component(&clip(&fqdn)),
            encode_component(&clip(&raft_addr)),
        )),
    }
}

async fn confirm_removal(
    State(state): State<AppState>,
    session: Option<Extension<WebSession>>,
    Path(id): Path<String>,
) -> Response {
    let (_, csrf) = signed_in(session.as_deref());
    let overview = match services::overview(&state.node, probe_timeout(&state)).await {
        Ok(o) => o,
        Err(e) => {
            return html(status_of(&e), render_unavailable(&e.to_string()));
        }
    };
    match overview.services.iter().find(|v| v.service.id == id) {
        Some(view) => html(StatusCode::OK, render_confirmation(view, &overview, &csrf)),
        None => html(
            StatusCode::NOT_FOUND,
            render_shell(
                "No such service",
                &format!(
                    "<p class=\"error\">There is no core service with id {}.</p><p><a href=\"/\">Back to the cluster</a></p>",
                    escape(&id)
                ),
            ),
        ),
    }
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let id = services::stored_id(&id);
    match services::remove(&state.node, &id).await {
        Ok(_) => redirect(format!("/?removed={}", encode_component(&id))),
        Err(e) => redirect(format!(
            "/?error={}",
            encode_component(&clip(&format!("Cannot remove the core service: {e}")))
        )),
    }
}

pub(crate) fn render_shell(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · sqlraft</title>\n<link rel=\"stylesheet\" href=\"/ui/style.css\">\n</head>\n\
         <body>\n<main>\n{body}\n</main>\n<script src=\"/ui/app.js\"></script>\n</body>\n</html>\n",
        title = escape(title)
    )
}

fn render_unavailable(reason: &str) -> String {
    render_shell(
        "Unavailable",
        &format!(
            "<h1>sqlraft core cluster</h1><p class=\"error\" id=\"error\">This core service cannot show the cluster: {}</p>",
            escape(reason)
        ),
    )
}

fn this_name(o: &Overview) -> String {
    o.services
        .iter()
        .find(|v| v.is_self)
        .map_or_else(|| o.this_id.clone(), |v| v.service.name.clone())
}

/// The whole page.
pub(crate) fn render_page(o: &Overview, m: &PageMessages, join: &str) -> String {
    let mut body = String::new();
    body.push_str(&format!(
        "<header><h1>sqlraft core cluster</h1><p class=\"subtitle\">This page is served by <strong>{}</strong> ({}). Writes go to the leader; every core service reads its own SQLite copy.</p><nav><a href=\"/ui/console\" id=\"console-link\">Query console</a></nav></header>\n",
        escape(&this_name(o)),
        escape(this_role_name(o)),
    ));
    if let Some(user) = &m.user {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/ui/logout\" id=\"logout-form\" class=\"signed-in\">\n{}\
             <span>Signed in as <strong id=\"user\">{}</strong></span>\n\
             <button type=\"submit\" id=\"logout-button\">Sign out</button>\n</form>\n",
            csrf_input(&m.csrf),
            escape(user)
        ));
    }
    if let Some(error) = &m.error {
        body.push_str(&format!(
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>\n",
            escape(error)
        ));
    }
    if let Some(notice) = &m.notice {
        body.push_str(&format!(
            "<p class=\"notice\" id=\"notice\" role=\"status\">{}</p>\n",
            escape(notice)
        ));
    }
    if let Some(created) = &m.created {
        body.push_str(&render_install(o, m, created, join));
    }
    body.push_str("<section id=\"cluster\" aria-live=\"polite\">\n");
    body.push_str(&render_cluster(o));
    body.push_str("</section>\n");
    body.push_str(&render_form(m));
    render_shell("Cluster", &body)
}

fn render_install(o: &Overview, m: &PageMessages, id: &str, join: &str) -> String {
    let Some(view) = o.services.iter().find(|v| v.service.id == id) else {
        return format!(
            "<p class=\"error\" id=\"error\">There is no core service with id {}.</p>\n",
            escape(id)
        );
    };
    let s = &view.service;
    let command = install_command(&s.id, &s.raft_addr, join, o.raft_tls, m.auth, &o.install);
    let files = render_files(&s.id, &s.fqdn, o.raft_tls, m, &o.install.root);
    format!(
        "<section id=\"install\" class=\"install\">\n<h2>Install {name}</h2>\n\
         <p>Core service <strong>{name}</strong> was created with id <code>{id}</code>.</p>\n{files}\
         <p>Run this command on <strong>{fqdn}</strong> (as root; the binary must be on the PATH there). It joins the cluster as a learner:</p>\n\
         <pre id=\"install-command\">{command}</pre>\n\
         <button type=\"button\" class=\"copy\" data-copy=\"install-command\">Copy the command</button>\n\
         <p class=\"hint\">Install the services one after another: start the next one once this one shows up below.</p>\n</section>\n",
        name = escape(&s.name),
        id = escape(&s.id),
        fqdn = escape(&s.fqdn),
        command = escape(&command),
    )
}

/// What must be on the new service's host before its install command runs: its
/// certificate (issued here, shown once) and the users file.
fn render_files(id: &str, fqdn: &str, tls: bool, m: &PageMessages, root: &str) -> String {
    let mut out = String::new();
    let dir = format!("{root}/tls");
    if tls {
        match &m.certificate {
            Some(issued) => {
                let script = format!(
                    "install -d -m 0755 {dir}\n\
                     cat > {dir}/ca.crt <<'EOF'\n{ca}EOF\n\
                     cat > {dir}/{id}.crt <<'EOF'\n{cert}EOF\n\
                     (umask 077; cat > {dir}/{id}.key <<'EOF'\n{key}EOF\n)\n",
                    ca = issued.ca_pem,
                    cert = issued.cert_pem,
                    key = issued.key_pem,
                );
                out.push_str(&format!(
                    "<p>First put its certificate for mutual TLS on <strong>{fqdn}</strong>: run this there as root. \
                     It holds the service's private key and is shown <strong>only this once</strong> \
                     (if it is lost, remove the service and create it again, or issue another with \
                     <code>sqlraft-core certs issue --id {id} --fqdn {fqdn}</code> where the cluster CA is).</p>\n\
                     <pre id=\"certificate-script\">{script}</pre>\n\
                     <button type=\"button\" class=\"copy\" data-copy=\"certificate-script\">Copy the certificate commands</button>\n",
                    fqdn = escape(fqdn),
                    id = escape(id),
                    script = escape(&script),
                ));
            }
            None => out.push_str(&format!(
                "<p>It needs its certificate for mutual TLS in {dir}: on the host that holds the cluster CA, run \
                 <code>sqlraft-core certs issue --id {id} --fqdn {fqdn} --ca-dir {dir} --out /tmp/{id}</code> \
                 and copy <code>ca.crt</code>, <code>{id}.crt</code> and <code>{id}.key</code> to {dir} on <strong>{fqdn}</strong>.</p>\n",
                id = escape(id),
                fqdn = escape(fqdn),
                dir = escape(&dir),
            )),
        }
    }
    if m.auth {
        out.push_str(&format!(
            "<p>Copy the users file <code>{}/auth.json</code> from this host to <strong>{}</strong> (mode 0600): every core service checks the same users.</p>\n",
            escape(root),
            escape(fqdn)
        ));
    }
    out
}

fn render_form(m: &PageMessages) -> String {
    format!(
        "<section id=\"create\">\n<h2>Create a core service</h2>\n\
         <p>One core service per server. It gets its id here; then you install it on its server with the command shown.</p>\n\
         <form method=\"post\" action=\"/ui/services\" id=\"create-form\">\n{token}\
         <label for=\"fqdn\">Host name (FQDN)</label>\n\
         <input id=\"fqdn\" name=\"fqdn\" required maxlength=\"253\" placeholder=\"core-2.example.com\" value=\"{fqdn}\">\n\
         <label for=\"raft_addr\">Raft address</label>\n\
         <input id=\"raft_addr\" name=\"raft_addr\" required maxlength=\"260\" placeholder=\"core-2.example.com:7209\" value=\"{raft_addr}\">\n\
         <button type=\"submit\" id=\"create-button\">Create</button>\n</form>\n</section>\n",
        fqdn = escape(&m.fqdn),
        raft_addr = escape(&m.raft_addr),
        token = csrf_input(&m.csrf),
    )
}

/// The hidden field that carries the session's CSRF token (none without `--auth`).
pub(crate) fn csrf_input(csrf: &str) -> String {
    if csrf.is_empty() {
        return String::new();
    }
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n",
        escape(csrf)
    )
}

/// Whose an issued certificate is: the session's id (empty without a session, which
/// means without `--auth`: a web POST with `--auth` always has one).
fn session_key(session: Option<&WebSession>) -> &str {
    session.map_or("", |s| s.id.as_str())
}

/// The signed-in user and the CSRF token of a web request's session.
pub(crate) fn signed_in(session: Option<&WebSession>) -> (Option<String>, String) {
    match session {
        Some(s) => (s.session.principal.username.clone(), s.session.csrf.clone()),
        None => (None, String::new()),
    }
}

/// The page for a refused web request.
pub(crate) fn refusal_page(status: StatusCode, message: &str) -> Response {
    let next = if status == StatusCode::UNAUTHORIZED {
        "<p><a href=\"/ui/login\">Sign in</a></p>"
    } else {
        "<p><a href=\"/\">Back to the cluster</a></p>"
    };
    html(
        status,
        render_shell(
            "Refused",
            &format!(
                "<h1>Refused</h1><p class=\"error\" id=\"error\" role=\"alert\">{}</p>{next}",
                escape(message)
            ),
        ),
    )
}

/// Where to go after signing in: a path on this node, never another site. Only
/// printable ASCII without a backslash, starting with one `/` (browsers drop tabs and
/// line breaks from URLs, so `/\t/evil.example` would become `//evil.example`: found
/// by a review).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            p.to_string()
        }
        _ => "/".to_string(),
    }
}

fn render_login(next: &str, error: Option<&str>) -> String {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" id=\"error\" role=\"alert\">{}</p>\n",
            escape(e)
        )
    });
    render_shell(
        "Sign in",
        &format!(
            "<header><h1>sqlraft core cluster</h1></header>\n{error}<section id=\"login\">\n<h2>Sign in</h2>\n\
             <form method=\"post\" action=\"/ui/login\" id=\"login-form\">\n\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
             <label for=\"username\">User name</label>\n\
             <input id=\"username\" name=\"username\" required autocomplete=\"username\">\n\
             <label for=\"password\">Password</label>\n\
             <input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"current-password\">\n\
             <button type=\"submit\" id=\"login-button\">Sign in</button>\n</form>\n</section>\n",
            next = escape(next),
        ),
    )
}

async fn login_page(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if state.options.auth.is_none() {
        return redirect("/".into());
    }
    html(
        StatusCode::OK,
        render_login(&local_path(query.get("next").map(String::as_str)), None),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Some(users) = state.options.auth.clone() else {
        return redirect("/".into());
    };
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            render_login("/", Some("Fill in the user name and the password.")),
        );
    };
    let next = local_path(form.next.as_deref());
    let Some(principal) = users.authenticate(&form.username, &form.password).await else {
        tracing::warn!(user = %form.username, "web sign-in refused: wrong user name or password");
        return html(
            StatusCode::UNAUTHORIZED,
            render_login(&next, Some("Wrong user name or password.")),
        );
    };
    tracing::info!(user = %form.username, "signed in to the web interface");
    let id = state.sessions.open(principal);
    let secure = if state.options.https { "; Secure" } else { "" };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}"),
            ),
        ],
    )
        .into_response()
}

async fn logout(State(state): State<AppState>, session: Option<Extension<WebSession>>) -> Response {
    if let Some(Extension(session)) = session {
        state.sessions.close(&session.id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/ui/login".to_string()),
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response()
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    }
}

fn number(value: Option<u64>) -> String {
    value.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// The refreshed part: summary, explanations, the services table, removed services.
pub(crate) fn render_cluster(o: &Overview) -> String {
    let mut out = String::new();
    let leader = o
        .services
        .iter()
        .find(|v| v.is_leader)
        .map(|v| v.service.name.clone());
    out.push_str(&format!(
        "<p class=\"summary\" id=\"summary\">{} voter{}, {} learner{} · term {} · commit index {} · leader: <strong>{}</strong></p>\n",
        o.voters,
        if o.voters == 1 { "" } else { "s" },
        o.learners,
        if o.learners == 1 { "" } else { "s" },
        o.term,
        o.commit_index,
        escape(leader.as_deref().unwrap_or("none known (an election is in progress, or this node is cut off)")),
    ));
    let live: Vec<&ServiceView> = o
        .services
        .iter()
        .filter(|v| v.service.state != ServiceState::Removed)
        .collect();
    let learners: Vec<&&ServiceView> = live
        .iter()
        .filter(|v| display_role(v) == Some("learner") || v.service.state == ServiceState::Learner)
        .collect();
    match learners.as_slice() {
        [] => {}
        [one] => out.push_str(&format!(
            "<p class=\"explain\" id=\"learner-note\">{name} is a learner: it becomes a voter when one more core service joins, so that the number of voters stays odd. Meanwhile it receives every write and serves reads from its own copy.</p>\n",
            name = escape(&one.service.name)
        )),
        many => {
            let names: Vec<String> = many.iter().map(|v| escape(&v.service.name)).collect();
            out.push_str(&format!(
                "<p class=\"explain\" id=\"learner-note\">{} are learners: caught-up learners become voters two at a time, so that the number of voters stays odd.</p>\n",
                names.join(", ")
            ));
        }
    }
    for v in live
        .iter()
        .filter(|v| v.service.state == ServiceState::Created)
    {
        out.push_str(&format!(
            "<p class=\"explain created\">{name} is created but has not joined yet: <a href=\"/?created={id_q}#install\">run its install command</a> on {fqdn}.</p>\n",
            name = escape(&v.service.name),
            id_q = escape(&encode_component(&v.service.id)),
            fqdn = escape(&v.service.fqdn),
        ));
    }
    out.push_str(
        "<table id=\"services\">\n<thead><tr><th>Name</th><th>Id</th><th>Raft address</th><th>State</th><th>Role</th><th>Term</th><th>Applied index</th><th>Lag</th><th>Reachable</th><th></th></tr></thead>\n<tbody>\n",
    );
    for v in &live {
        out.push_str(&render_row(v));
    }
    out.push_str("</tbody>\n</table>\n");
    let removed: Vec<&ServiceView> = o
        .services
        .iter()
        .filter(|v| v.service.state == ServiceState::Removed)
        .collect();
    if !removed.is_empty() {
        out.push_str("<h2>Removed core services</h2>\n<p class=\"hint\">A removed id can never join again; create a new service for that server.</p>\n<table id=\"removed\">\n<thead><tr><th>Name</th><th>Id</th><th>Raft address</th></tr></thead>\n<tbody>\n");
        for v in removed {
            out.push_str(&format!(
                "<tr data-id=\"{id}\"><td>{name}</td><td><code>{id}</code></td><td>{addr}</td></tr>\n",
                id = escape(&v.service.id),
                name = escape(&v.service.name),
                addr = escape(&v.service.raft_addr),
            ));
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str(&render_snapshots(o));
    out
}

/// This node's snapshot and log, and the snapshot transfers it sends or receives with
/// their progress.
fn render_snapshots(o: &Overview) -> String {
    let mut out = String::from("<h2>Snapshots</h2>\n");
    let snapshot = match &o.snapshot {
        Some(s) => format!(
            "snapshot at index {} ({})",
            s.index,
            human_bytes(s.size_bytes)
        ),
        None => "no snapshot yet".to_string(),
    };
    out.push_str(&format!(
        "<p class=\"summary\" id=\"snapshot-summary\">This node: {snapshot} · log from index {} ({})</p>\n",
        o.log_first_index,
        human_bytes(o.log_bytes),
    ));
    if o.transfers.is_empty() {
        out.push_str(
            "<p class=\"hint\" id=\"no-transfers\">No snapshot is being sent or received.</p>\n",
        );
        return out;
    }
    out.push_str("<table id=\"transfers\">\n<thead><tr><th>Peer</th><th>Direction</th><th>Snapshot index</th><th>Progress</th><th>Attempt</th></tr></thead>\n<tbody>\n");
    for t in &o.transfers {
        let peer = o
            .services
            .iter()
            .find(|v| v.live.as_ref().is_some_and(|m| m.raft_id == t.peer_raft_id))
            .map_or_else(
                || format!("raft id {}", t.peer_raft_id),
                |v| v.service.name.clone(),
            );
        let percent = (t.bytes_done * 100)
            .checked_div(t.bytes_total)
            .unwrap_or(100);
        out.push_str(&format!(
            "<tr><td>{peer}</td><td>{direction}</td><td>{index}</td><td>{done} of {total} ({percent}%)</td><td>{attempt}</td></tr>\n",
            peer = escape(&peer),
            direction = escape(t.direction),
            index = t.index,
            done = human_bytes(t.bytes_done),
            total = human_bytes(t.bytes_total),
            attempt = t.attempt,
        ));
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn render_row(v: &ServiceView) -> String {
    let s = &v.service;
    let live = v.live.as_ref();
    let role = display_role(v).unwrap_or(match s.state {
        ServiceState::Created => "not joined",
        _ => "—",
    });
    let mut badges = String::new();
    if v.is_leader {
        badges.push_str(" <span class=\"badge leader\">leader</span>");
    }
    if v.is_self {
        badges.push_str(" <span class=\"badge self\">this node</span>");
    }
    let reachable = live.map(|m| m.reachable);
    format!(
        "<tr data-id=\"{id}\" class=\"{class}\"><td class=\"name\">{name}{badges}</td><td><code>{id}</code></td><td>{addr}</td><td>{state}</td><td class=\"role\">{role}</td><td>{term}</td><td>{applied}</td><td>{lag}</td><td class=\"{reach_class}\">{reach}</td>\
         <td><a class=\"button danger\" href=\"/ui/services/{id_q}/remove\" id=\"remove-{id}\">Remove</a></td></tr>\n",
        id = escape(&s.id),
        id_q = escape(&encode_component(&s.id)),
        class = if v.is_leader { "leader" } else { "" },
        name = escape(&s.name),
        addr = escape(&s.raft_addr),
        state = escape(s.state.as_str()),
        role = escape(role),
        term = number(live.and_then(|m| m.term)),
        applied = number(live.and_then(|m| m.applied_index)),
        lag = number(v.lag),
        reach_class = match reachable {
            Some(false) => "unreachable",
            _ => "",
        },
        reach = yes_no(reachable),
    )
}

fn render_confirmation(v: &ServiceView, o: &Overview, csrf: &str) -> String {
    let s = &v.service;
    let mut consequences = String::new();
    match s.state {
        ServiceState::Removed => {
            consequences.push_str("<p class=\"error\">It is already removed.</p>");
        }
        ServiceState::Created => consequences
            .push_str("<p>It has not joined yet: its id is crossed out and can never join.</p>"),
        ServiceState::Learner => consequences.push_str(
            "<p>It is a learner: it leaves the cluster and stops itself. The voters are not affected.</p>",
        ),
        ServiceState::Voter => {
            if o.voters > 1 && (o.voters - 1).is_multiple_of(2) {
                consequences.push_str(
                    "<p>It is a voter. Without it the number of voters would be even, so another voter becomes a learner in the same change (it becomes a voter again when another core service joins).</p>",
                );
            } else {
                consequences.push_str("<p>It is a voter; the cluster keeps an odd number of voters.</p>");
            }
            if v.is_leader {
                consequences.push_str(
                    "<p>It is the leader: it hands leadership over to another voter first.</p>",
                );
            }
        }
    }
    let body = format!(
        "<h1>Remove {name}?</h1>\n<p>Core service <strong>{name}</strong> (id <code>{id}</code>, raft address {addr}) will be removed from the cluster. \
         The removed service stops itself; its id can never join again. Afterwards stop and delete it on {fqdn}: its unit and its directory.</p>\n{consequences}\n\
         <form method=\"post\" action=\"/ui/services/{id_q}/remove\" id=\"confirm-form\">\n{token}\
         <button type=\"submit\" class=\"danger\" id=\"confirm-remove\">Yes, remove {name}</button>\n\
         <a class=\"button\" href=\"/\" id=\"cancel-remove\">Cancel</a>\n</form>\n",
        name = escape(&s.name),
        id = escape(&s.id),
        id_q = escape(&encode_component(&s.id)),
        addr = escape(&s.raft_addr),
        fqdn = escape(&s.fqdn),
        token = csrf_input(csrf),
    );
    render_shell(&format!("Remove {}", s.name), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_view::LiveMember;
    use sqlraft::{Role, Service};

    fn view(name: &str, fqdn: &str, state: ServiceState, learner: bool) -> ServiceView {
        ServiceView {
            service: Service {
                id: format!("id-{name}"),
                name: name.to_string(),
                fqdn: fqdn.to_string(),
                raft_addr: format!("{fqdn}:7209"),
                state,
                raft_id: Some(2),
                created_at_ms: 0,
                updated_index: 1,
            },
            live: Some(LiveMember {
                raft_id: 2,
                service_id: format!("id-{name}"),
                raft_addr: format!("{fqdn}:7209"),
                http_addr: "<i>h</i>".into(),
                voter: !learner,
                role: if learner { "learner" } else { "follower" }.into(),
                reachable: true,
                applied_index: Some(5),
                term: Some(2),
                seconds: 0.0,
                version: None,
                error: None,
            }),
            is_leader: false,
            is_self: false,
            lag: Some(0),
        }
    }

    fn overview(services: Vec<ServiceView>) -> Overview {
        Overview {
            this_id: "x".into(),
            this_role: Role::Leader,
            leader_id: None,
            term: 2,
            commit_index: 5,
            voters: 1,
            learners: 1,
            services,
            snapshot: None,
            log_first_index: 1,
            log_bytes: 0,
            transfers: Vec::new(),
            raft_tls: false,
            install: Default::default(),
        }
    }

    const EVIL: &str = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>";

    #[test]
    fn after_signing_in_only_a_path_here_is_followed() {
        for (next, to) in [
            (Some("/ui/services/x/remove"), "/ui/services/x/remove"),
            (Some("/?created=a#install"), "/?created=a#install"),
            (Some("//evil.example/"), "/"),
            (Some("/\t/evil.example/x"), "/"),
            (Some("/\n/evil.example"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/ a"), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(next), to, "{next:?}");
        }
    }

    #[test]
    fn everything_rendered_is_escaped() {
        let o = overview(vec![
            view(EVIL, EVIL, ServiceState::Learner, true),
            view(&format!("{EVIL}2"), EVIL, ServiceState::Removed, false),
        ]);
        let m = PageMessages {
            error: Some(EVIL.into()),
            notice: Some(EVIL.into()),
            fqdn: EVIL.into(),
            raft_addr: EVIL.into(),
            created: Some(format!("id-{EVIL}")),
            user: Some(EVIL.into()),
            csrf: EVIL.into(),
            auth: true,
            certificate: Some(crate::certs::Issued {
                ca_pem: EVIL.into(),
                cert_pem: EVIL.into(),
                key_pem: EVIL.into(),
            }),
        };
        let page = render_page(&o, &m, EVIL);
        let mut tls = o.clone();
        tls.raft_tls = true;
        let created = PageMessages {
            created: Some(o.services[0].service.id.clone()),
            ..m
        };
        let install = render_page(&tls, &created, EVIL);
        assert!(install.contains("certificate-script"), "{install}");
        let confirm = render_confirmation(&o.services[0], &o, EVIL);
        let login = render_login(EVIL, Some(EVIL));
        for html in [&page, &confirm, &login, &install] {
            assert!(!html.contains("<script>alert"), "{html}");
            assert!(!html.contains("<img"), "{html}");
            assert!(!html.contains("\"'>"), "{html}");
            assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        }
        assert!(page.contains("is a learner: it becomes a voter when one more core service joins, so that the number of voters stays odd"));
    }

    #[test]
    fn snapshot_transfers_show_their_progress() {
        let mut o = overview(vec![view(
            "core-2",
            "core-2.example.com",
            ServiceState::Learner,
            true,
        )]);
        assert!(render_cluster(&o).contains("No snapshot is being sent or received"));
        o.snapshot = Some(sqlraft::SnapshotInfo {
            index: 4_000,
            term: 3,
            size_bytes: 3 << 20,
            took_ms: 12,
        });
        o.transfers = vec![sqlraft::SnapshotTransfer {
            peer_raft_id: 2,
            direction: "sending",
            index: 4_000,
            term: 3,
            bytes_done: 1 << 20,
            bytes_total: 3 << 20,
            attempt: 2,
        }];
        let html = render_cluster(&o);
        assert!(html.contains("snapshot at index 4000 (3.0 MiB)"), "{html}");
        assert!(
            html.contains("<td>core-2</td><td>sending</td><td>4000</td><td>1.0 MiB of 3.0 MiB (33%)</td><td>2</td>"),
            "{html}"
        );
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn escaping_and_encoding() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(encode_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
