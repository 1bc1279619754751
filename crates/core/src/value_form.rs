//! How rqlite writes the values of columns of some declared types, which its clients
//! decode by (pyrqlite's `TIMESTAMP` converter needs RFC 3339 text, for one):
//!
//! * `boolean`: an integer is `true` when above 0, else `false`;
//! * `date`, `datetime`, `timestamp`: text in one of SQLite's date-time forms, and
//!   integers (Unix seconds, or milliseconds beyond ±10¹²), as RFC 3339 text;
//! * text types (`text`, `json`, `char`…, `clob`, or none): a BLOB as its bytes read
//!   as UTF-8 text.
//!
//! One difference: text in a date-time column that is not a date-time is left as it
//! is (rqlite writes `0001-01-01T00:00:00Z` for it, losing the value).

use sqlraft::Value;

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// As they are.
    Plain,
    /// Integers as `true`/`false`.
    Boolean,
    /// Date-time text and integers as RFC 3339.
    Time,
    /// BLOBs as text.
    Text,
}

impl Form {
    /// The form for a column of (lower-case) declared type `ty`.
    pub fn of(ty: &str) -> Form {
        match ty {
            "boolean" => Form::Boolean,
            "date" | "datetime" | "timestamp" => Form::Time,
            "" | "text" | "json" => Form::Text,
            t if [
                "varchar",
                "varying character",
                "nchar",
                "native character",
                "nvarchar",
                "clob",
            ]
            .iter()
            .any(|p| t.starts_with(p)) =>
            {
                Form::Text
            }
            _ => Form::Plain,
        }
    }
}

/// What a value becomes in `form`, when that differs from the value itself.
pub enum Written {
    Bool(bool),
    Text(String),
}

/// `value` as rqlite writes it in a column of `form`; `None`: as it is.
pub fn convert(value: &Value, form: Form) -> Option<Written> {
    match (form, value) {
        (Form::Boolean, Value::Integer(i)) => Some(Written::Bool(*i > 0)),
        (Form::Time, Value::Text(t)) => rfc3339_of_text(t).map(Written::Text),
        (Form::Time, Value::Integer(i)) => rfc3339_of_unix(*i).map(Written::Text),
        (Form::Text, Value::Blob(b)) => {
            Some(Written::Text(String::from_utf8_lossy(b).into_owned()))
        }
        _ => None,
    }
}

/// Unix seconds, or milliseconds beyond ±10¹² (as rqlite's driver reads them).
fn rfc3339_of_unix(i: i64) -> Option<String> {
    let nanos = if i.unsigned_abs() > 1_000_000_000_000 {
        i128::from(i) * 1_000_000
    } else {
        i128::from(i) * 1_000_000_000
    };
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    Some(format_rfc3339(
        t.year(),
        u8::from(t.month()),
        t.day(),
        (t.hour(), t.minute(), t.second(), t.nanosecond()),
        Some(0),
    ))
}

