//! Sizes (`512MiB`) and intervals (`500ms`, `2s`, `30d`) as written in the
//! config file and on the command line.

use std::time::Duration;

/// Parses a byte size such as `512MiB`, `2GiB` or `1048576`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a size such as 512MiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}`: too large"))
}

/// Parses an interval: `250ms`, or a duration in the rule-file syntax
/// (`2s`, `1h30m`, `30d`).
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("`{text}`: expected e.g. 500ms, 2s or 1m"));
    }
    crate::rules::parse_duration(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("7"), Ok(7));
        assert!(parse_bytes("1TiB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("MiB").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_interval("1.5s").is_err());
        assert!(parse_interval("xms").is_err());
    }
}
