//! Authentication and permissions of the HTTP API (`--auth`), route by route: the
//! table is the router's own (`app::route_table`), so a new route is covered as soon as
//! it exists (and a route added around the table is refused to everyone).

use std::sync::Arc;

use reqwest::StatusCode;
use sqlraft_core::app::{ApiOptions, route_table};
use sqlraft_core::auth::{Perm, Users};
use sqlraft_harness::api::Harness;

/// A urlencoded form body, as a browser sends it.
trait FormBody {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self;
}

impl FormBody for reqwest::RequestBuilder {
    fn form_body(self, pairs: &[(&str, &str)]) -> Self {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
    }
}

const ADMIN: (&str, &str) = ("admin", "admin-pw");
const NOBODY: (&str, &str) = ("nobody", "nobody-pw");

/// An auth file with an admin, a user without permissions, and one user per single
/// permission (`user-<perm>`, password `pw`); `*` grants nothing.
fn auth_file() -> String {
    let hash = bcrypt::hash(ADMIN.1, 4).expect("bcrypt");
    let mut entries = vec![
        serde_json::json!({"username": ADMIN.0, "password": hash, "perms": ["all"]}),
        serde_json::json!({"username": NOBODY.0, "password": NOBODY.1, "perms": []}),
    ];
    for perm in Perm::EACH {
        entries.push(serde_json::json!({
            "username": format!("user-{}", perm.name()),
            "password": "pw",
            "perms": [perm.name()],
        }));
    }
    serde_json::Value::Array(entries).to_string()
}

async fn harness() -> Harness {
    let users = Users::parse(std::path::Path::new("auth.json"), &auth_file()).expect("auth file");
    Harness::with_options(ApiOptions {
        auth: Some(Arc::new(users)),
        ..ApiOptions::default()
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A request for the route with its path parameters filled in.
fn request(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
) -> reqwest::RequestBuilder {
    let path = path.replace("{id}", "6f1c0a3e-1234-4abc-9def-0123456789ab");
    let url = format!("http://{base}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let builder = client.request(method.clone(), url);
    if method == reqwest::Method::POST {
        builder
            .header("Content-Type", "application/json")
            .body("[]")
    } else {
        builder
    }
}

/// Every user whose permissions lack at least one of `perms`, and one who has them all.
fn users_for(perms: &[&str]) -> (Vec<String>, String) {
    let lacking = Perm::EACH
        .iter()
        .map(|p| p.name())
        .filter(|p| perms.len() != 1 || perms[0] != *p)
        .map(|p| format!("user-{p}"))
        .chain([NOBODY.0.to_string()])
        .collect();
    let allowed = match perms {
        [one] => format!("user-{one}"),
        _ => ADMIN.0.to_string(),
    };
    (lacking, allowed)
}

fn password(user: &str) -> &'static str {
    match user {
        u if u == ADMIN.0 => ADMIN.1,
        u if u == NOBODY.0 => NOBODY.1,
        _ => "pw",
    }
}

/// Every route and what it needs, written down: a new route fails here until its
/// permission is decided (and docs/SECURITY.md's table says the same).
const EXPECTED: &[(&str, &str, &str)] = &[
    ("POST", "/db/execute", "api:execute"),
    ("GET", "/db/query", "api:query"),
    ("POST", "/db/query", "api:query"),
    ("POST", "/db/request", "api:execute+query"),
    ("GET", "/db/hash", "api:query"),
    ("GET", "/status", "api:status"),
    ("GET", "/nodes", "api:status"),
    ("GET", "/leader", "api:status"),
    ("GET", "/readyz", "public"),
    ("GET", "/metrics", "api:status"),
    ("GET", "/api/v1/services", "api:status"),
    ("POST", "/api/v1/services", "api:join"),
    ("DELETE", "/api/v1/services/{id}", "api:remove"),
    ("GET", "/api/v1/system/backup", "api:backup"),
    ("POST", "/api/v1/system/restore", "api:load"),
    ("POST", "/api/v1/system/snapshot", "api:snapshot"),
    ("GET", "/db/backup", "api:backup"),
    ("POST", "/db/load", "api:load"),
    ("GET", "/", "web:status"),
    ("GET", "/ui/cluster", "web:status"),
    ("GET", "/ui/style.css", "public"),
    ("GET", "/ui/app.js", "public"),
    ("GET", "/ui/login", "public"),
    ("POST", "/ui/login", "public"),
    ("POST", "/ui/logout", "web:"),
    ("POST", "/ui/services", "web:join"),
    ("GET", "/ui/services/{id}/remove", "web:remove"),
    ("POST", "/ui/services/{id}/remove", "web:remove"),
    ("GET", "/ui/console", "web:query"),
    ("POST", "/ui/console/query", "web:query"),
    ("POST", "/ui/console/execute", "web:execute"),
];

#[test]
fn every_route_has_the_permission_decided_for_it() {
    let mut actual: Vec<(String, String, String)> = route_table()
        .into_iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a))
        .collect();
    let mut expected: Vec<(String, String, String)> = EXPECTED
        .iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a.to_string()))
        .collect();
    actual.sort();
    expected.sort();
    assert_eq!(actual, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_answers_401_without_credentials_and_403_without_its_permission() {
    let h = harness().await;
    let client = client();
    let table = route_table();
    assert!(table.len() >= 20, "{table:?}");
    let mut api_routes = 0;
    for (method, path, access) in &table {
        let Some(perms) = access.strip_prefix("api:") else {
            continue;
        };
        api_routes += 1;
        let perms: Vec<&str> = perms.split('+').filter(|p| !p.is_empty()).collect();
        assert!(!perms.is_empty(), "{method} {path} needs no permission");
        let what = format!("{method} {path}");

        let anonymous = request(&client, &h.http, method, path)
            .send()
            .await
            .expect(&what);
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{what} anonymous"
        );
        assert!(
            anonymous.headers().contains_key("www-authenticate"),
            "{what}: 401 without WWW-Authenticate"
        );
        let wrong = request(&client, &h.http, method, path)
            .basic_auth(ADMIN.0, Some("not-the-password"))
            .send()
            .await
            .expect(&what);
        assert_eq!(
            wrong.status(),
            StatusCode::UNAUTHORIZED,
            "{what} wrong password"
        );

        let (lacking, allowed) = users_for(&perms);
        for user in &lacking {
            let r = request(&client, &h.http, method, path)
                .basic_auth(user, Some(password(user)))
                .send()
                .await
                .expect(&what);
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what} as {user}");
            // The message names what this user lacks, not what it has.
            let body = r.text().await.expect("body");
            let named: Vec<&str> = body
                .split("lacks the permission ")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .map(|list| list.split(" and ").collect())
                .unwrap_or_default();
            let lacked: Vec<&str> = perms
                .iter()
                .copied()
                .filter(|p| *user != format!("user-{p}"))
                .collect();
            assert_eq!(named, lacked, "{what} as {user}: {body}");
        }
        for user in [allowed.as_str(), ADMIN.0] {
            let r = request(&client, &h.http, method, path)
                .basic_auth(user, Some(password(user)))
                .send()
                .await
                .expect(&what);
            assert!(
                r.status() != StatusCode::UNAUTHORIZED && r.status() != StatusCode::FORBIDDEN,
                "{what} as {user}: {}",
                r.status()
            );
        }
    }
    assert!(api_routes >= 12, "{table:?}");
    h.stop().await;
}

