//! Secrets at rest (AES-256-GCM with a key from configuration), keyed hashes for short
//! codes, and random tokens.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Encrypts `plaintext`; the output is `nonce || ciphertext || tag`.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow::anyhow!("bad AEAD key"))?,
    );
    let nonce_bytes: [u8; NONCE_LEN] = rand::random();
    let mut out = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::empty(),
        &mut out,
    )
    .map_err(|_| anyhow::anyhow!("encryption failed"))?;
    let mut sealed = nonce_bytes.to_vec();
    sealed.extend_from_slice(&out);
    Ok(sealed)
}

pub fn open(key: &[u8; 32], sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(sealed.len() > NONCE_LEN, "sealed value too short");
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| anyhow::anyhow!("bad AEAD key"))?,
    );
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce =
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow::anyhow!("bad nonce"))?;
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .map_err(|_| anyhow::anyhow!("decryption failed (wrong key or tampered value)"))?;
    Ok(plain.to_vec())
}

/// HMAC-SHA256 (hex) of a low-entropy code (a 6-digit OTP) under a server key, so a copy of
/// the database alone cannot brute-force the codes.
pub fn keyed_hash(key: &[u8], value: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// SHA-256 (hex) of a high-entropy token; what we store instead of the token itself.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `bytes` of randomness, URL-safe base64 without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A uniformly random decimal code of `digits` digits (leading zeros kept).
pub fn random_digits(digits: u32) -> String {
    let n = rand::random_range(0..10u64.pow(digits));
    format!("{n:0width$}", width = digits as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_detects_tampering() {
        let key = [7u8; 32];
        let sealed = seal(&key, b"JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(open(&key, &sealed).unwrap(), b"JBSWY3DPEHPK3PXP");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&key, &tampered).is_err());
        assert!(open(&[8u8; 32], &sealed).is_err());
    }

    #[test]
    fn random_codes_have_the_right_shape() {
        for _ in 0..100 {
            let c = random_digits(6);
            assert_eq!(c.len(), 6);
            assert!(c.chars().all(|ch| ch.is_ascii_digit()));
        }
        assert_eq!(random_token(32).len(), 43);
    }
}
