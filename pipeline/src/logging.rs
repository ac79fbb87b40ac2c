//! Structured logs (`tracing`, text or JSON lines on stderr) that never carry a raw patient id or a credential.
//!
//! Every formatted event passes through a [`Redactor`] before it is written: the patient ids of the run are replaced
//! by a per-run tag (`patient#1a2b3c4d`, the same for one patient throughout the run, unrelated across runs) and
//! secrets (the HTTP token, S3 keys, the pseudonym key) by `[redacted]`. Replacing at the writer catches ids wherever
//! they appear: in fields, in error messages, in object paths (`patient=<id>/`).

use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::sync::{Arc, RwLock};

use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log collectors.
    Json,
}

/// The ids and secrets to keep out of logs; filled once the config is known.
#[derive(Clone, Default)]
pub struct Redactor {
    inner: Arc<RwLock<Rules>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print what is redacted.
        f.write_str("Redactor")
    }
}

#[derive(Default)]
struct Rules {
    /// Patient id → its tag, longest ids first (so `p10` is replaced before `p1`).
    patients: Vec<(String, String)>,
    secrets: Vec<String>,
    hasher: std::collections::hash_map::RandomState,
}

/// Whether `c` may be part of an id, so an id is only replaced where it stands as a whole word.
fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Replaces whole-word occurrences of `needle` in `text`.
fn replace_words(text: &str, needle: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + needle.len()..].chars().next();
        let whole = !before.is_some_and(word) && !after.is_some_and(word);
        out.push_str(&rest[..at]);
        out.push_str(if whole { with } else { needle });
        rest = &rest[at + needle.len()..];
    }
    out.push_str(rest);
    out
}

impl Redactor {
    /// Adds the run's patient ids (each gets its tag now).
    pub fn patients<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut rules = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if id.is_empty() || rules.patients.iter().any(|(known, _)| known == id) {
                continue;
            }
            let mut h = rules.hasher.build_hasher();
            h.write(id.as_bytes());
            let tag = format!("patient#{:08x}", h.finish() as u32);
            rules.patients.push((id.to_owned(), tag));
        }
        rules
            .patients
            .sort_by_key(|(id, _)| std::cmp::Reverse(id.len()));
    }

    /// Adds secrets (values shorter than 4 characters are ignored: they would blank out ordinary words).
    pub fn secrets<'a>(&self, values: impl IntoIterator<Item = &'a str>) {
        let mut rules = self.inner.write().unwrap_or_else(|p| p.into_inner());
        for v in values {
            if v.len() >= 4 && !rules.secrets.iter().any(|s| s == v) {
                rules.secrets.push(v.to_owned());
            }
        }
    }

    /// The tag logs use for a patient, once its id was added.
    pub fn tag(&self, id: &str) -> Option<String> {
        let rules = self.inner.read().unwrap_or_else(|p| p.into_inner());
        rules
            .patients
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, tag)| tag.clone())
    }

    /// `text` with every secret and patient id replaced.
    pub fn redact(&self, text: &str) -> String {
        let rules = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for secret in &rules.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        for (id, tag) in &rules.patients {
            if out.contains(id.as_str()) {
                out = replace_words(&out, id, tag);
            }
        }
        out
    }
}

/// Writes one formatted event to stderr after redaction.
#[derive(Debug)]
pub struct RedactingWriter {
    redactor: Redactor,
}

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over a whole event at once; redact it as text.
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.redactor.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Redactor {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            redactor: self.clone(),
        }
    }
}

/// Installs the process's subscriber: level filter from `CAPFLOW_LOG` (default `warn`), lines in `format`, through
/// `redactor`.
pub fn init(format: LogFormat, redactor: &Redactor) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAPFLOW_LOG")
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redactor.clone());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_ids_become_tags_as_whole_words_only() {
        let r = Redactor::default();
        r.patients(["p1", "p10", "alice"]);
        let (p1, p10) = (r.tag("p1").unwrap(), r.tag("p10").unwrap());
        assert_ne!(p1, p10);
        assert!(p1.starts_with("patient#"));
        let text = r.redact("p1 and p10 in frames/patient=p1/date=x, not tmp1 or p1x; alice's");
        assert_eq!(
            text,
            format!(
                "{p1} and {p10} in frames/patient={p1}/date=x, not tmp1 or p1x; {}'s",
                r.tag("alice").unwrap()
            )
        );
    }

    #[test]
    fn secrets_are_blanked_anywhere_and_short_ones_ignored() {
        let r = Redactor::default();
        r.secrets(["s3cr3tKEY", "ab"]);
        assert_eq!(r.redact("key=xs3cr3tKEYx ab"), "key=x[redacted]x ab");
        assert_eq!(format!("{r:?}"), "Redactor");
    }
}
