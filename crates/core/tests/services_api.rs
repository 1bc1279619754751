//! Core services over REST (`/api/v1/services`), backup, and the web
//! interface's server side (forms, redirects, escaping), against in-process nodes.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, TIMEOUT};
use serde_json::{Value as Json, json};
use sqlraft_core::client;

/// The root the node lives under (`<root>/core/<id>`): install commands name it.
fn root_of(h: &Harness) -> String {
    let dir = &h.node.config().dir;
    dir.parent()
        .and_then(std::path::Path::parent)
        .expect("root")
        .display()
        .to_string()
}

/// The port of an `ip:port` address.
fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').expect("port").1
}

async fn create(h: &Harness, fqdn: &str, raft_addr: &str) -> client::Response {
    let body = json!({"fqdn": fqdn, "raft_addr": raft_addr}).to_string();
    h.post("/api/v1/services", &body).await
}

async fn delete(h: &Harness, id: &str) -> client::Response {
    client::request(
        &h.http,
        "DELETE",
        &format!("/api/v1/services/{id}"),
        None,
        TIMEOUT,
    )
    .await
    .expect("DELETE answered")
}

fn error_of(r: &client::Response) -> String {
    r.json().expect("JSON error")["error"]
        .as_str()
        .expect("error is a string")
        .to_string()
}

