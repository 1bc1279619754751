//! Diagnostics: what validation found, where, and how bad it is.

use std::fmt;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The inventory cannot be installed as it is.
    Error,
    /// Worth knowing; nothing to fix (e.g. groups sqlraft does not act on).
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Info => "info",
        })
    }
}

/// What kind of finding, for callers and tests that match on it rather than on text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Malformed YAML.
    Yaml,
    /// A value of the wrong shape (a group that is a list, hosts that are a list, ...).
    Shape,
    /// The same key twice in one mapping.
    DuplicateKey,
    /// Groups that contain each other.
    GroupCycle,
    /// No `kuma_core` group.
    MissingCore,
    /// `kuma_core` with zero or several hosts.
    CoreHostCount,
    /// An even number of core services in total.
    EvenCoreCount,
    /// A host listed twice in one group.
    DuplicateHost,
    /// A host in both `kuma_core` and `kuma_core_peers`.
    HostInBothGroups,
    /// A host name that is not an FQDN.
    NotFqdn,
    /// A bad `raft_node_addr`.
    RaftAddr,
    /// A variable with a value the installer cannot use.
    BadVariable,
    /// A group kept in the model but not acted on.
    OtherGroup,
}

/// One finding, pointing at the file, the line and the host where relevant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// How bad it is.
    pub severity: Severity,
    /// What kind it is.
    pub code: Code,
    /// The file name.
    pub file: String,
    /// The 1-based line, when the finding has one.
    pub line: Option<usize>,
    /// The host concerned, if any.
    pub host: Option<String>,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Renders as `file:line: error: host x: message`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": {}: ", self.severity)?;
        if let Some(host) = &self.host {
            write!(f, "host {host}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every finding of one check, sorted by line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub(crate) Vec<Diagnostic>);

impl Diagnostics {
    /// All findings.
    pub fn all(&self) -> &[Diagnostic] {
        &self.0
    }

    /// The findings that make the inventory unusable.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// The informational findings.
    pub fn infos(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Info)
    }

    /// How many errors there are.
    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    /// Whether there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }
}

/// One diagnostic per line, then a summary line (`2 errors, 1 info`).
impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let errors = self.error_count();
        let infos = self.0.len() - errors;
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        writeln!(f, "{}, {}", plural(errors, "error"), plural(infos, "info"))
    }
}

/// Collects findings for one file.
pub(crate) struct Sink {
    file: String,
    found: Vec<Diagnostic>,
}

impl Sink {
    pub fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            found: Vec::new(),
        }
    }

    pub fn error(&mut self, code: Code, line: Option<usize>, host: Option<&str>, message: String) {
        self.push(Severity::Error, code, line, host, message);
    }

    pub fn info(&mut self, code: Code, line: Option<usize>, message: String) {
        self.push(Severity::Info, code, line, None, message);
    }

    fn push(
        &mut self,
        severity: Severity,
        code: Code,
        line: Option<usize>,
        host: Option<&str>,
        message: String,
    ) {
        let d = Diagnostic {
            severity,
            code,
            file: self.file.clone(),
            line,
            host: host.map(str::to_string),
            message,
        };
        // One definition can be reached from several hosts; report it once.
        if !self.found.contains(&d) {
            self.found.push(d);
        }
    }

    /// Sorted by line (findings without a line first), errors before infos on a line.
    pub fn finish(mut self) -> Diagnostics {
        self.found.sort_by_key(|d| (d.line, d.severity));
        Diagnostics(self.found)
    }
}