/// Text in one of the forms SQLite's date-time functions write and read
/// (`YYYY-MM-DD`, then ` ` or `T` and `HH:MM`, `:SS`, `.fraction`, a `±HH:MM`
/// offset; a final `Z`), as RFC 3339 with the fraction trimmed as Go writes it.
fn rfc3339_of_text(text: &str) -> Option<String> {
    let s = text.strip_suffix('Z').unwrap_or(text);
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let mut clock = (0u8, 0u8, 0u8, 0u32);
    let mut offset = None;
    if b.len() > 10 {
        if !matches!(b[10], b' ' | b'T') || b.len() < 16 || b[13] != b':' {
            return None;
        }
        clock.0 = u8::try_from(num(11..13)?).ok()?;
        clock.1 = u8::try_from(num(14..16)?).ok()?;
        let mut rest = &s[16..];
        if let Some(after) = rest.strip_prefix(':') {
            let seconds = after.get(..2)?;
            if !seconds.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            clock.2 = seconds.parse().ok()?;
            rest = &after[2..];
            if let Some(after) = rest.strip_prefix('.') {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || digits > 9 {
                    return None;
                }
                let fraction = &after[..digits];
                clock.3 = format!("{fraction:0<9}").parse().ok()?;
                rest = &after[digits..];
            }
            if !rest.is_empty() {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let o = rest.as_bytes();
                if o.len() != 6 || o[3] != b':' {
                    return None;
                }
                let hours: i32 = rest[1..3].parse().ok()?;
                let minutes: i32 = rest[4..6].parse().ok()?;
                if hours > 23 || minutes > 59 || !rest[1..3].bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                offset = Some(sign * (hours * 3600 + minutes * 60));
                rest = "";
            }
        }
        if !rest.is_empty() {
            return None;
        }
    }
    let month_enum = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    time::Date::from_calendar_date(
        i32::try_from(year).ok()?,
        month_enum,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    time::Time::from_hms_nano(clock.0, clock.1, clock.2, clock.3).ok()?;
    Some(format_rfc3339(
        i32::try_from(year).ok()?,
        u8::try_from(month).ok()?,
        u8::try_from(day).ok()?,
        clock,
        Some(offset.unwrap_or(0)),
    ))
}

fn format_rfc3339(
    year: i32,
    month: u8,
    day: u8,
    (hour, minute, second, nanos): (u8, u8, u8, u32),
    offset_seconds: Option<i32>,
) -> String {
    let mut out = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    match offset_seconds {
        Some(0) | None => out.push('Z'),
        Some(o) => {
            let sign = if o < 0 { '-' } else { '+' };
            let o = o.unsigned_abs();
            out.push_str(&format!("{sign}{:02}:{:02}", o / 3600, o % 3600 / 60));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time_text(text: &str) -> Option<String> {
        match convert(&Value::Text(text.into()), Form::Time) {
            Some(Written::Text(t)) => Some(t),
            _ => None,
        }
    }

    #[test]
    fn date_time_text_becomes_rfc3339_as_in_rqlite() {
        for (given, written) in [
            ("2004-02-14", "2004-02-14T00:00:00Z"),
            ("2021-10-22 19:39:32.016087", "2021-10-22T19:39:32.016087Z"),
            ("2021-10-22T19:39:32Z", "2021-10-22T19:39:32Z"),
            ("2021-10-22 19:39", "2021-10-22T19:39:00Z"),
            (
                "2021-10-22 19:39:32.500+02:00",
                "2021-10-22T19:39:32.5+02:00",
            ),
            ("2021-10-22 19:39:32.000", "2021-10-22T19:39:32Z"),
        ] {
            assert_eq!(time_text(given).as_deref(), Some(written), "{given}");
        }
        for kept in [
            "yesterday",
            "2021-02-30",
            "2021-10-22 25:00",
            "2021-10-22x",
            "21-10-22",
        ] {
            assert_eq!(time_text(kept), None, "{kept}");
        }
    }

    #[test]
    fn integers_booleans_and_blobs_in_their_columns() {
        let text = |v: Option<Written>| match v {
            Some(Written::Text(t)) => t,
            _ => panic!("not text"),
        };
        assert_eq!(
            text(convert(&Value::Integer(1_000_000_000), Form::Time)),
            "2001-09-09T01:46:40Z"
        );
        assert_eq!(
            text(convert(&Value::Integer(1_000_000_000_123), Form::Time)),
            "2001-09-09T01:46:40.123Z"
        );
        assert!(matches!(
            convert(&Value::Integer(2), Form::Boolean),
            Some(Written::Bool(true))
        ));
        assert!(matches!(
            convert(&Value::Integer(0), Form::Boolean),
            Some(Written::Bool(false))
        ));
        assert_eq!(
            text(convert(&Value::Blob(b"SQLite".to_vec()), Form::Text)),
            "SQLite"
        );
        assert!(convert(&Value::Blob(vec![1]), Form::Plain).is_none());
        assert_eq!(Form::of("varchar(10)"), Form::Text);
        assert_eq!(Form::of("integer"), Form::Plain);
        assert_eq!(Form::of("blob"), Form::Plain);
    }
}
