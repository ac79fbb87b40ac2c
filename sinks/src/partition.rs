//! Hive-style partition segments: `patient_id=<escaped value>` and `date=<yyyy-mm-dd>`.
//!
//! Patient ids come from configuration and are not trusted to be path-safe. Every byte outside `[A-Za-z0-9_.-]` is
//! percent-escaped (`%XX`, upper-case hex), and an id made only of dots (`.`, `..`, ...) has its dots escaped too,
//! so no id can add, leave or name a directory: `../x` becomes `..%2Fx`, `..` becomes `%2E%2E`. Escaping is
//! injective and [`unescape`] is its inverse.

use crate::SinkError;

/// The partition column of every table.
pub const PARTITION_COLUMN: &str = "patient_id";

/// The second partition column: the UTC day of the rows' event time.
pub const DATE_COLUMN: &str = "date";

const MS_PER_DAY: i64 = 86_400_000;

/// Longest partition segment (`patient_id=` plus the escaped id) in bytes: 255, the usual file-name limit
/// (`NAME_MAX`) of local file systems, so a table can be copied between S3 and a local disk.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Percent-escapes a patient id for use in a path segment. Rejects the empty id.
pub fn escape(patient_id: &str) -> Result<String, SinkError> {
    if patient_id.is_empty() {
        return Err(bad_id(patient_id, "a patient id must not be empty"));
    }
    let all_dots = patient_id.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(patient_id.len());
    for b in patient_id.bytes() {
        let keep = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !all_dots);
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(hex_digit(b >> 4));
            out.push(hex_digit(b & 0x0f));
        }
    }
    Ok(out)
}

/// Reverses [`escape`]: decodes `%XX` sequences (either hex case) and passes other characters through, so folders
/// written by other tools with lighter escaping still read. Rejects empty values, malformed escapes and byte
/// sequences that are not UTF-8.
pub fn unescape(escaped: &str) -> Result<String, SinkError> {
    if escaped.is_empty() {
        return Err(bad_id(escaped, "an empty partition value"));
    }
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => {
                    return Err(bad_id(
                        escaped,
                        format!("malformed percent escape at byte {i}"),
                    ))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_id(escaped, "the unescaped bytes are not UTF-8"))
}

/// The partition folder name for a patient, `patient_id=<escaped>`. Rejects empty ids and ids whose segment
/// would exceed [`MAX_SEGMENT_BYTES`].
pub fn segment(patient_id: &str) -> Result<String, SinkError> {
    let segment = format!("{PARTITION_COLUMN}={}", escape(patient_id)?);
    if segment.len() > MAX_SEGMENT_BYTES {
        return Err(bad_id(
            patient_id,
            format!(
                "the escaped partition folder name is {} bytes, more than the {MAX_SEGMENT_BYTES} that file systems allow",
                segment.len()
            ),
        ));
    }
    Ok(segment)
}

/// Parses a partition folder name `patient_id=<escaped>` back into the patient id; `None` if the folder is not a
/// `patient_id=` partition, an error if its value does not unescape.
pub fn parse_segment(segment: &str) -> Option<Result<String, SinkError>> {
    let value = segment.strip_prefix(PARTITION_COLUMN)?.strip_prefix('=')?;
    Some(unescape(value))
}

