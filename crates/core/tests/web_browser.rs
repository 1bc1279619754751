//! The web interface in a real headless browser: Debian's chromium, driven through
//! chromedriver's W3C WebDriver HTTP API by a small client of our own. Real
//! `sqlraft-core run` processes, one per loopback address (127.0.0.1, .2, .3), the way
//! an operator grows a cluster: create a service in the form, copy the install command,
//! start it, watch it become a learner and then a voter, remove one with the button and
//! its confirmation. Secure as `install.sh` leaves a cluster: mutual TLS between the
//! services and users (`--auth`): the browser signs in first, and each created service
//! is started with the certificate the page issued for it.
//!
//! Needs `chromium` and `chromedriver` (scripts/setup.sh installs them). Set
//! `SQLRAFT_SCREENSHOT=<file.png>` to keep the final screenshot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, free_port_on};
use serde_json::{Value as Json, json};
use sqlraft_core::client;

const BIN: &str = env!("CARGO_BIN_EXE_sqlraft-core");
const FIRST_ID: &str = "00000000-0000-0000-0000-000000000000";
const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
const WAITS_FOR_A_SECOND_ONE: &str = "is a learner: it becomes a voter when one more core service joins, so that the number of voters stays odd";

/// A `sqlraft-core run` child process.
struct CoreProcess {
    guard: ChildGuard,
    http: String,
    stderr: PathBuf,
}

impl CoreProcess {
    fn start(
        root: &Path,
        id: &str,
        host: &str,
        raft_addr: &str,
        join: Option<&str>,
        security: &[String],
    ) -> Self {
        let raft_port = raft_addr.rsplit_once(':').expect("port").1;
        let http = format!("{host}:{}", free_port_on(host));
        let stderr = root.join(format!("{host}.stderr"));
        let mut command = Command::new(BIN);
        command
            .args(["run", "--id", id, "--root"])
            .arg(root)
            .args(["--raft.node.addr", raft_addr])
            .args(["--raft.node.listen", &format!("{host}:{raft_port}")])
            .args(["--http", &http])
            .args(security)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        if let Some(join) = join {
            command.args(["--raft.join", join]);
        }
        let child = command.spawn().expect("start sqlraft-core run");
        let process = CoreProcess {
            guard: ChildGuard(Some(child)),
            http,
            stderr,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + WAIT;
        let rt = runtime();
        loop {
            let ready = rt
                .block_on(client::get(&self.http, "/readyz", Duration::from_secs(1)))
                .is_ok_and(|r| r.status == 200);
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready: {}",
                self.http,
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
            std::thread::sleep(POLL);
        }
    }

    fn stop(mut self) {
        if self.guard.0.is_some() {
            self.guard.sigterm();
            let status = self.guard.wait_exit(Duration::from_secs(30));
            assert!(status.success(), "{} exited with {status}", self.http);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// chromedriver (its own process group, so chromium goes with it) and one session.
struct Browser {
    driver: ChildGuard,
    addr: String,
    session: String,
    profile: PathBuf,
}

/// One HTTP/1.1 exchange (chromedriver refuses HTTP/1.0), `Connection: close`, blocking.
/// Returns the status and the body (chunked bodies decoded).
fn http11(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // chromedriver may keep the connection open: stop at the end of the answer.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let complete = |raw: &[u8]| -> bool {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        match length {
            Some(n) => raw.len() >= end + 4 + n,
            None => head.contains("chunked") && raw.ends_with(b"0\r\n\r\n"),
        }
    };
    while !complete(&raw) {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let mut payload = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut decoded = Vec::new();
        let mut rest = payload.as_slice();
        while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            rest = &rest[line_end + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            decoded.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or_default();
        }
        payload = decoded;
    }
    Ok((status, String::from_utf8_lossy(&payload).into_owned()))
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        use std::os::unix::process::CommandExt;
        let chromium = find_program(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"])
            .expect("chromium is not installed: run scripts/setup.sh");
        let chromedriver = find_program(&["/usr/bin/chromedriver"])
            .expect("chromedriver is not installed: run scripts/setup.sh");
        let port = free_port_on("127.0.0.1");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let mut browser = Browser {
            driver: ChildGuard(Some(driver)),
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            profile: profile.to_path_buf(),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http11(&browser.addr, "GET", "/status", None)
                .ok()
                .and_then(|(_, text)| serde_json::from_str::<Json>(&text).ok())
                .is_some_and(|j| j["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(POLL);
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let session = browser.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
            }}})),
        );
        browser.session = session["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        browser
    }

