//! A total order for plain records that hold floats, so whole rows can live in differential collections.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A value ordered and compared by its exact serialised form (bincode: floats as their bits, strings with their
/// lengths, so two values are equal exactly when every field is bit-for-bit the same number or string). The order
/// is total and fixed but not numeric: differential needs one, and no row depends on which.
///
/// The form is computed once, when the value is wrapped: differential sorts and compares window rows many times
/// (serialising on every comparison cost a third of the aggregation's time). Value and form are shared, so the
/// clones differential makes while merging and exchanging rows are reference counts.
#[derive(Debug)]
pub struct Exact<T>(Arc<(T, Vec<u8>)>);

impl<T> Clone for Exact<T> {
    fn clone(&self) -> Self {
        Exact(Arc::clone(&self.0))
    }
}

impl<T: Serialize + Default> Default for Exact<T> {
    fn default() -> Self {
        Exact::new(T::default())
    }
}

impl<T: Serialize> Exact<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        let form = bincode::serialize(&value).expect("plain records serialise");
        Exact(Arc::new((value, form)))
    }
}

impl<T> Exact<T> {
    /// The value.
    pub fn get(&self) -> &T {
        &self.0 .0
    }

    fn form(&self) -> &[u8] {
        &self.0 .1
    }
}

impl<T: Clone> Exact<T> {
    /// The value, unwrapped (copied only if another clone still shares it).
    pub fn into_inner(self) -> T {
        match Arc::try_unwrap(self.0) {
            Ok((value, _)) => value,
            Err(shared) => shared.0.clone(),
        }
    }
}

impl<T: Serialize> Serialize for Exact<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de, T: Serialize + Deserialize<'de>> Deserialize<'de> for Exact<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Exact::new)
    }
}

impl<T> PartialEq for Exact<T> {
    fn eq(&self, other: &Self) -> bool {
        self.form() == other.form()
    }
}
impl<T> Eq for Exact<T> {}
impl<T> PartialOrd for Exact<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Exact<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.form().cmp(other.form())
    }
}
impl<T> std::hash::Hash for Exact<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.form().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::Exact;

    #[test]
    fn orders_by_exact_values() {
        assert_eq!(Exact::new((1.0f64, "a")), Exact::new((1.0, "a")));
        assert_ne!(Exact::new(0.1f64 + 0.2), Exact::new(0.3f64));
        assert!(Exact::new(Some(1.0f64)) != Exact::new(None::<f64>));
        // A fixed total order (not numeric: differential needs one, rows never rely on which).
        let (a, b) = (Exact::new(1.0f64), Exact::new(2.0f64));
        assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
        assert_ne!(a, b);
        let round_trip: Exact<(f64, String)> = serde_json::from_str(
            &serde_json::to_string(&Exact::new((0.5, "x".to_string()))).unwrap(),
        )
        .unwrap();
        assert_eq!(round_trip, Exact::new((0.5, "x".into())));
        assert_eq!(round_trip.into_inner().1, "x");
    }
}
