//! The named workloads: what each request is and where it is sent.

use crate::error::CoreError;

/// The table every workload writes and reads (created when missing).
pub(crate) const TABLE: &str = "bench_rows";

/// Statements per request of `write-batch`.
pub(crate) const BATCH_ROWS: usize = 10;

/// Which node a workload's requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Leader,
    Follower,
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One small row inserted.
    Write,
    /// [`BATCH_ROWS`] small rows inserted by one request (one raft entry).
    WriteBatch,
    /// One row of `--large-bytes` bytes inserted.
    WriteLarge,
    /// One row read by its key at a read level.
    Read(&'static str),
    /// Nine reads (level `none`) for every write, each request one or the other.
    Mixed,
}

/// A workload the bench can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Workload {
    pub name: &'static str,
    pub kind: Kind,
    pub target: Target,
    pub about: &'static str,
}

impl Workload {
    /// Rows each request writes (0 for reads; mixed counts as 0).
    pub(crate) fn rows_per_request(&self) -> usize {
        match self.kind {
            Kind::Write | Kind::WriteLarge => 1,
            Kind::WriteBatch => BATCH_ROWS,
            Kind::Read(_) | Kind::Mixed => 0,
        }
    }
}

const fn read(
    name: &'static str,
    level: &'static str,
    target: Target,
    about: &'static str,
) -> Workload {
    Workload {
        name,
        kind: Kind::Read(level),
        target,
        about,
    }
}

/// Every workload, in the order `--list` prints them.
pub(crate) const WORKLOADS: &[Workload] = &[
    Workload {
        name: "write",
        kind: Kind::Write,
        target: Target::Leader,
        about: "one small row inserted per request, sent to the leader",
    },
    Workload {
        name: "write-follower",
        kind: Kind::Write,
        target: Target::Follower,
        about: "one small row inserted per request, sent to a follower (forwarded)",
    },
    Workload {
        name: "write-batch",
        kind: Kind::WriteBatch,
        target: Target::Leader,
        about: "ten small rows inserted by one request (one raft entry), to the leader",
    },
    Workload {
        name: "write-large",
        kind: Kind::WriteLarge,
        target: Target::Leader,
        about: "one row of --large-bytes bytes inserted per request, to the leader",
    },
    read(
        "read-none-leader",
        "none",
        Target::Leader,
        "a row read by key from the leader's own database (level=none)",
    ),
    read(
        "read-none-follower",
        "none",
        Target::Follower,
        "a row read by key from a follower's own database (level=none)",
    ),
    read(
        "read-linearizable-leader",
        "linearizable",
        Target::Leader,
        "a row read by key on the leader, level=linearizable (ReadIndex)",
    ),
    read(
        "read-linearizable-follower",
        "linearizable",
        Target::Follower,
        "a row read by key on a follower, level=linearizable (ReadIndex from the leader)",
    ),
    read(
        "read-strong-leader",
        "strong",
        Target::Leader,
        "a row read by key on the leader, level=strong (through the log)",
    ),
    read(
        "read-strong-follower",
        "strong",
        Target::Follower,
        "a row read by key through a follower, level=strong (forwarded, through the log)",
    ),
    Workload {
        name: "mixed",
        kind: Kind::Mixed,
        target: Target::Follower,
        about: "on a follower: 9 of 10 requests read a row (level=none), 1 inserts one",
    },
];

/// The workloads named, in the order given; an unknown name is refused.
pub(crate) fn by_names(names: &[String]) -> Result<Vec<Workload>, CoreError> {
    let mut chosen = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let workload = WORKLOADS.iter().find(|w| w.name == name).ok_or_else(|| {
            CoreError::Usage(format!(
                "unknown workload {name:?}; known: {}",
                WORKLOADS
                    .iter()
                    .map(|w| w.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if !chosen.contains(workload) {
            chosen.push(*workload);
        }
    }
    if chosen.is_empty() {
        return Err(CoreError::Usage("no workload given".into()));
    }
    Ok(chosen)
}

/// The request for one operation: its path and JSON body. `n` counts the client's
/// operations (it picks reads and writes in `mixed`), `key` is a row to read.
pub(crate) fn request(
    workload: &Workload,
    n: u64,
    key: u64,
    payload: &str,
    large: &str,
) -> (String, String) {
    let insert = format!("INSERT INTO {TABLE} (v) VALUES (?)");
    let write = |value: &str, rows: usize| {
        let one = serde_json::json!([insert, value]);
        let body = serde_json::Value::Array(vec![one; rows]).to_string();
        ("/db/execute".to_string(), body)
    };
    let read = |level: &str| {
        let body = serde_json::json!([[format!("SELECT id, v FROM {TABLE} WHERE id = ?"), key]])
            .to_string();
        (format!("/db/query?level={level}"), body)
    };
    match workload.kind {
        Kind::Write => write(payload, 1),
        Kind::WriteBatch => write(payload, BATCH_ROWS),
        Kind::WriteLarge => write(large, 1),
        Kind::Read(level) => read(level),
        Kind::Mixed if n % 10 == 9 => write(payload, 1),
        Kind::Mixed => read("none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let names: Vec<String> = WORKLOADS.iter().map(|w| w.name.to_string()).collect();
        let chosen = by_names(&names).unwrap();
        assert_eq!(chosen.len(), WORKLOADS.len());
        assert!(by_names(&["nope".into()]).is_err());
        assert!(by_names(&[]).is_err());
    }

    #[test]
    fn requests_are_rqlite_statements() {
        let batch = WORKLOADS.iter().find(|w| w.name == "write-batch").unwrap();
        let (path, body) = request(batch, 0, 1, "x", "y");
        assert_eq!(path, "/db/execute");
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), BATCH_ROWS);
        assert_eq!(parsed[0][1], "x");
        let mixed = WORKLOADS.iter().find(|w| w.name == "mixed").unwrap();
        let kinds: Vec<String> = (0..10).map(|n| request(mixed, n, 5, "x", "y").0).collect();
        assert_eq!(kinds.iter().filter(|p| *p == "/db/execute").count(), 1);
        let read = request(mixed, 0, 5, "x", "y");
        assert_eq!(read.0, "/db/query?level=none");
        assert!(read.1.contains("WHERE id = ?") && read.1.ends_with(",5]]"));
    }
}
