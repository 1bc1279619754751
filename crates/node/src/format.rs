//! `<dir>/format`: the format of a node directory's data (raft log, snapshots, state
//! database) and the sqlraft version that last opened it.
//!
//! A version reads the formats from [`OLDEST_READABLE_FORMAT`] to [`DATA_FORMAT`] and
//! writes [`DATA_FORMAT`]. At start the file is checked before anything else is opened:
//! a directory in a newer format (written by a newer version: a downgrade across a
//! format change) or in a format too old to read is refused with what to run instead,
//! and nothing in it changes. A directory without the file was written before the file
//! existed, in format 1. After the check the file is rewritten when its format or
//! version differs, so it always names the newest version that opened the directory.
//!
//! Bump [`DATA_FORMAT`] with any change that an older version would misread: the log
//! entry encoding, the snapshot file, the tables sqlraft keeps in the state database.

use std::path::Path;

use crate::error::{NodeError, Result};
use crate::identity::write_atomically;

/// The data format this version writes.
pub const DATA_FORMAT: u32 = 1;
/// The oldest data format this version opens (and moves to [`DATA_FORMAT`]).
pub const OLDEST_READABLE_FORMAT: u32 = 1;
/// The file, in the node directory.
pub const FORMAT_FILE: &str = "format";

/// The format file is a few dozen bytes; anything larger is not one.
const MAX_FILE_BYTES: u64 = 4096;

/// This build's version, as it is recorded.
const THIS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a directory's format file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFormat {
    /// The data format.
    pub format: u32,
    /// The version that last opened the directory (`unknown` for a directory written
    /// before the file existed).
    pub written_by: String,
}

/// Reads `<dir>/format`. `None` for a directory that holds no node yet; format 1 for
/// one written before the file existed.
pub fn read(dir: &Path) -> Result<Option<DataFormat>> {
    let path = dir.join(FORMAT_FILE);
    let damaged = |why: String| {
        NodeError::Incompatible(format!(
            "{} {why}; sqlraft writes it at start (format=<n> and written_by=<version> \
             lines): restore it from a copy of the directory, or write format=1 if this \
             directory was last opened by sqlraft 0.2",
            path.display()
        ))
    };
    // Read only a small regular file: this also runs as root (`upgrade`).
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let holds_a_node = dir
                .join("raft")
                .join(crate::identity::IDENTITY_FILE)
                .exists();
            return Ok(holds_a_node.then(|| DataFormat {
                format: 1,
                written_by: "unknown".into(),
            }));
        }
        Err(e) => return Err(damaged(format!("cannot be read ({e})"))),
        Ok(meta) if !meta.is_file() => return Err(damaged("is not a regular file".into())),
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return Err(damaged(format!("is over {MAX_FILE_BYTES} bytes")));
        }
        Ok(_) => {}
    }
    let text =
        std::fs::read_to_string(&path).map_err(|e| damaged(format!("cannot be read ({e})")))?;
    let mut format = None;
    let mut written_by = None;
    for line in text.lines() {
        match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("format", v)) => {
                let n = v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    damaged(format!(
                        "says format={v}, which is not a data format (1, 2, …)"
                    ))
                })?;
                format = Some(n);
            }
            Some(("written_by", v)) => written_by = Some(v.to_string()),
            _ => {}
        }
    }
    match format {
        Some(format) => Ok(Some(DataFormat {
            format,
            written_by: written_by.unwrap_or_else(|| "unknown".into()),
        })),
        None => Err(damaged("has no format=<number> line".into())),
    }
}