/// Signs in through the login form; the session cookie and the page's CSRF token.
async fn sign_in(client: &reqwest::Client, base: &str, user: &str) -> (String, String) {
    let r = client
        .post(format!("http://{base}/ui/login"))
        .form_body(&[
            ("username", user),
            ("password", password(user)),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "login as {user}");
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().expect("name=value").to_string();
    let page = client
        .get(format!("http://{base}/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .expect("page");
    let body = page.text().await.expect("body");
    let csrf = body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_web_route_needs_a_session_with_its_permission_and_forms_their_token() {
    let h = harness().await;
    let client = client();
    let (admin_cookie, admin_csrf) = sign_in(&client, &h.http, ADMIN.0).await;
    assert_eq!(
        admin_csrf.len(),
        64,
        "the page's forms carry the session's token"
    );
    let (nobody_cookie, _) = sign_in(&client, &h.http, NOBODY.0).await;
    let wrong = client
        .post(format!("http://{}/ui/login", h.http))
        .form_body(&[("username", ADMIN.0), ("password", "nope")])
        .send()
        .await
        .expect("login");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());

    for (method, path, access) in route_table() {
        let Some(perms) = access.strip_prefix("web:") else {
            continue;
        };
        let what = format!("{method} {path}");
        let path = path.replace("{id}", "6f1c0a3e-1234-4abc-9def-0123456789ab");
        let url = format!("http://{}{path}", h.http);
        let send = |cookie: Option<&str>, csrf: Option<&str>| {
            let mut r = match method {
                "GET" => client.get(&url),
                _ => client.post(&url),
            };
            if let Some(cookie) = cookie {
                r = r.header("Cookie", cookie);
            }
            if method == "POST" {
                let mut form = vec![
                    ("fqdn", "core-9.example.com"),
                    ("raft_addr", "core-9.example.com:7209"),
                ];
                if let Some(csrf) = csrf {
                    form.push(("csrf", csrf));
                }
                r = r.form_body(&form);
            }
            r.send()
        };
        let anonymous = send(None, None).await.expect(&what);
        match method {
            "GET" => {
                assert_eq!(
                    anonymous.status(),
                    StatusCode::SEE_OTHER,
                    "{what} anonymous"
                );
                let to = anonymous.headers()["location"].to_str().expect("location");
                assert!(to.starts_with("/ui/login?next="), "{what}: {to}");
            }
            _ => assert_eq!(
                anonymous.status(),
                StatusCode::UNAUTHORIZED,
                "{what} anonymous"
            ),
        }
        if !perms.is_empty() {
            let r = send(Some(&nobody_cookie), Some("whatever"))
                .await
                .expect(&what);
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{what} without the permission"
            );
        }
        if method == "POST" {
            let r = send(Some(&admin_cookie), None).await.expect(&what);
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{what} without the CSRF token"
            );
            let r = send(Some(&admin_cookie), Some("0123")).await.expect(&what);
            assert_eq!(
                r.status(),
                StatusCode::FORBIDDEN,
                "{what} with a wrong CSRF token"
            );
            // Basic auth is not a session: a browser replays it on forged forms.
            let r = client
                .post(&url)
                .basic_auth(ADMIN.0, Some(ADMIN.1))
                .form_body(&[("csrf", admin_csrf.as_str())])
                .send()
                .await
                .expect(&what);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} by basic auth");
        }
        if path.ends_with("/logout") {
            continue;
        }
        let r = send(Some(&admin_cookie), Some(&admin_csrf))
            .await
            .expect(&what);
        assert!(
            r.status() != StatusCode::UNAUTHORIZED && r.status() != StatusCode::FORBIDDEN,
            "{what} as admin: {}",
            r.status()
        );
    }

    // Signing out ends the session.
    let out = client
        .post(format!("http://{}/ui/logout", h.http))
        .header("Cookie", &admin_cookie)
        .form_body(&[("csrf", admin_csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = client
        .get(format!("http://{}/", h.http))
        .header("Cookie", &admin_cookie)
        .send()
        .await
        .expect("page");
    assert_eq!(after.status(), StatusCode::SEE_OTHER, "the session ended");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_need_nothing_and_the_star_user_grants_to_everyone() {
    let users = Users::parse(
        std::path::Path::new("auth.json"),
        r#"[{"username": "admin", "password": "x", "perms": ["all"]},
            {"username": "*", "perms": ["status", "query"]}]"#,
    )
    .expect("auth file");
    let h = Harness::with_options(ApiOptions {
        auth: Some(Arc::new(users)),
        ..ApiOptions::default()
    })
    .await;
    let client = client();
    for (method, path, access) in route_table() {
        if access != "public" || method != "GET" {
            continue;
        }
        let r = client
            .get(format!("http://{}{path}", h.http))
            .send()
            .await
            .expect(path);
        assert!(
            r.status() != StatusCode::UNAUTHORIZED && r.status() != StatusCode::FORBIDDEN,
            "{path}: {}",
            r.status()
        );
    }
    let status = client
        .get(format!("http://{}/status", h.http))
        .send()
        .await
        .expect("status");
    assert_eq!(status.status(), StatusCode::OK, "* grants status");
    let query = client
        .get(format!("http://{}/db/query?q=SELECT+1", h.http))
        .send()
        .await
        .expect("query");
    assert_eq!(query.status(), StatusCode::OK, "* grants query");
    let write = client
        .post(format!("http://{}/db/execute", h.http))
        .body(r#"["CREATE TABLE t (v)"]"#)
        .send()
        .await
        .expect("execute");
    assert_eq!(
        write.status(),
        StatusCode::UNAUTHORIZED,
        "* does not grant execute"
    );
    h.stop().await;
}

/// DNS rebinding: a page on an attacker's name that resolves to the node reaches it
/// with that name in `Host`; every request under a name that is not an allowed host
/// (nor an IP address) is refused, a plain GET without `Origin` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_under_a_name_that_is_not_an_allowed_host_are_refused() {
    let h = Harness::with_options(ApiOptions {
        allowed_hosts: vec!["core-1.example.com".into(), "localhost".into()],
        ..ApiOptions::default()
    })
    .await;
    let client = client();
    let port = h.http.rsplit_once(':').expect("port").1;
    for (host, allowed) in [
        (format!("attacker.example:{port}"), false),
        ("attacker.example".to_string(), false),
        (format!("127.0.0.1:{port}"), true),
        (format!("CORE-1.example.com:{port}"), true),
        (format!("localhost:{port}"), true),
        (format!("[::1]:{port}"), true),
    ] {
        for path in ["/status", "/db/query?q=SELECT+1", "/"] {
            let r = client
                .get(format!("http://{}{path}", h.http))
                .header("Host", &host)
                .send()
                .await
                .expect(path);
            assert_eq!(
                r.status() != StatusCode::FORBIDDEN,
                allowed,
                "{host} {path}: {}",
                r.status()
            );
        }
    }
    h.stop().await;
}
