//! A totally ordered `f64`, so metric values can live in differential collections (which need `Ord`).

use serde::{Deserialize, Serialize};

/// An `f64` ordered by [`f64::total_cmp`]; equality is bitwise, so it is consistent with the ordering.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrdF64(pub f64);

impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for OrdF64 {}

impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl std::hash::Hash for OrdF64 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::OrdF64;

    #[test]
    fn orders_totally_and_sorts_nan_last() {
        let mut v = [OrdF64(f64::NAN), OrdF64(1.0), OrdF64(-2.0)];
        v.sort();
        assert_eq!(v[0], OrdF64(-2.0));
        assert_eq!(v[1], OrdF64(1.0));
        assert!(v[2].0.is_nan());
    }
}