/// Checks that this version can open the directory; refuses, changing nothing, when
/// it cannot.
pub fn check(dir: &Path) -> Result<()> {
    let Some(found) = read(dir)? else {
        return Ok(());
    };
    if found.format > DATA_FORMAT {
        return Err(NodeError::Incompatible(format!(
            "{} holds data format {} (written by sqlraft {}); this is sqlraft {THIS_VERSION}, \
             which reads formats {OLDEST_READABLE_FORMAT} to {DATA_FORMAT}: a downgrade across \
             a data format change is refused. Run sqlraft {} or newer on it",
            dir.display(),
            found.format,
            found.written_by,
            found.written_by
        )));
    }
    if found.format < OLDEST_READABLE_FORMAT {
        return Err(NodeError::Incompatible(format!(
            "{} holds data format {} (written by sqlraft {}); this is sqlraft {THIS_VERSION}, \
             which reads formats {OLDEST_READABLE_FORMAT} to {DATA_FORMAT}: upgrade through a \
             version that reads format {} first",
            dir.display(),
            found.format,
            found.written_by,
            found.format
        )));
    }
    Ok(())
}

/// Records that this version opened the directory, in [`DATA_FORMAT`].
pub(crate) fn record(dir: &Path) -> Result<()> {
    let current = DataFormat {
        format: DATA_FORMAT,
        written_by: THIS_VERSION.into(),
    };
    let path = dir.join(FORMAT_FILE);
    if path.exists() && read(dir)?.as_ref() == Some(&current) {
        return Ok(());
    }
    let text = format!(
        "# The format of this directory's data; sqlraft refuses to open a newer one.\n\
         format={}\nwritten_by={}\n",
        current.format, current.written_by
    );
    write_atomically(dir, FORMAT_FILE, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_identity(dir: &Path) {
        let raft = dir.join("raft");
        std::fs::create_dir_all(&raft).expect("mkdir");
        std::fs::write(raft.join("identity"), "service_id=x\nraft_id=1\n").expect("identity");
    }

    #[test]
    fn a_new_directory_has_no_format_and_gets_this_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        check(dir.path()).expect("a new directory is fine");
        record(dir.path()).expect("record");
        assert_eq!(
            read(dir.path()).expect("read"),
            Some(DataFormat {
                format: DATA_FORMAT,
                written_by: THIS_VERSION.into()
            })
        );
    }

    #[test]
    fn a_directory_from_before_the_file_is_format_1() {
        let dir = tempfile::tempdir().expect("tempdir");
        with_identity(dir.path());
        assert_eq!(read(dir.path()).expect("read").map(|f| f.format), Some(1));
        check(dir.path()).expect("readable");
    }

    #[test]
    fn a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        with_identity(dir.path());
        let newer = format!("format={}\nwritten_by=9.0.0\n", DATA_FORMAT + 1);
        std::fs::write(dir.path().join(FORMAT_FILE), &newer).expect("write");
        let err = check(dir.path()).expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, NodeError::Incompatible(_)), "{err:?}");
        assert!(
            text.contains("a downgrade across a data format change is refused")
                && text.contains("Run sqlraft 9.0.0 or newer"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FORMAT_FILE)).expect("read"),
            newer,
            "nothing changed"
        );
    }

    #[test]
    fn a_damaged_format_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join(FORMAT_FILE);
        for (text, says) in [
            ("format=two\n", "not a data format"),
            ("format=0\n", "format=0, which is not a data format"),
            ("written_by=1\n", "no format=<number> line"),
            ("", "no format=<number> line"),
        ] {
            std::fs::write(&file, text).expect("write");
            match check(dir.path()) {
                Err(NodeError::Incompatible(e)) => assert!(e.contains(says), "{text:?}: {e}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // Spaces around `=` are fine.
        std::fs::write(&file, "format = 1\nwritten_by = 0.2.0\n").expect("write");
        assert_eq!(read(dir.path()).expect("read").map(|f| f.format), Some(1));
        // Not a regular file, or too large: refused without reading it.
        std::fs::remove_file(&file).expect("rm");
        std::fs::create_dir(&file).expect("mkdir");
        assert!(
            matches!(check(dir.path()), Err(NodeError::Incompatible(e)) if e.contains("not a regular file"))
        );
        std::fs::remove_dir(&file).expect("rmdir");
        std::fs::write(&file, vec![b'x'; 5000]).expect("write");
        assert!(
            matches!(check(dir.path()), Err(NodeError::Incompatible(e)) if e.contains("over 4096 bytes"))
        );
    }
}
