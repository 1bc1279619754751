//! The time a write sees: the leader's clock when it proposed the entry, the same on
//! every node and on every replay.
//!
//! SQLite's date and time functions read the machine's clock for `'now'` (and for
//! `CURRENT_TIMESTAMP`, `CURRENT_DATE`, `CURRENT_TIME`, column defaults that use them,
//! and `date()` with no argument). On the apply connection they are replaced by
//! functions of the same name that put the entry's time where `'now'` stands and then
//! let SQLite's own implementation (on a private in-memory connection) do the rest,
//! so every modifier and format behaves exactly as SQLite's. `'now'` is recognised as
//! SQLite reads it: any case, as text or blob, up to a NUL byte; so are `'subsec'` and
//! `'subsecond'` as time values. The `localtime` and `utc` modifiers depend on each
//! node's time zone and are refused.
//!
//! The replacements are not marked deterministic, so SQLite refuses them where a value
//! must never change: index expressions and generated columns (the built-in functions
//! are refused there at run time when they read the clock); such a schema is refused
//! when it is created, a date function over a column included. `DEFAULT`, CHECK
//! constraints (evaluated when the row is written), triggers and views may use them.
//!
//! The entry time never goes backwards in the replicated state: a write sees the later
//! of its entry's time and the last time applied, so a leader with a slow clock cannot
//! write a timestamp older than one already written.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{Connection, Error};

/// The entry time the apply connection's date and time functions use, in Unix ms.
#[derive(Clone, Default)]
pub(crate) struct EntryClock(Arc<AtomicI64>);