    /// One WebDriver command; returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Json>) -> Result<Json, String> {
        let body = body.map(|b| b.to_string());
        let (status, text) = http11(&self.addr, method, path, body.as_deref())?;
        let json: Json = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status != 200 {
            return Err(format!("{status}: {}", json["value"]));
        }
        Ok(json["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let value = self
            .try_call(
                "POST",
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        // The W3C element reference is the object's only value.
        value
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Json::as_str)
            .map(str::to_string)
    }

    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(element) = self.try_find(css) {
                return element;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} on the page:\n{}",
                self.page_text()
            );
            std::thread::sleep(POLL);
        }
    }

    fn text_of(&self, element: &str) -> String {
        self.call(
            "GET",
            &self.session_path(&format!("/element/{element}/text")),
            None,
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{element}/click")),
            Some(json!({})),
        );
    }

    fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call(
            "POST",
            &self.session_path(&format!("/element/{element}/clear")),
            Some(json!({})),
        );
        self.call(
            "POST",
            &self.session_path(&format!("/element/{element}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// The visible text of the page (empty while it is being replaced).
    fn page_text(&self) -> String {
        self.try_find("body")
            .and_then(|body| {
                self.try_call(
                    "GET",
                    &self.session_path(&format!("/element/{body}/text")),
                    None,
                )
                .ok()
            })
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Waits until the page's text satisfies `done` (the page refreshes itself).
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.page_text();
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}:\n{text}"
            );
            std::thread::sleep(POLL);
        }
    }

    fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call("GET", &self.session_path("/screenshot"), None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("decodes");
        std::fs::write(path, bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.session_path(""), None);
        }
        if let Some(pid) = self.driver.0.as_ref().map(|c| c.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Whatever chromium process still uses this test's profile (it may have left
        // the process group) is ended by its pid.
        let profile = self.profile.to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&profile) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// The value after `flag` in the install command.
fn flag<'a>(command: &'a str, flag: &str) -> &'a str {
    let mut words = command.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == flag)
        .unwrap_or_else(|| panic!("{flag} missing in {command}"));
    words
        .next()
        .unwrap_or_else(|| panic!("{flag} has no value"))
}

/// Fills in the form, submits it, and returns the install command the page shows.
fn create_in_browser(browser: &Browser, base: &str, host: &str, root: &Path) -> String {
    browser.goto(&format!("{base}/"));
    let raft = format!("{host}:{}", free_port_on(host));
    browser.type_into("#fqdn", host);
    browser.type_into("#raft_addr", &raft);
    browser.click("#create-button");
    let element = browser.find("#install-command");
    let command = browser.text_of(&element);
    assert_eq!(flag(&command, "--raft.node.addr"), raft, "{command}");
    assert!(
        command.contains("/bin/sqlraft-core run --id ") && command.ends_with(" --install"),
        "{command}"
    );
    let id = flag(&command, "--id");
    // The cluster's own root and HTTP port, not the defaults.
    let (root, port) = (root.display(), base.rsplit_once(':').expect("port").1);
    assert!(command.contains(&format!("--root {root} ")), "{command}");
    assert!(
        command.ends_with(&format!(
            "--http 0.0.0.0:{port} --raft.tls.ca {root}/tls/ca.crt \
             --raft.tls.cert {root}/tls/{id}.crt --raft.tls.key {root}/tls/{id}.key \
             --auth {root}/auth.json --install"
        )),
        "{command}"
    );
    command
}

