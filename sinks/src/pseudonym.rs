//! Keyed pseudonyms for patient ids, so that identifiers never reach object names, rows or logs.
//!
//! A pseudonym is `pid-` and the first 128 bits of HMAC-SHA-256(key, id) in hex: the same id and key give the same
//! pseudonym in every process and run (so a patient's trend stays one partition), and without the key nobody can
//! recompute or reverse it, not even by trying every plausible hospital number. The key comes from the environment
//! and is never written anywhere.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::SinkError;

/// The environment variable that holds the key by default.
pub const DEFAULT_KEY_ENV: &str = "CAPFLOW_PSEUDONYM_KEY";

/// Shortest accepted key, in bytes: 128 bits of secret.
pub const MIN_KEY_BYTES: usize = 16;

/// Turns patient ids into keyed pseudonyms. `Debug` never shows the key.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: Vec<u8>,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymiser")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Pseudonymiser {
    /// A pseudonymiser with `key` (at least [`MIN_KEY_BYTES`] bytes).
    pub fn new(key: &[u8]) -> Result<Self, SinkError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(SinkError::PseudonymKey {
                reason: format!(
                    "the key has {} bytes; use at least {MIN_KEY_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
                    key.len()
                ),
            });
        }
        Ok(Pseudonymiser { key: key.to_vec() })
    }

    /// A pseudonymiser whose key is the value of the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, SinkError> {
        match std::env::var_os(var) {
            None => Err(SinkError::PseudonymKey {
                reason: format!(
                    "output.pseudonymise is on but {var} is not set; export {var} with at least {MIN_KEY_BYTES} \
                     random bytes (e.g. `export {var}=$(openssl rand -hex 32)`), and keep it: the same key gives the \
                     same pseudonyms"
                ),
            }),
            Some(value) => {
                use std::os::unix::ffi::OsStrExt;
                Self::new(value.as_bytes()).map_err(|e| SinkError::PseudonymKey {
                    reason: format!("{var}: {e}"),
                })
            }
        }
    }

    /// The pseudonym of `patient_id`: `pid-` and 32 lower-case hex digits.
    pub fn pseudonym(&self, patient_id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(patient_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("pid-{}", crate::commit::hex(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_path_safe() {
        let a = Pseudonymiser::new(b"0123456789abcdef-key-a").unwrap();
        let b = Pseudonymiser::new(b"0123456789abcdef-key-b").unwrap();
        let p = a.pseudonym("MRN 0042/../x");
        assert_eq!(p, a.pseudonym("MRN 0042/../x"));
        assert_ne!(p, b.pseudonym("MRN 0042/../x"));
        assert_ne!(p, a.pseudonym("MRN 0043/../x"));
        assert_eq!(p.len(), 36);
        assert!(p[4..].bytes().all(|c| c.is_ascii_hexdigit()), "{p}");
        assert_eq!(crate::partition::escape(&p).unwrap(), p);
        let long = "x".repeat(10 * 1024);
        assert_eq!(a.pseudonym(&long).len(), 36);
    }

    #[test]
    fn rfc4231_test_case_2() {
        // HMAC-SHA-256 with key "Jefe" and data "what do ya want for nothing?" (RFC 4231, 4.3), keys padded to the
        // minimum are checked above; here the primitive itself.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let hex = crate::commit::hex(&mac.finalize().into_bytes());
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn short_or_missing_keys_are_refused_without_echoing_them() {
        let err = Pseudonymiser::new(b"short-secret").unwrap_err().to_string();
        assert!(!err.contains("short-secret") && err.contains("16"), "{err}");
        let err = Pseudonymiser::from_env("CAPFLOW_TEST_SURELY_UNSET_KEY")
            .unwrap_err()
            .to_string();
        assert!(err.contains("CAPFLOW_TEST_SURELY_UNSET_KEY"), "{err}");
        let debug = format!(
            "{:?}",
            Pseudonymiser::new(b"0123456789abcdef-secret").unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
    }
}
