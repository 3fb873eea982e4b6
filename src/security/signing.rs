//! Message authentication and the small primitives around it: HMAC-SHA512 signatures (the
//! Paystack webhook scheme, external-apis.md §1.4), constant-time comparison, and escaping
//! text for HTML. One implementation each, so they cannot drift apart.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

/// Lowercase hex HMAC-SHA512 of `body` under `key`.
pub fn hmac_sha512_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC-SHA512 of `body` under `key`, compared in constant
/// time (hmac's `verify_slice`).
pub fn hmac_sha512_matches(key: &[u8], body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha512> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Text made safe to place in HTML, in element content or a quoted attribute.
pub fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject() {
        let sig = hmac_sha512_hex(b"key", b"body");
        assert_eq!(sig.len(), 128);
        assert!(hmac_sha512_matches(b"key", b"body", &sig));
        assert!(!hmac_sha512_matches(b"key", b"body!", &sig));
        assert!(!hmac_sha512_matches(b"other", b"body", &sig));
        assert!(!hmac_sha512_matches(b"key", b"body", "zz"));
    }

    #[test]
    fn comparison_and_escaping() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert_eq!(
            escape_html("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
