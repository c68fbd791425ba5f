//! Hive-style partition values in paths: `day=2024-05-01/hour=03/part-0.parquet`
//! → `{day: "2024-05-01", hour: "03"}`.
//!
//! Only folder segments count (a file name like `a=b.parquet` is not a
//! partition). Values are percent-decoded as Hive and Spark escape them
//! (`city=New%20York`); `__HIVE_DEFAULT_PARTITION__` stays as written. The
//! values are strings: partitions are exposed as text columns, whatever they
//! look like, so `where: "hour = '03'"` means what it says.

use std::collections::BTreeMap;
use std::path::Path;

/// The partition values of a path relative to a watched folder. When a key
/// repeats, the deepest segment wins.
pub fn partitions_of(relative: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let Some(parent) = relative.parent() else {
        return found;
    };
    for segment in parent.components() {
        let std::path::Component::Normal(name) = segment else {
            continue;
        };
        let Some(name) = name.to_str() else { continue };
        if let Some((key, value)) = name.split_once('=')
            && is_key(key)
        {
            found.insert(key.to_string(), percent_decode(value));
        }
    }
    found
}

/// Partition keys are identifiers: letters, digits, `_`, `-` and `.`, not empty.
fn is_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn folders_only_decoded_deepest_wins() {
        assert_eq!(
            partitions_of(Path::new("events/day=2024-05-01/hour=03/part-0.parquet")),
            map(&[("day", "2024-05-01"), ("hour", "03")])
        );
        assert_eq!(partitions_of(Path::new("a=b.parquet")), map(&[]));
        assert_eq!(
            partitions_of(Path::new("city=New%20York/x=%zz/f.parquet")),
            map(&[("city", "New York"), ("x", "%zz")])
        );
        assert_eq!(
            partitions_of(Path::new("k=1/k=2/f.parquet")),
            map(&[("k", "2")])
        );
        assert_eq!(partitions_of(Path::new("=v/ k=v/f.parquet")), map(&[]));
        assert_eq!(partitions_of(Path::new("d=/f.parquet")), map(&[("d", "")]));
    }

    proptest! {
        #[test]
        fn encoded_values_round_trip(key in "[a-z_][a-z0-9_]{0,8}", value in "[ -~]{0,12}") {
            let encoded: String = value
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            let path = format!("{key}={encoded}/part-0.parquet");
            let found = partitions_of(Path::new(&path));
            prop_assert_eq!(found.get(&key), Some(&value));
        }
    }
}
