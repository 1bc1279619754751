//! Users and permissions of the HTTP API, from an auth file in rqlite's format:
//!
//! ```json
//! [
//!   {"username": "admin", "password": "$2b$10$...", "perms": ["all"]},
//!   {"username": "reader", "password": "secret", "perms": ["query", "status"]},
//!   {"username": "*", "perms": ["status"]}
//! ]
//! ```
//!
//! A password is a bcrypt hash (`$2a$`, `$2b$`, `$2y$`) or, as rqlite also allows, the
//! password itself. The user `*` (no password) gives its permissions to everyone,
//! anonymous requests included. Clients authenticate with HTTP basic auth, as rqlite's
//! clients do; the web interface logs in once and keeps a session.
//!
//! A bcrypt check costs tens of milliseconds of CPU: a password checked once is
//! remembered (as a salted SHA-256, per user, until the file is read again), and at
//! most two checks run at a time, on blocking threads, so a flood of wrong passwords
//! cannot take the CPU from raft.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// A permission of rqlite's auth file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    /// Every permission.
    All,
    /// Writes (`/db/execute`, and `/db/request`, which also needs `query`).
    Execute,
    /// Reads (`/db/query`, `/db/hash`).
    Query,
    /// Backups (`/api/v1/system/backup`).
    Backup,
    /// Restores (`/api/v1/system/restore`).
    Load,
    /// Cluster state (`/status`, `/nodes`, `/metrics`, the service list, the web
    /// interface).
    Status,
    /// `/readyz` (which is public: load balancers ask it without credentials).
    Ready,
    /// Creating core services (they then join).
    Join,
    /// Joining as a non-voter (rqlite's; sqlraft has no read-only members: accepted in
    /// the file, it grants nothing here).
    JoinReadOnly,
    /// Removing core services.
    Remove,
    /// Taking a snapshot on request.
    Snapshot,
}

impl Perm {
    /// The name in the auth file.
    pub fn name(self) -> &'static str {
        match self {
            Perm::All => "all",
            Perm::Execute => "execute",
            Perm::Query => "query",
            Perm::Backup => "backup",
            Perm::Load => "load",
            Perm::Status => "status",
            Perm::Ready => "ready",
            Perm::Join => "join",
            Perm::JoinReadOnly => "join-read-only",
            Perm::Remove => "remove",
            Perm::Snapshot => "snapshot",
        }
    }

    /// Every permission but `all`.
    pub const EACH: [Perm; 10] = [
        Perm::Execute,
        Perm::Query,
        Perm::Backup,
        Perm::Load,
        Perm::Status,
        Perm::Ready,
        Perm::Join,
        Perm::JoinReadOnly,
        Perm::Remove,
        Perm::Snapshot,
    ];

    fn parse(name: &str) -> Option<Perm> {
        std::iter::once(Perm::All)
            .chain(Perm::EACH)
            .find(|p| p.name() == name)
    }
}

/// Errors of an auth file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read the auth file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid auth file.
    #[error("auth file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    perms: Vec<String>,
}

/// How a user's password is kept in the file.
enum Secret {
    /// A bcrypt hash.
    Bcrypt(String),
    /// The password itself (SHA-256 of it, for a comparison in constant time).
    Plain([u8; 32]),
}

struct User {
    secret: Secret,
    perms: BTreeSet<Perm>,
}

/// Who is asking, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `None`: anonymous.
    pub username: Option<String>,
    perms: BTreeSet<Perm>,
}

impl Principal {
    /// True when every one of `perms` is granted.
    pub fn may_all(&self, perms: &[Perm]) -> bool {
        self.missing(perms).is_empty()
    }

    /// Those of `perms` not granted.
    pub fn missing(&self, perms: &[Perm]) -> Vec<Perm> {
        if self.perms.contains(&Perm::All) {
            return Vec::new();
        }
        perms
            .iter()
            .filter(|p| !self.perms.contains(p))
            .copied()
            .collect()
    }
}

