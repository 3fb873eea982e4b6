//! TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step) and recovery codes.
//!
//! `check` returns the time step a code matched; the caller stores the last accepted step
//! and accepts only later ones, so a code is good once (RFC 6238 §5.2).

use totp_rs::{Algorithm, Builder, Totp};

pub const ISSUER: &str = "Ticketing";
pub const STEP_SECONDS: u64 = 30;

pub fn new_secret() -> Vec<u8> {
    // 160 bits, the size RFC 4226 recommends for SHA-1.
    rand::random::<[u8; 20]>().to_vec()
}

fn totp(secret: &[u8], account: &str) -> anyhow::Result<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP_SECONDS)
        .with_secret(secret.to_vec())
        .with_account_name(account.replace(':', ""))
        .with_issuer(Some(ISSUER))
        .build()
        .map_err(|e| anyhow::anyhow!("building TOTP: {e:?}"))
}

pub struct Enrollment {
    pub secret_base32: String,
    pub otpauth_url: String,
    pub qr_code_png: String,
}

/// Secret, otpauth URL and a base64 PNG QR code of it (rendered on the blocking pool by the
/// caller: QR encoding is CPU work).
pub fn enrollment(secret: &[u8], account: &str) -> anyhow::Result<Enrollment> {
    let t = totp(secret, account)?;
    Ok(Enrollment {
        secret_base32: t.secret().to_base32(),
        otpauth_url: t.to_url().map_err(|e| anyhow::anyhow!("{e:?}"))?,
        qr_code_png: t.to_qr_base64().map_err(|e| anyhow::anyhow!("{e:?}"))?,
    })
}

/// The time step `code` is valid for at `unix_time`, if any.
pub fn check(secret: &[u8], code: &str, unix_time: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret, "check").ok()?.check(code, unix_time)
}

/// Ten single-use recovery codes, `xxxxx-xxxxx` from an unambiguous alphabet (≈ 50 bits each).
pub fn recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..10)
        .map(|_| {
            let chars: String = (0..10)
                .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}", &chars[..5], &chars[5..])
        })
        .collect()
}

/// Recovery codes are compared without case or the dash, as people type them.
pub fn normalize_recovery_code(code: &str) -> String {
    code.trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vector() {
        // RFC 6238 appendix B: secret "12345678901234567890", T=59 → 94287082 (8 digits);
        // the 6-digit code is its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(check(secret, "287082", 59), Some(1));
        assert_eq!(
            check(secret, "287082", 59 + 30),
            Some(1),
            "one step of skew"
        );
        assert_eq!(check(secret, "287082", 59 + 90), None);
        assert_eq!(check(secret, "28708x", 59), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalize() {
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        let set: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(set.len(), 10);
        assert_eq!(normalize_recovery_code(" ABCDE-fghjk "), "abcdefghjk");
    }
}