/// The three PEM blocks of the certificate commands the page shows once (CA,
/// certificate, key), written into `dir` as the `run` flags name them.
fn write_issued(browser: &Browser, dir: &Path, id: &str) -> Vec<String> {
    let element = browser.find("#certificate-script");
    let script = browser.text_of(&element);
    let blocks: Vec<String> = script
        .split("-----BEGIN ")
        .skip(1)
        .map(|rest| {
            let end = rest.find("-----END ").expect("END line");
            let tail = &rest[end..];
            let line_end = tail[9..].find("-----").expect("END dashes") + 9 + 5;
            format!("-----BEGIN {}{}\n", &rest[..end], &tail[..line_end])
        })
        .collect();
    assert_eq!(blocks.len(), 3, "{script}");
    std::fs::create_dir_all(dir).expect("dir");
    let files = [
        dir.join("ca.crt"),
        dir.join(format!("{id}.crt")),
        dir.join(format!("{id}.key")),
    ];
    for (file, pem) in files.iter().zip(&blocks) {
        std::fs::write(file, pem).expect("write");
    }
    let [ca, cert, key] = files.map(|f| f.display().to_string());
    vec![
        "--raft.tls.ca".into(),
        ca,
        "--raft.tls.cert".into(),
        cert,
        "--raft.tls.key".into(),
        key,
    ]
}

/// Starts the service the way the install command says (in the foreground, on its own
/// loopback address, without --install), with the certificate the page issued and
/// the users file.
fn start_from_command(
    browser: &Browser,
    root: &Path,
    host: &str,
    command: &str,
    auth: &Path,
) -> (String, CoreProcess) {
    let id = flag(command, "--id").to_string();
    let raft = flag(command, "--raft.node.addr");
    let join = flag(command, "--raft.join");
    let mut security = write_issued(browser, &root.join("issued").join(host), &id);
    security.extend(["--auth".to_string(), auth.display().to_string()]);
    (
        id.clone(),
        CoreProcess::start(root, &id, host, raft, Some(join), &security),
    )
}

