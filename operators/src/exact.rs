//! A total order for plain records that hold floats, so whole rows can live in differential collections.

use serde::{Deserialize, Serialize};

/// A value ordered and compared by its exact serialised form (floats print in shortest round-trip form, so two
/// values are equal exactly when every field is bit-for-bit the same number or string).
///
/// Only for low-volume values such as one row per window: every comparison serialises both sides.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Exact<T>(pub T);

impl<T: Serialize> Exact<T> {
    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("plain records serialise")
    }
}

impl<T: Serialize> PartialEq for Exact<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}
impl<T: Serialize> Eq for Exact<T> {}
impl<T: Serialize> PartialOrd for Exact<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Serialize> Ord for Exact<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(&other.bytes())
    }
}
impl<T: Serialize> std::hash::Hash for Exact<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::Exact;

    #[test]
    fn orders_by_exact_values() {
        assert_eq!(Exact((1.0f64, "a")), Exact((1.0, "a")));
        assert_ne!(Exact(0.1f64 + 0.2), Exact(0.3f64));
        assert!(Exact(Some(1.0f64)) != Exact(None::<f64>));
    }
}
