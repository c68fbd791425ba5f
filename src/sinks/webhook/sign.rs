//! Request signing: `X-Driftwatch-Signature: sha256=<hex>` where hex is the
//! HMAC-SHA256, keyed by the webhook's secret, of `timestamp + "." + body`,
//! and `X-Driftwatch-Timestamp: <timestamp>` (Unix seconds). Receivers
//! recompute it over the raw body and reject timestamps more than a few
//! minutes old, which defeats replays. The timestamp is fresh on every
//! attempt; the body bytes never change between attempts.

use ring::hmac;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Driftwatch-Signature";
/// Header carrying the timestamp that was signed.
pub const TIMESTAMP_HEADER: &str = "X-Driftwatch-Timestamp";

/// The `X-Driftwatch-Signature` value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

/// Checks a signature header in constant time (what a receiver does).
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(expected) = header.strip_prefix("sha256=").and_then(unhex) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &expected).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4231_test_case_2() {
        // The HMAC primitive against RFC 4231's test case 2 (key "Jefe")…
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        let tag = hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // …and the signature is that HMAC over "timestamp" + "." + "body".
        let s = signature(b"Jefe", "what do ya want for nothing", b"?");
        assert_ne!(
            s,
            format!("sha256={}", hex(tag.as_ref())),
            "a dot is inserted"
        );
        let s = signature(b"Jefe", "what do ya want for nothing?", b"");
        let with_dot = hmac::sign(&key, b"what do ya want for nothing?.");
        assert_eq!(s, format!("sha256={}", hex(with_dot.as_ref())));
    }

    #[test]
    fn verify_accepts_only_the_exact_body_secret_and_time() {
        let s = signature(b"secret", "1764158400", br#"{"a":1}"#);
        // The value Python's hmac module gives for the receiver code in docs/webhook.md.
        assert_eq!(
            s,
            "sha256=e8189f7f1ab3600eac8201b99a65b00d6da5acb7d23f208864c2438274852c7d"
        );
        assert!(verify(b"secret", "1764158400", br#"{"a":1}"#, &s));
        assert!(!verify(b"secret", "1764158401", br#"{"a":1}"#, &s));
        assert!(!verify(b"secret", "1764158400", br#"{"a":2}"#, &s));
        assert!(!verify(b"other", "1764158400", br#"{"a":1}"#, &s));
        assert!(!verify(b"secret", "1764158400", br#"{"a":1}"#, "sha256=zz"));
        assert!(!verify(b"secret", "1764158400", br#"{"a":1}"#, &s[7..]));
    }
}