#[test]
fn a_cluster_grows_and_shrinks_through_the_web_interface() {
    let temp = tempfile::tempdir().expect("temp dir");
    let root = temp.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    let first_raft = format!("127.0.0.1:{}", free_port_on("127.0.0.1"));
    // As install.sh sets the first service up: a CA, its certificate, an administrator.
    let tls = root.join("tls");
    let ca = sqlraft_core::certs::Ca::new(30).expect("CA");
    ca.write(&tls).expect("write CA");
    let files = sqlraft_core::certs::write_service_files(&ca, FIRST_ID, "127.0.0.1", 30, &tls)
        .expect("first certificate");
    let auth = root.join("auth.json");
    let password =
        sqlraft_core::auth::init_file(&auth, "admin", &root.join("admin.password")).expect("users");
    let mut security = sqlraft_core::certs::run_flags(&files);
    security.extend(["--auth".to_string(), auth.display().to_string()]);
    let first = CoreProcess::start(&root, FIRST_ID, "127.0.0.1", &first_raft, None, &security);
    let base = format!("http://{}", first.http);

    let browser = Browser::start(&temp.path().join("profile"));
    // Not signed in: the sign-in page; a wrong password is refused.
    browser.goto(&format!("{base}/"));
    browser.wait_for("the sign-in page", |t| t.contains("Sign in"));
    browser.type_into("#username", "admin");
    browser.type_into("#password", "wrong");
    browser.click("#login-button");
    browser.wait_for("the refusal", |t| {
        t.contains("Wrong user name or password.")
    });
    browser.type_into("#username", "admin");
    browser.type_into("#password", &password);
    browser.click("#login-button");
    browser.wait_for("the first service", |t| {
        t.contains("Signed in as admin")
            && t.contains("core-1")
            && t.contains("1 voter, 0 learners")
    });
    browser.wait_for("the first service", |t| {
        t.contains("core-1") && t.contains("1 voter, 0 learners")
    });

    // An invalid address: the error is on the page, the values are kept.
    browser.type_into("#fqdn", "127.0.0.2");
    browser.type_into("#raft_addr", "127.0.0.2");
    browser.click("#create-button");
    browser.wait_for("the error", |t| {
        t.contains("Cannot create the core service") && t.contains("has no port")
    });

    // The second service: created in the form, started with the command shown.
    let command = create_in_browser(&browser, &base, "127.0.0.2", &root);
    assert_eq!(flag(&command, "--raft.join"), first_raft);
    browser.wait_for("the created service", |t| t.contains("has not joined yet"));
    let (second_id, second) = start_from_command(&browser, &root, "127.0.0.2", &command, &auth);
    browser.wait_for("the learner's explanation", |t| {
        t.contains(&format!("core-127.0.0.2 {WAITS_FOR_A_SECOND_ONE}"))
    });

    // The third: both learners become voters together.
    let command = create_in_browser(&browser, &base, "127.0.0.3", &root);
    let (third_id, third) = start_from_command(&browser, &root, "127.0.0.3", &command, &auth);
    browser.goto(&format!("{base}/"));
    let text = browser.wait_for("three voters", |t| {
        t.contains("3 voters, 0 learners") && !t.contains("learner:")
    });
    assert!(text.contains("leader: core-1"), "{text}");
    for id in [&second_id, &third_id] {
        let row = browser.find(&format!("tr[data-id='{id}'] td.role"));
        let deadline = Instant::now() + WAIT;
        while browser.text_of(&row) != "follower" {
            assert!(Instant::now() < deadline, "{id} is not a follower");
            std::thread::sleep(POLL);
        }
    }

    // The query console: a write through the leader with its RETURNING rows, then a
    // read, each shown as a table (text shown as text, not markup).
    browser.click("#console-link");
    browser.wait_for("the console", |t| t.contains("Query console"));
    browser.type_into(
        "#sql",
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
         INSERT INTO notes (body) VALUES ('<i>hello</i>') RETURNING id, body",
    );
    browser.click("#run-execute");
    browser.wait_for("the write's rows", |t| {
        t.contains("Written through the leader") && t.contains("<i>hello</i>")
    });
    browser.type_into("#sql", "SELECT body, length(body) AS n FROM notes");
    browser.click("#run-query");
    browser.wait_for("the read's table", |t| {
        t.contains("Read on core-1") && t.contains("<i>hello</i>") && t.contains("1 row.")
    });
    browser.goto(&format!("{base}/"));

    // Remove the third: the button, then the confirmation.
    browser.click(&format!("#remove-{third_id}"));
    browser.wait_for("the confirmation", |t| {
        t.contains("Remove core-127.0.0.3?") && t.contains("another voter becomes a learner")
    });
    browser.click("#confirm-remove");
    let text = browser.wait_for("the removal", |t| {
        t.contains("core-127.0.0.3 was removed from the cluster.")
    });
    assert!(text.contains("Removed core services"), "{text}");
    // Two voters would be even: one of the remaining two is a learner again, waiting.
    browser.wait_for("one voter and a waiting learner", |t| {
        t.contains("1 voter, 1 learner") && t.contains(WAITS_FOR_A_SECOND_ONE)
    });
    let removed_row = browser.find(&format!("#removed tr[data-id='{third_id}']"));
    assert!(browser.text_of(&removed_row).contains("core-127.0.0.3"));

    // The removed service stops by itself, with status 0 and a message.
    let mut third = third;
    let status = third.guard.wait_exit(WAIT);
    assert!(status.success(), "removed service exited with {status}");
    let said = std::fs::read_to_string(&third.stderr).unwrap_or_default();
    assert!(said.contains("was removed from the cluster"), "{said}");

    let shot = std::env::var_os("SQLRAFT_SCREENSHOT")
        .map_or_else(|| temp.path().join("cluster.png"), PathBuf::from);
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000));

    // Signing out: the cluster page asks to sign in again.
    browser.goto(&format!("{base}/"));
    browser.click("#logout-button");
    browser.wait_for("the sign-in page again", |t| {
        t.contains("Sign in") && !t.contains("Signed in as")
    });

    drop(browser);
    second.stop();
    first.stop();
}