/// The users of an auth file. Its `Debug` shows names and permissions, never secrets.
pub struct Users {
    path: PathBuf,
    users: HashMap<String, User>,
    /// The permissions of `*`: everyone's.
    everyone: BTreeSet<Perm>,
    /// Passwords checked against a bcrypt hash: SHA-256 of salt and password, per user.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    salt: [u8; 16],
    /// bcrypt checks running at once.
    checks: Arc<Semaphore>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Users")
            .field("path", &self.path)
            .field("users", &names)
            .field("everyone", &self.everyone)
            .finish()
    }
}

fn digest(salt: &[u8], password: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(salt);
    hash.update(password.as_bytes());
    hash.finalize().into()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_bcrypt(text: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|p| text.starts_with(p))
}

impl Users {
    /// Reads an auth file.
    pub fn load(path: &Path) -> Result<Users, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Users::parse(path, &text)
    }

    /// Parses an auth file's text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Users, AuthError> {
        let invalid = |reason: String| AuthError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let entries: Vec<Entry> = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "not rqlite's auth file format (a JSON list of {{\"username\", \"password\", \"perms\"}}): {e}"
            ))
        })?;
        let mut users = HashMap::new();
        let mut everyone = BTreeSet::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let mut perms = BTreeSet::new();
            for name in &entry.perms {
                let perm = Perm::parse(name).ok_or_else(|| {
                    invalid(format!(
                        "user {:?}: unknown permission {name:?} (known: all, {})",
                        entry.username,
                        Perm::EACH.map(Perm::name).join(", ")
                    ))
                })?;
                perms.insert(perm);
            }
            if entry.username == "*" {
                everyone.extend(perms);
                continue;
            }
            if entry.username.is_empty() || entry.username.contains(':') {
                return Err(invalid(format!(
                    "entry {}: a user name must not be empty or contain ':'",
                    i + 1
                )));
            }
            let password = entry
                .password
                .filter(|p| !p.is_empty())
                .ok_or_else(|| invalid(format!("user {:?} has no password", entry.username)))?;
            let secret = if is_bcrypt(&password) {
                password.parse::<bcrypt::HashParts>().map_err(|e| {
                    invalid(format!(
                        "user {:?}: not a usable bcrypt hash: {e}",
                        entry.username
                    ))
                })?;
                Secret::Bcrypt(password)
            } else {
                Secret::Plain(digest(&[], &password))
            };
            if users
                .insert(entry.username.clone(), User { secret, perms })
                .is_some()
            {
                return Err(invalid(format!("user {:?} appears twice", entry.username)));
            }
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..]);
        Ok(Users {
            path: path.to_path_buf(),
            users,
            everyone,
            verified: Mutex::new(HashMap::new()),
            salt,
            checks: Arc::new(Semaphore::new(2)),
        })
    }

    /// Anonymous: what `*` grants.
    pub fn anonymous(&self) -> Principal {
        Principal {
            username: None,
            perms: self.everyone.clone(),
        }
    }

    /// The principal for `username` and `password`; `None` when the user is unknown
    /// or the password wrong.
    pub async fn authenticate(&self, username: &str, password: &str) -> Option<Principal> {
        let user = self.users.get(username)?;
        let ok = match &user.secret {
            Secret::Plain(stored) => same(stored, &digest(&[], password)),
            Secret::Bcrypt(hash) => self.check_bcrypt(username, hash, password).await,
        };
        ok.then(|| Principal {
            username: Some(username.to_string()),
            perms: user.perms.union(&self.everyone).copied().collect(),
        })
    }

    async fn check_bcrypt(&self, username: &str, hash: &str, password: &str) -> bool {
        // bcrypt reads the first 72 bytes only: a longer password would match every
        // password sharing them (Go's bcrypt, rqlite's, refuses it too).
        if password.len() > BCRYPT_MAX_BYTES {
            return false;
        }
        let seen = digest(&self.salt, password);
        let remembered = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(username)
            .copied();
        if remembered.is_some_and(|r| same(&r, &seen)) {
            return true;
        }
        let Ok(_permit) = Arc::clone(&self.checks).acquire_owned().await else {
            return false;
        };
        let (hash, candidate) = (hash.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(candidate, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(username.to_string(), seen);
        }
        ok
    }
}

