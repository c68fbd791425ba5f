//! Distinct-count estimate: an HLL sketch (Apache DataSketches, `lg_k = 12`,
//! 8-bit registers, relative standard error ≈ 1.04 / √4096 ≈ 1.6 %).
//!
//! HLL is deterministic (fixed hash seed) and its union is a register-wise
//! maximum, so merging is commutative and associative. The sketch is stored in
//! profiles as the hex of DataSketches' own serialization, which other
//! DataSketches implementations can read.

use std::fmt;

use datasketches::hll::{HllSketch, HllType, HllUnion};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// log2 of the number of HLL registers.
pub const LG_K: u8 = 12;

/// An HLL sketch of distinct values.
#[derive(Clone)]
pub struct DistinctSketch {
    sketch: HllSketch,
}

impl Default for DistinctSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DistinctSketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DistinctSketch(~{:.0})", self.estimate())
    }
}

/// Sketches are equal when they estimate the same count. (Their byte forms may
/// differ after a round trip through serialization, which compacts them.)
impl PartialEq for DistinctSketch {
    fn eq(&self, other: &Self) -> bool {
        self.estimate().to_bits() == other.estimate().to_bits()
    }
}

impl DistinctSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        let sketch = HllSketch::new(LG_K, HllType::Hll8).unwrap_or_else(|_| unreachable_config());
        Self { sketch }
    }

    /// Adds a string value.
    pub fn update_str(&mut self, value: &str) {
        self.sketch.update(value);
    }

    /// Adds a string value given as its UTF-8 bytes, hashed exactly as
    /// [`DistinctSketch::update_str`] hashes the string (the same
    /// coupon): for callers that hold the bytes of a string already known
    /// to be UTF-8 (an Arrow view's inline bytes), so they need not
    /// validate them again per value.
    pub fn update_utf8(&mut self, bytes: &[u8]) {
        self.sketch.update(Utf8Bytes(bytes));
    }

    /// Adds a number. `-0.0` counts as `0.0`, and every NaN as one value.
    pub fn update_f64(&mut self, value: f64) {
        self.sketch.update(super::canonical_bits(value));
    }

    /// Merges another sketch into this one.
    pub fn merge(&mut self, other: &DistinctSketch) {
        let mut union = match HllUnion::new(LG_K) {
            Ok(u) => u,
            Err(_) => unreachable_config(),
        };
        union.update(&self.sketch);
        union.update(&other.sketch);
        self.sketch = union.to_sketch(HllType::Hll8);
    }

    /// Estimated number of distinct values.
    pub fn estimate(&self) -> f64 {
        self.sketch.estimate()
    }
}

/// `LG_K = 12` is within DataSketches' accepted range (4..=21); construction
/// with it cannot fail. Kept out of line so the invariant is stated once.
#[cold]
fn unreachable_config() -> ! {
    panic!("HLL lg_k {LG_K} rejected by datasketches: a constant out of range")
}

impl Serialize for DistinctSketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let bytes = self.sketch.serialize();
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
        serializer.serialize_str(&hex)
    }
}

impl<'de> Deserialize<'de> for DistinctSketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(serde::de::Error::custom(
                "HLL sketch: odd-length or non-ASCII hex",
            ));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| serde::de::Error::custom(format!("HLL sketch: bad hex: {e}")))?;
        let sketch = HllSketch::deserialize(&bytes)
            .map_err(|e| serde::de::Error::custom(format!("HLL sketch: {e}")))?;
        Ok(Self { sketch })
    }
}

/// Bytes hashed as `str`'s `Hash` hashes its text: the bytes, then `0xff`
/// (`Hasher::write_str`'s definition), so a value gets one coupon whichever
/// way it is added.
struct Utf8Bytes<'a>(&'a [u8]);

impl std::hash::Hash for Utf8Bytes<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(self.0);
        state.write_u8(0xff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Bytes and text of the same strings make the same sketch, byte
        /// for byte (the list, set and register modes all reached).
        #[test]
        fn utf8_bytes_hash_as_their_text(values in proptest::collection::vec(".{0,20}", 0..6000)) {
            let mut text = DistinctSketch::new();
            let mut bytes = DistinctSketch::new();
            for v in &values {
                text.update_str(v);
                bytes.update_utf8(v.as_bytes());
            }
            prop_assert_eq!(serde_json::to_string(&text).unwrap(), serde_json::to_string(&bytes).unwrap());
        }
    }

    #[test]
    fn estimates_within_the_documented_error() {
        let mut a = DistinctSketch::new();
        let mut b = DistinctSketch::new();
        for i in 0..60_000u32 {
            a.update_str(&format!("v{i}"));
            b.update_str(&format!("v{}", i + 30_000));
        }
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.estimate(), ba.estimate());
        // 90,000 distinct; 3 standard errors of 1.6 %.
        let rel = (ab.estimate() - 90_000.0).abs() / 90_000.0;
        assert!(rel < 0.05, "{}", ab.estimate());
        let json = serde_json::to_string(&ab).unwrap();
        let back: DistinctSketch = serde_json::from_str(&json).unwrap();
        assert_eq!(back.estimate(), ab.estimate());
    }

    #[test]
    fn small_counts_are_exact_and_zero_is_canonical() {
        let mut s = DistinctSketch::new();
        for v in [1.0, 2.0, 2.0, 0.0, -0.0, f64::NAN, f64::NAN] {
            s.update_f64(v);
        }
        assert_eq!(s.estimate().round(), 4.0);
    }

    #[test]
    fn bad_serialized_sketch_is_an_error_not_a_panic() {
        assert!(serde_json::from_str::<DistinctSketch>("\"zz\"").is_err());
        assert!(serde_json::from_str::<DistinctSketch>("\"0102\"").is_err());
        assert!(serde_json::from_str::<DistinctSketch>("\"abc\"").is_err());
    }
}
