//! Password hashing with argon2id at OWASP's recommended parameters (19 MiB, t=2, p=1).
//! Hashing is CPU- and memory-heavy by design, so callers run it on the blocking pool.

use std::sync::LazyLock;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
pub fn hash(password: &str) -> anyhow::Result<String> {
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A real hash of a password nobody has, so that a login for an unknown email costs the same
/// as one for a known email (no timing oracle for which emails exist).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("dummy password nobody uses").unwrap_or_default());

pub fn verify_dummy(password: &str) {
    let _ = verify(password, &DUMMY_HASH);
}

/// The argon2 slots of one instance. At most `slots` computations run at once: each takes
/// 19 MiB and a core, and a burst of signups or logins must neither exhaust memory nor
/// starve other requests of the CPU. A request waits at most `wait` for a slot and is then
/// refused (`Saturated`, answered 503 with `Retry-After`), so a flood of password checks
/// makes some of them fail fast instead of making every login hang until its timeout.
pub struct Passwords {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    wait: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// No hashing slot came free in time.
    #[error("password hashing is saturated")]
    Saturated,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl Passwords {
    pub fn new(slots: usize, wait: std::time::Duration) -> Self {
        Self {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(slots.max(1))),
            wait,
        }
    }

    /// A slot, owned: it moves into the blocking task, so a request that is cancelled (client
    /// gone, timeout) does not free the slot while its hash still runs.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, PasswordError> {
        let acquired = if self.wait.is_zero() {
            self.slots.clone().try_acquire_owned().ok()
        } else {
            tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
                .await
                .ok()
                .and_then(Result::ok)
        };
        acquired.ok_or_else(|| {
            metrics::counter!("ticketing_password_hashing_saturated_total").increment(1);
            PasswordError::Saturated
        })
    }

    /// Hashes on the blocking pool.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let permit = self.slot().await?;
        let hashed = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            hash(&password)
        })
        .await
        .map_err(anyhow::Error::from)??;
        Ok(hashed)
    }

    /// Verifies on the blocking pool; `None` verifies against the dummy hash and is false.
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        let permit = self.slot().await?;
        Ok(tokio::task::spawn_blocking(move || {
            let _slot = permit;
            match phc {
                Some(phc) => verify(&password, &phc),
                None => {
                    verify_dummy(&password);
                    false
                }
            }
        })
        .await
        .unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong", &h));
        assert!(!verify("anything", "not a phc string"));
    }
}