/// The UTC day of an event time (milliseconds since 1970) as `yyyy-mm-dd` (proleptic Gregorian calendar).
pub fn date_of(event_time_ms: i64) -> String {
    let (y, m, d) = civil_from_days(event_time_ms.div_euclid(MS_PER_DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The date partition folder name, `date=yyyy-mm-dd`, of an event time.
pub fn date_segment(event_time_ms: i64) -> String {
    format!("{DATE_COLUMN}={}", date_of(event_time_ms))
}

/// Parses a folder name `date=yyyy-mm-dd` back into the date text; `None` if it is not a valid date partition.
pub fn parse_date_segment(segment: &str) -> Option<&str> {
    let value = segment.strip_prefix(DATE_COLUMN)?.strip_prefix('=')?;
    is_date(value).then_some(value)
}

/// Whether `text` is a `yyyy-mm-dd` date with a valid month and day.
pub fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let (Ok(y), Ok(m), Ok(d)) = (
        text[0..4].parse::<i64>(),
        text[5..7].parse::<u32>(),
        text[8..10].parse::<u32>(),
    ) else {
        return false;
    };
    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn hex_digit(nibble: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(nibble)])
}

fn hex_value(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn bad_id(value: &str, reason: impl Into<String>) -> SinkError {
    let shown: String = value.chars().take(64).collect();
    let shown = if shown.len() < value.len() {
        format!("{shown}... ({} bytes)", value.len())
    } else {
        shown
    };
    SinkError::InvalidPatientId {
        value: shown,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(id: &str) -> String {
        let escaped = escape(id).unwrap();
        assert!(
            escaped
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-%".contains(&b)),
            "{escaped:?}"
        );
        assert!(!escaped.contains('/'));
        assert!(!escaped.bytes().all(|b| b == b'.'), "{escaped:?}");
        assert_eq!(unescape(&escaped).unwrap(), id);
        escaped
    }

    #[test]
    fn safe_ids_are_unchanged() {
        assert_eq!(round_trip("P-001_a.b"), "P-001_a.b");
        assert_eq!(round_trip("a..b"), "a..b");
    }

    #[test]
    fn traversal_and_separators_are_escaped() {
        assert_eq!(round_trip("../x"), "..%2Fx");
        assert_eq!(round_trip("a/b"), "a%2Fb");
        assert_eq!(round_trip("."), "%2E");
        assert_eq!(round_trip(".."), "%2E%2E");
        assert_eq!(round_trip("..."), "%2E%2E%2E");
        assert_eq!(round_trip("a\\b"), "a%5Cb");
        assert_eq!(round_trip("/"), "%2F");
    }

    #[test]
    fn specials_and_controls_are_escaped() {
        assert_eq!(round_trip("k=v"), "k%3Dv");
        assert_eq!(round_trip("100%"), "100%25");
        assert_eq!(round_trip("a#1"), "a%231");
        assert_eq!(round_trip("a b"), "a%20b");
        assert_eq!(round_trip("\n\t\0\x7f"), "%0A%09%00%7F");
    }

    #[test]
    fn unicode_round_trips() {
        assert_eq!(round_trip("é"), "%C3%A9");
        round_trip("患者-42 🩸");
    }

    #[test]
    fn empty_is_rejected() {
        assert!(matches!(
            escape(""),
            Err(SinkError::InvalidPatientId { .. })
        ));
        assert!(segment("").is_err());
        assert!(unescape("").is_err());
    }

    #[test]
    fn ten_kilobyte_id_escapes_but_is_too_long_for_a_folder() {
        let id = "x/".repeat(5 * 1024);
        let escaped = round_trip(&id);
        assert_eq!(escaped.len(), 5 * 1024 * 4);
        let err = segment(&id).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("255"), "{text}");
        assert!(
            text.len() < 400,
            "error message should truncate the id: {text}"
        );
        let ok = "a".repeat(MAX_SEGMENT_BYTES - PARTITION_COLUMN.len() - 1);
        assert_eq!(segment(&ok).unwrap().len(), MAX_SEGMENT_BYTES);
        assert!(segment(&format!("{ok}a")).is_err());
    }

    #[test]
    fn unescape_is_lenient_but_checks_escapes() {
        assert_eq!(unescape("a%2fb").unwrap(), "a/b");
        assert_eq!(unescape("a b").unwrap(), "a b");
        assert!(unescape("a%2").is_err());
        assert!(unescape("a%zz").is_err());
        assert!(unescape("%FF").is_err());
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(-1), "1969-12-31");
        assert_eq!(date_of(86_400_000 - 1), "1970-01-01");
        // 2026-03-01T08:00:00Z, the demo's first recording.
        assert_eq!(date_of(1_772_352_000_000), "2026-03-01");
        assert_eq!(date_of(951_782_400_000), "2000-02-29");
        assert_eq!(date_segment(1_772_352_000_000), "date=2026-03-01");
        assert_eq!(parse_date_segment("date=2026-03-01"), Some("2026-03-01"));
        for bad in [
            "date=2026-3-01",
            "date=2026-02-30",
            "date=2025-13-01",
            "dates=2026-03-01",
            "date=../..",
        ] {
            assert_eq!(parse_date_segment(bad), None, "{bad}");
        }
        assert!(is_date("2024-02-29") && !is_date("2023-02-29") && !is_date("1900-02-29"));
        // Every day of four centuries round-trips through the text.
        let mut previous = String::new();
        for day in -146_097..146_097 {
            let text = date_of(day * 86_400_000 + 1);
            assert!(is_date(&text) && text > previous, "{text}");
            previous = text;
        }
    }

    #[test]
    fn segments_parse_back() {
        let seg = segment("../x").unwrap();
        assert_eq!(seg, "patient_id=..%2Fx");
        assert_eq!(parse_segment(&seg).unwrap().unwrap(), "../x");
        assert!(parse_segment("site=a").is_none());
        assert!(parse_segment("patient_idx=a").is_none());
    }
}