fn service<'a>(list: &'a Json, id: &str) -> &'a Json {
    list["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn services_are_validated_created_listed_and_removed() {
    let h = Harness::start().await;

    for (body, says) in [
        ("not json".to_string(), "expected"),
        (r#"{"fqdn": "core-2.example.com"}"#.to_string(), "raft_addr"),
        (
            json!({"fqdn": "core", "raft_addr": "core:7209"}).to_string(),
            "fqdn",
        ),
        (
            json!({"fqdn": "core-2.example.com", "raft_addr": "core-2.example.com"}).to_string(),
            "has no port",
        ),
        (
            json!({"fqdn": "core-2.example.com", "raft_addr": "core-2.example.com:0"}).to_string(),
            "out of range",
        ),
        (
            json!({"fqdn": "core-2.example.com", "raft_addr": "core-3.example.com:7209"})
                .to_string(),
            "not the service's fqdn",
        ),
    ] {
        let r = h.post("/api/v1/services", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(error_of(&r).contains(says), "{body}: {}", r.text());
    }
    let huge = json!({"fqdn": "a".repeat(40_000), "raft_addr": "x:1"}).to_string();
    assert_eq!(h.post("/api/v1/services", &huge).await.status, 413);

    let r = create(&h, "core-2.example.com", "core-2.example.com:7300").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json().expect("JSON");
    let id = created["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(created["name"], "core-core-2.example.com");
    assert_eq!(created["raft_addr"], "core-2.example.com:7300");
    assert_eq!(
        created["install_command"],
        format!(
            "{}/bin/sqlraft-core run --id {id} --root {} --raft.node.addr core-2.example.com:7300 \
             --raft.node.listen 0.0.0.0:7300 --raft.join {} --http 0.0.0.0:{} --raft.insecure --install",
            root_of(&h),
            root_of(&h),
            h.node.raft_addr(),
            port_of(&h.http)
        )
    );

    for (fqdn, addr) in [
        ("core-2.example.com", "core-2.example.com:7301"),
        ("127.0.0.1", h.node.raft_addr()),
    ] {
        let r = create(&h, fqdn, addr).await;
        assert_eq!(r.status, 409, "{fqdn} {addr}: {}", r.text());
        assert!(error_of(&r).contains("already used"), "{}", r.text());
    }

    let list = h.get_json("/api/v1/services").await;
    assert_eq!(list["services"].as_array().map(Vec::len), Some(2), "{list}");
    let first = service(&list, sqlraft::naming::FIRST_SERVICE_ID);
    assert_eq!(first["name"], "core-1");
    assert_eq!(first["state"], "voter");
    assert_eq!(first["role"], "leader");
    assert_eq!(first["leader"], true);
    assert_eq!(first["reachable"], true);
    assert_eq!(first["lag"], 0);
    assert!(first["applied_index"].as_u64().is_some_and(|a| a > 0));
    assert!(first["term"].as_u64().is_some_and(|t| t > 0));
    let new = service(&list, &id);
    assert_eq!(new["state"], "created");
    assert_eq!(new["fqdn"], "core-2.example.com");
    assert_eq!(new["role"], Json::Null);
    assert_eq!(new["raft_id"], Json::Null);
    assert!(
        new["created_at"]
            .as_str()
            .is_some_and(|t| t.len() == 20 && t.ends_with('Z')),
        "{new}"
    );

    let r = delete(&h, "11111111-2222-3333-4444-555555555555").await;
    assert_eq!(r.status, 404, "{}", r.text());
    // An id in upper case names the same service, as `run --id` takes it (found by a
    // review: it was not found).
    let r = delete(&h, &id.to_ascii_uppercase()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let removed = r.json().expect("JSON");
    assert_eq!(removed["removed"], true);
    assert_eq!(removed["id"], id.as_str());
    let r = delete(&h, &id).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(error_of(&r).contains("already removed"), "{}", r.text());
    let list = h.get_json("/api/v1/services").await;
    assert_eq!(service(&list, &id)["state"], "removed");

    // The host is free again for a new service (with a new id).
    let r = create(&h, "core-2.example.com", "core-2.example.com:7300").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json().expect("JSON")["id"], id.as_str());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joined_service_is_listed_live_and_removed_through_any_node() {
    let leader = Harness::start().await;
    let learner = Harness::join("127.0.0.3", &leader).await;
    let id = learner.node.service_id().to_string();

    // Asked on the learner: the registry is replicated, live data probed.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let list = learner.get_json("/api/v1/services").await;
        // Admitted is not caught up: the registry may not have reached it yet.
        let entry = list["services"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["id"] == id.as_str()));
        if let Some(s) = entry
            && s["state"] == "learner"
            && s["role"] == "learner"
        {
            assert_eq!(s["reachable"], true);
            assert_eq!(s["name"], "core-127.0.0.3");
            let first = service(&list, sqlraft::naming::FIRST_SERVICE_ID);
            assert_eq!(first["leader"], true);
            assert_eq!(first["role"], "leader");
            break;
        }
        assert!(Instant::now() < deadline, "never a learner: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Removed through the learner itself: forwarded to the leader.
    let r = delete(&learner, &id).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + TIMEOUT;
    while !learner.node.is_removed() {
        assert!(Instant::now() < deadline, "the removed node did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = leader.get_json("/api/v1/services").await;
    assert_eq!(service(&list, &id)["state"], "removed");
    assert_eq!(list["learners"], 0);
    learner.stop().await;
    leader.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_is_a_consistent_sqlite_copy_at_the_index_it_names() {
    let h = Harness::start().await;
    h.post_json(
        "/db/execute",
        r#"["CREATE TABLE kept (v TEXT)", ["INSERT INTO kept VALUES (?)", "in the backup"]]"#,
    )
    .await;
    let r = h.get("/api/v1/system/backup").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let disposition = r.header("content-disposition").expect("a file name");
    assert!(
        disposition.starts_with("attachment; filename=\"sqlraft-00000000-"),
        "{disposition}"
    );
    assert!(r.header("x-sqlraft-applied-index").is_some());
    assert!(r.body.starts_with(b"SQLite format 3\0"));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("backup.sqlite3");
    std::fs::write(&path, &r.body).expect("write backup");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("the backup opens as SQLite");
    let (v,): (String,) = sqlx::query_as("SELECT v FROM kept")
        .fetch_one(&pool)
        .await
        .expect("the table is there");
    assert_eq!(v, "in the backup");
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .expect("integrity check");
    assert_eq!(check, "ok");
    // The header names the index the content stands for: the one recorded in it.
    let (recorded,): (i64,) =
        sqlx::query_as("SELECT value FROM _sqlraft_meta WHERE key = 'applied_index'")
            .fetch_one(&pool)
            .await
            .expect("applied index in the copy");
    assert_eq!(
        r.header("x-sqlraft-applied-index"),
        Some(recorded.to_string().as_str())
    );
    pool.close().await;
    h.stop().await;
}

async fn form_post(h: &Harness, path: &str, body: &str, origin: Option<&str>) -> client::Response {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(origin) = origin {
        headers.push(("Origin", origin));
    }
    client::request_with_headers(
        &h.http,
        "POST",
        path,
        &headers,
        Some(body.as_bytes()),
        TIMEOUT,
    )
    .await
    .expect("POST answered")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_interface_creates_and_removes_services_and_escapes_what_it_shows() {
    let h = Harness::start().await;
    let page = h.get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let text = page.text();
    assert!(text.contains("core-1"), "{text}");
    assert!(text.contains("Create a core service"));
    assert!(text.contains("leader"));
    for asset in ["/ui/style.css", "/ui/app.js"] {
        assert_eq!(h.get(asset).await.status, 200, "{asset}");
    }

    // Whatever comes back through the query string is escaped.
    let evil = "%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E";
    let page = h
        .get(&format!(
            "/?error={evil}&fqdn={evil}&raft_addr={evil}&created={evil}&removed={evil}"
        ))
        .await
        .text();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );

    // A bad host name: redirected back with the message and the values, escaped.
    let r = form_post(
        &h,
        "/ui/services",
        "fqdn=%3Cb%3Ebad%3C%2Fb%3E&raft_addr=%3Cb%3Ebad%3C%2Fb%3E%3A1",
        None,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("location").to_string();
    assert!(location.starts_with("/?error="), "{location}");
    let page = h.get(&location).await.text();
    assert!(
        page.contains("Cannot create the core service: fqdn:"),
        "{page}"
    );
    assert!(!page.contains("<b>bad"), "{page}");
    assert!(page.contains("value=\"&lt;b&gt;bad&lt;/b&gt;\""), "{page}");

    // A form too large for what it holds: 413, not "fill in both fields" (found by a
    // hostile tester).
    let huge = format!("fqdn={}&raft_addr=x", "a".repeat(64 << 10));
    let r = form_post(&h, "/ui/services", &huge, None).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);

    // A raft address written two ways (found by a hostile tester): refused, since the
    // service could never join with the address it would start with.
    let r = create(&h, "127.0.0.5", "127.0.0.5:017209").await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Missing fields.
    let r = form_post(&h, "/ui/services", "fqdn=x", None).await;
    assert_eq!(r.status, 303);
    assert!(
        r.header("location")
            .is_some_and(|l| l.contains("Fill%20in%20both")),
        "{:?}",
        r.headers
    );

    // From another site: refused, nothing created.
    let r = form_post(
        &h,
        "/ui/services",
        "fqdn=core-9.example.com&raft_addr=core-9.example.com%3A7209",
        Some("http://evil.example.com"),
    )
    .await;
    assert_eq!(r.status, 403);
    let list = h.get_json("/api/v1/services").await;
    assert_eq!(list["services"].as_array().map(Vec::len), Some(1));

    // Created: the page shows the install command.
    let origin = format!("http://{}", h.http);
    let r = form_post(
        &h,
        "/ui/services",
        "fqdn=core-2.example.com&raft_addr=core-2.example.com%3A7209",
        Some(&origin),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("location").to_string();
    let id = location
        .strip_prefix("/?created=")
        .and_then(|l| l.strip_suffix("#install"))
        .expect("created id")
        .to_string();
    let page = h.get(&format!("/?created={id}")).await.text();
    let command = format!(
        "{}/bin/sqlraft-core run --id {id} --root {} --raft.node.addr core-2.example.com:7209 --raft.join {} --http 0.0.0.0:{} --raft.insecure --install",
        root_of(&h),
        root_of(&h),
        h.node.raft_addr(),
        port_of(&h.http)
    );
    assert!(page.contains(&command), "{page}");
    assert!(page.contains("has not joined yet"), "{page}");

    // Removal: a confirmation page, then the removal.
    let confirm = h.get(&format!("/ui/services/{id}/remove")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.text().contains("Remove core-core-2.example.com?"));
    let missing = h.get("/ui/services/nobody/remove").await;
    assert_eq!(missing.status, 404);
    let r = form_post(&h, &format!("/ui/services/{id}/remove"), "", None).await;
    assert_eq!(r.status, 303, "{}", r.text());
    let location = r.header("location").expect("location").to_string();
    assert_eq!(location, format!("/?removed={id}"));
    let page = h.get(&location).await.text();
    assert!(
        page.contains("core-core-2.example.com was removed from the cluster."),
        "{page}"
    );
    assert!(page.contains("Removed core services"), "{page}");
    // Removing it again: the error is shown on the page.
    let r = form_post(&h, &format!("/ui/services/{id}/remove"), "", None).await;
    let page = h.get(r.header("location").expect("location")).await.text();
    assert!(page.contains("already removed"), "{page}");
    h.stop().await;
}
