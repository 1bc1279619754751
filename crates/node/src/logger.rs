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
