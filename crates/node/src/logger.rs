//! raft-rs logs through `slog`; this drain forwards its records to `tracing`, keeping
//! the `raft_id` and the other key-value pairs (the `tracing-slog` crate drops them).

use std::fmt::Write as _;

use slog::{KV, Level, OwnedKVList, Record, Serializer};

pub(crate) fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        // raft-rs logs every message it sends at debug level and every entry it
        // appends at trace level, the entries' data among the fields. Rendering those
        // fields for a record nobody keeps cost more than the rest of a write on the
        // raft thread, so nothing is rendered unless tracing wants the level.
        if !enabled(record.level()) {
            return Ok(());
        }
        let mut fields = Fields::default();
        // Errors here only mean a field could not be rendered; the message still goes out.
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let message = record.msg();
        let raft_id = fields.raft_id;
        let rest = fields.rest;
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", raft_id, "{message}{rest}")
            }
            Level::Warning => tracing::warn!(target: "raft", raft_id, "{message}{rest}"),
            Level::Info => tracing::info!(target: "raft", raft_id, "{message}{rest}"),
            Level::Debug => tracing::debug!(target: "raft", raft_id, "{message}{rest}"),
            Level::Trace => tracing::trace!(target: "raft", raft_id, "{message}{rest}"),
        }
        Ok(())
    }
}

/// Whether tracing keeps events of `level` from raft-rs.
fn enabled(level: Level) -> bool {
    match level {
        Level::Critical | Level::Error => tracing::enabled!(target: "raft", tracing::Level::ERROR),
        Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
        Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

#[derive(Default)]
struct Fields {
    raft_id: u64,
    rest: String,
}

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        if key == "raft_id"
            && let Ok(id) = value.to_string().parse()
        {
            self.raft_id = id;
            return Ok(());
        }
        let _ = write!(self.rest, ", {key}: {value}");
        Ok(())
    }

    fn emit_u64(&mut self, key: slog::Key, value: u64) -> slog::Result {
        if key == "raft_id" {
            self.raft_id = value;
            return Ok(());
        }
        let _ = write!(self.rest, ", {key}: {value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::raft_logger;

    /// Counts how often it is rendered.
    struct Rendered<'a>(&'a AtomicUsize);

    impl fmt::Debug for Rendered<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fetch_add(1, Ordering::SeqCst);
            f.write_str("rendered")
        }
    }

    #[test]
    fn fields_are_rendered_only_for_levels_tracing_keeps() {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        let renders = AtomicUsize::new(0);
        tracing::subscriber::with_default(subscriber, || {
            let logger = raft_logger();
            slog::debug!(logger, "sending"; "msg" => ?Rendered(&renders));
            slog::trace!(logger, "appending"; "ents" => ?Rendered(&renders));
            assert_eq!(renders.load(Ordering::SeqCst), 0, "debug and trace skipped");
            slog::info!(logger, "became leader"; "term" => ?Rendered(&renders));
            slog::warn!(logger, "ignored a vote"; "from" => ?Rendered(&renders));
            assert_eq!(renders.load(Ordering::SeqCst), 2, "info and warn rendered");
        });
    }
}