/// `sqlraft-core auth init`: writes an auth file with one administrator (every
/// permission) and a random password, and the password into `password_file` (both
/// readable by their owner only). Existing files are never overwritten. Returns the
/// password.
pub fn init_file(
    file: &Path,
    user: &str,
    password_file: &Path,
) -> Result<String, crate::CoreError> {
    use crate::CoreError;
    use base64::Engine as _;
    if user.is_empty() || user.contains(':') || user == "*" {
        return Err(CoreError::Usage(format!(
            "--user {user:?}: a user name must not be empty, `*` or contain ':'"
        )));
    }
    for path in [file, password_file] {
        if path.exists() {
            return Err(CoreError::Failed(format!(
                "{} exists: it is never overwritten (remove it first)",
                path.display()
            )));
        }
    }
    let mut random = Vec::with_capacity(32);
    random.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    random.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    // 18 bytes of the 244 random bits: 24 characters.
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[..18]);
    let hash = bcrypt::hash(&password, 10)
        .map_err(|e| CoreError::Failed(format!("cannot hash the password: {e}")))?;
    let text = serde_json::to_string_pretty(&serde_json::json!([
        {"username": user, "password": hash, "perms": ["all"]}
    ]))
    .map_err(|e| CoreError::Failed(e.to_string()))?;
    write_private(password_file, &format!("{password}\n"))?;
    write_private(file, &format!("{text}\n"))?;
    Ok(password)
}

/// The longest password bcrypt reads whole.
const BCRYPT_MAX_BYTES: usize = 72;

/// `sqlraft-core auth hash`: a bcrypt hash of `password`, for an auth file.
pub fn hash_password(password: &str) -> Result<String, crate::CoreError> {
    if password.is_empty() {
        return Err(crate::CoreError::Usage("an empty password".into()));
    }
    if password.len() > BCRYPT_MAX_BYTES {
        // Found by a review: bcrypt would keep the first 72 bytes and drop the rest.
        return Err(crate::CoreError::Usage(format!(
            "the password is {} bytes long: bcrypt takes at most {BCRYPT_MAX_BYTES}",
            password.len()
        )));
    }
    bcrypt::hash(password, 10).map_err(|e| crate::CoreError::Failed(format!("bcrypt: {e}")))
}

fn write_private(path: &Path, text: &str) -> Result<(), crate::CoreError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io =
        |e: std::io::Error| crate::CoreError::Io(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)
}

