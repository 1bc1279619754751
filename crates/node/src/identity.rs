//! `raft/identity`: which service a directory belongs to and its raft id.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Fatal, Result};

pub(crate) const IDENTITY_FILE: &str = "identity";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub service_id: String,
    pub raft_id: u64,
}

pub(crate) fn load(raft_dir: &Path) -> Result<Option<Identity>> {
    let path = raft_dir.join(IDENTITY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Fatal::io(format!("cannot read {}", path.display()), e));
        }
    };
    let bad = || Fatal::corrupt(format!("{} is damaged", path.display()));
    let mut service_id = None;
    let mut raft_id = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("service_id", v)) => service_id = Some(v.trim().to_string()),
            Some(("raft_id", v)) => raft_id = Some(v.trim().parse::<u64>().map_err(|_| bad())?),
            _ => {}
        }
    }
    match (service_id, raft_id) {
        (Some(service_id), Some(raft_id)) if raft_id > 0 => Ok(Some(Identity {
            service_id,
            raft_id,
        })),
        _ => Err(bad()),
    }
}

/// Writes the identity atomically.
pub(crate) fn store(raft_dir: &Path, identity: &Identity) -> Result<()> {
    let text = format!(
        "service_id={}\nraft_id={}\n",
        identity.service_id, identity.raft_id
    );
    write_atomically(raft_dir, IDENTITY_FILE, text.as_bytes())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old file or the new
/// one, never a mix: temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let io = |e: std::io::Error| Fatal::io(format!("cannot write {name} in {}", dir.display()), e);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join(name)).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}
