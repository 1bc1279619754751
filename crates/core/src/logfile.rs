//! The service's log file, `<dir>/log/core`, rotated by size: when the next line would
//! make it larger than `max_bytes`, `core` becomes `core.1` (`core.1` becomes `core.2`,
//! ...) and the oldest beyond `keep_files` is deleted. So the logs never take more than
//! about `max_bytes * keep_files`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// Default size of one log file.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
/// Default number of files kept, the current one included.
pub const DEFAULT_KEEP_FILES: usize = 5;

/// A size-rotated log file; clones share the file.
#[derive(Clone)]
pub struct RotatingFile {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    keep_files: usize,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating it.
    pub fn open(path: &Path, max_bytes: u64, keep_files: usize) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            inner: Arc::new(Mutex::new(Inner {
                path: path.to_path_buf(),
                file: Some(file),
                size,
                max_bytes: max_bytes.max(1),
                keep_files: keep_files.max(1),
            })),
        })
    }
}

impl Inner {
    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let _ = fs::remove_file(self.numbered(self.keep_files - 1));
        for n in (1..self.keep_files.saturating_sub(1)).rev() {
            let from = self.numbered(n);
            if from.exists() {
                fs::rename(&from, self.numbered(n + 1))?;
            }
        }
        if self.keep_files > 1 {
            fs::rename(&self.path, self.numbered(1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                // A failed rotation left no file open: try to reopen the current one.
                self.file = Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)?,
                );
                self.file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("log file unavailable"))?
            }
        };
        file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .file
        {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("core");
        let mut log = RotatingFile::open(&path, 100, 3).expect("open");
        for i in 0..50 {
            writeln!(log, "line {i:04} of the log, about forty bytes").expect("write");
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["core", "core.1", "core.2"]);
        for name in &names {
            let len = fs::metadata(dir.path().join(name)).expect("meta").len();
            assert!(len <= 100, "{name} has {len} bytes");
        }
        let last = fs::read_to_string(&path).expect("read");
        assert!(last.contains("line 0049"));
    }
}