impl EntryClock {
    pub fn set(&self, unix_ms: i64) {
        self.0.store(unix_ms, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a function takes its time values.
#[derive(Clone, Copy)]
enum TimeArgs {
    /// `f(time-value, modifier...)`; no argument means now.
    First,
    /// `strftime(format, time-value, modifier...)`; no time value means now.
    Second,
    /// `timediff(a, b)`.
    Both,
}

const TIME_FUNCTIONS: &[(&str, TimeArgs)] = &[
    ("date", TimeArgs::First),
    ("time", TimeArgs::First),
    ("datetime", TimeArgs::First),
    ("julianday", TimeArgs::First),
    ("unixepoch", TimeArgs::First),
    ("strftime", TimeArgs::Second),
    ("timediff", TimeArgs::Both),
];

/// Replaces the clock-reading functions of `conn` (the apply connection).
pub(crate) fn install(conn: &Connection, clock: &EntryClock) -> rusqlite::Result<()> {
    let sqlite = Arc::new(Mutex::new(Connection::open_in_memory()?));
    // Not deterministic: the entry time changes from one entry to the next, so an index
    // or a CHECK using it would disagree with itself (see the module documentation).
    let flags = FunctionFlags::SQLITE_UTF8;
    for &(name, args) in TIME_FUNCTIONS {
        let (clock, sqlite) = (clock.clone(), Arc::clone(&sqlite));
        conn.create_scalar_function(name, -1, flags, move |ctx| {
            with_entry_time(ctx, name, args, clock.get(), &sqlite)
        })?;
    }
    for (name, format) in [
        ("current_timestamp", Format::DateTime),
        ("current_date", Format::Date),
        ("current_time", Format::Time),
    ] {
        let clock = clock.clone();
        conn.create_scalar_function(name, 0, flags, move |_| {
            Ok(format_unix_ms(clock.get(), format))
        })?;
    }
    Ok(())
}

fn with_entry_time(
    ctx: &Context<'_>,
    name: &str,
    args: TimeArgs,
    now_ms: i64,
    sqlite: &Mutex<Connection>,
) -> rusqlite::Result<ToSqlOutput<'static>> {
    let mut values: Vec<SqlValue> = (0..ctx.len())
        .map(|i| ctx.get::<SqlValue>(i).map(as_sqlite_reads_it))
        .collect::<rusqlite::Result<_>>()?;
    let now = || SqlValue::Text(format_unix_ms(now_ms, Format::Precise));
    let mut subsec = false;
    let (times, modifiers_from) = match args {
        TimeArgs::First => (0..1, 1),
        TimeArgs::Second => (1..2, 2),
        TimeArgs::Both => (0..2, 2),
    };
    if values.len() < times.end && matches!(args, TimeArgs::First | TimeArgs::Second) {
        // `date()`, `strftime('%s')`: the time value left out means now.
        values.push(now());
    }
    for i in times {
        if let Some(SqlValue::Text(t)) = values.get(i) {
            let t = t.to_ascii_lowercase();
            if t == "now" || t == "subsec" || t == "subsecond" {
                subsec |= t != "now";
                values[i] = now();
            }
        }
    }
    for value in values.iter().skip(modifiers_from) {
        if let SqlValue::Text(m) = value {
            let m = m.trim().to_ascii_lowercase();
            if m == "localtime" || m == "utc" {
                return Err(Error::UserFunctionError(
                    format!(
                        "the '{m}' modifier is not allowed in writes: it depends on each node's time zone"
                    )
                    .into(),
                ));
            }
        }
    }
    if subsec && !matches!(args, TimeArgs::Both) {
        values.push(SqlValue::Text("subsec".into()));
    }
    let placeholders = (1..=values.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let conn = sqlite.lock().unwrap_or_else(PoisonError::into_inner);
    let mut stmt = conn.prepare_cached(&format!("SELECT {name}({placeholders})"))?;
    let value: SqlValue =
        stmt.query_row(rusqlite::params_from_iter(values.iter()), |row| row.get(0))?;
    Ok(ToSqlOutput::Owned(value))
}

/// A text or blob argument as SQLite's date functions read it: bytes as text, up to
/// the first NUL byte. Other values are left as they are.
fn as_sqlite_reads_it(value: SqlValue) -> SqlValue {
    let bytes = match &value {
        SqlValue::Text(t) => t.as_bytes(),
        SqlValue::Blob(b) => b.as_slice(),
        _ => return value,
    };
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    SqlValue::Text(String::from_utf8_lossy(&bytes[..end]).into_owned())
}

#[derive(Clone, Copy)]
enum Format {
    /// `YYYY-MM-DD HH:MM:SS.SSS`, what `'now'` stands for.
    Precise,
    /// `YYYY-MM-DD HH:MM:SS`, `CURRENT_TIMESTAMP`.
    DateTime,
    /// `YYYY-MM-DD`, `CURRENT_DATE`.
    Date,
    /// `HH:MM:SS`, `CURRENT_TIME`.
    Time,
}

/// A UTC calendar time (proleptic Gregorian, as SQLite uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    /// Year (may be below 1 or above 9999).
    pub year: i64,
    /// 1 to 12.
    pub month: i64,
    /// 1 to 31.
    pub day: i64,
    /// 0 to 23.
    pub hour: i64,
    /// 0 to 59.
    pub minute: i64,
    /// 0 to 59.
    pub second: i64,
    /// 0 to 999.
    pub millis: i64,
}

impl UtcTime {
    /// The UTC calendar time of a Unix time in milliseconds.
    pub fn from_unix_ms(unix_ms: i64) -> Self {
        let ms_of_day = unix_ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(unix_ms.div_euclid(86_400_000));
        UtcTime {
            year,
            month,
            day,
            hour: ms_of_day / 3_600_000,
            minute: ms_of_day / 60_000 % 60,
            second: ms_of_day / 1000 % 60,
            millis: ms_of_day % 1000,
        }
    }
}

fn format_unix_ms(unix_ms: i64, format: Format) -> String {
    let UtcTime {
        year,
        month,
        day,
        hour: h,
        minute: m,
        second: s,
        millis: ms,
    } = UtcTime::from_unix_ms(unix_ms);
    match format {
        Format::Precise => format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{ms:03}"),
        Format::DateTime => format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}"),
        Format::Date => format!("{year:04}-{month:02}-{day:02}"),
        Format::Time => format!("{h:02}:{m:02}:{s:02}"),
    }
}

/// Year, month, day of the day `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_matches_sqlite() {
        let conn = Connection::open_in_memory().expect("sqlite");
        for secs in [
            0_i64,
            1,
            86_399,
            951_782_400,   // 2000-02-29
            1_764_775_881, // 2025-12-03
            4_102_444_800, // 2100-01-01
            -1,
            -62_135_596_800, // 0001-01-01
        ] {
            let expected: String = conn
                .query_row(
                    "SELECT strftime('%Y-%m-%d %H:%M:%f', ?1, 'unixepoch')",
                    [secs],
                    |r| r.get(0),
                )
                .expect("strftime");
            assert_eq!(format_unix_ms(secs * 1000, Format::Precise), expected);
        }
        assert_eq!(
            format_unix_ms(1_764_775_881_123, Format::Precise),
            "2025-12-03 15:31:21.123"
        );
    }
}
