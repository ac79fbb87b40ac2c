//! Hive-style partition segments: `patient_id=<escaped value>`.
//!
//! Patient ids come from configuration and are not trusted to be path-safe. Every byte outside `[A-Za-z0-9_.-]` is
//! percent-escaped (`%XX`, upper-case hex), and an id made only of dots (`.`, `..`, ...) has its dots escaped too,
//! so no id can add, leave or name a directory: `../x` becomes `..%2Fx`, `..` becomes `%2E%2E`. Escaping is
//! injective and [`unescape`] is its inverse.

use crate::SinkError;

/// The partition column of every table.
pub const PARTITION_COLUMN: &str = "patient_id";

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
    fn segments_parse_back() {
        let seg = segment("../x").unwrap();
        assert_eq!(seg, "patient_id=..%2Fx");
        assert_eq!(parse_segment(&seg).unwrap().unwrap(), "../x");
        assert!(parse_segment("site=a").is_none());
        assert!(parse_segment("patient_idx=a").is_none());
    }
}