/// The user name and password of an `Authorization: Basic` header; `None` without one
/// or with another scheme (a proxy's `Bearer` token: the request is anonymous, as in
/// rqlite; found by a review), `Some(Err)` for a `Basic` one that cannot be read.
pub fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<Result<(String, String), ()>> {
    use base64::Engine as _;
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    if let Ok(text) = value.to_str()
        && let Some(scheme) = text.split_whitespace().next()
        && !scheme.eq_ignore_ascii_case("basic")
    {
        return None;
    }
    let parsed = (|| {
        let text = value.to_str().ok()?;
        let (_, encoded) = text.trim().split_once(' ')?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (user, password) = text.split_once(':')?;
        Some((user.to_string(), password.to_string()))
    })();
    Some(parsed.ok_or(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(json: &str) -> Result<Users, AuthError> {
        Users::parse(Path::new("auth.json"), json)
    }

    /// bcrypt reads 72 bytes: a longer password is not hashed, and never matches a hash
    /// (found by a review: it matched every password with the same first 72 bytes).
    #[tokio::test]
    async fn passwords_longer_than_bcrypt_reads_are_refused() {
        let long = "p".repeat(72);
        let hash = bcrypt::hash(&long, 4).expect("hash");
        let u = users(&format!(
            r#"[{{"username": "u", "password": "{hash}", "perms": ["all"]}}]"#
        ))
        .expect("valid");
        assert!(u.authenticate("u", &long).await.is_some());
        assert!(u.authenticate("u", &format!("{long}x")).await.is_none());
        assert!(hash_password(&"p".repeat(73)).is_err());
        let hashed = hash_password(&long).expect("72 bytes are fine");
        assert!(bcrypt::verify(&long, &hashed).expect("verify"));
    }

    #[tokio::test]
    async fn rqlite_auth_files_grant_what_they_say() {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        let file = format!(
            r#"[
              {{"username": "admin", "password": "{hash}", "perms": ["all"]}},
              {{"username": "reader", "password": "plain", "perms": ["query"]}},
              {{"username": "*", "perms": ["status", "ready"]}}
            ]"#
        );
        let u = users(&file).expect("valid");
        let admin = u.authenticate("admin", "s3cret").await.expect("admin");
        assert!(admin.may_all(&Perm::EACH));
        // Remembered: the second check is the cache's, and still exact.
        assert!(u.authenticate("admin", "s3cret").await.is_some());
        assert!(u.authenticate("admin", "s3cret ").await.is_none());
        assert!(u.authenticate("admin", "plain").await.is_none());
        let reader = u.authenticate("reader", "plain").await.expect("reader");
        assert!(reader.may_all(&[Perm::Query, Perm::Status]));
        assert!(!reader.may_all(&[Perm::Execute]));
        assert!(u.authenticate("reader", "wrong").await.is_none());
        assert!(u.authenticate("nobody", "plain").await.is_none());
        let anonymous = u.anonymous();
        assert!(anonymous.may_all(&[Perm::Status]));
        assert!(!anonymous.may_all(&[Perm::Query]));
        let shown = format!("{u:?}");
        assert!(
            !shown.contains("plain") && !shown.contains(&hash),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn an_initial_auth_file_lets_its_administrator_in() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (file, secret) = (
            dir.path().join("auth.json"),
            dir.path().join("admin.password"),
        );
        let password = init_file(&file, "admin", &secret).expect("init");
        assert_eq!(password.len(), 24);
        assert_eq!(
            std::fs::read_to_string(&secret)
                .expect("password file")
                .trim(),
            password
        );
        use std::os::unix::fs::PermissionsExt;
        for path in [&file, &secret] {
            let mode = std::fs::metadata(path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let users = Users::load(&file).expect("valid auth file");
        let admin = users.authenticate("admin", &password).await.expect("admin");
        assert!(admin.may_all(&Perm::EACH));
        assert!(
            init_file(&file, "admin", &dir.path().join("other")).is_err(),
            "never overwritten"
        );
        assert!(
            !std::fs::read_to_string(&file)
                .expect("file")
                .contains(&password)
        );
    }

    #[test]
    fn bad_auth_files_are_refused_with_the_reason() {
        for (json, says) in [
            ("{}", "JSON list"),
            (r#"[{"username": "a", "perms": ["all"]}]"#, "no password"),
            (
                r#"[{"username": "a", "password": "x", "perms": ["everything"]}]"#,
                "unknown permission",
            ),
            (
                r#"[{"username": "a", "password": "x"}, {"username": "a", "password": "y"}]"#,
                "twice",
            ),
            (r#"[{"username": "a:b", "password": "x"}]"#, "':'"),
            (
                r#"[{"username": "a", "password": "$2b$10$short"}]"#,
                "bcrypt",
            ),
            (r#"[{"username": "a", "pasword": "x"}]"#, "unknown field"),
        ] {
            let e = users(json).expect_err(json).to_string();
            assert!(e.contains(says), "{json}: {e}");
        }
    }

    #[test]
    fn basic_credentials_are_read_as_clients_send_them() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        // "bob:pa:ss" — a password may contain ':'.
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Basic Ym9iOnBhOnNz".parse().unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(Ok(("bob".into(), "pa:ss".into())))
        );
        h.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer xyz".parse().unwrap(),
        );
        assert_eq!(basic_credentials(&h), None, "another scheme: anonymous");
        for unreadable in ["Basic", "Basic !!!", "basic Ym9i"] {
            h.insert(
                axum::http::header::AUTHORIZATION,
                unreadable.parse().unwrap(),
            );
            assert_eq!(basic_credentials(&h), Some(Err(())), "{unreadable}");
        }
    }
}
