//! Client tokens (HMAC-SHA256, expiring) and admin-key checks.
//!
//! Token format: `v1.<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, "v1." + claims))>`,
//! claims `{"c": client id, "d": deployment, "e": expiry in unix ms}`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::DeploymentKey;
use crate::error::{Error, Result};
use crate::onnx::hex;

type HmacSha256 = Hmac<Sha256>;

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "c")]
    pub client_id: String,
    #[serde(rename = "d")]
    pub deployment: String,
    #[serde(rename = "e")]
    pub expires_at: i64,
}

/// Signs and verifies client tokens.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl TokenSigner {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    fn mac(&self, message: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(message);
        mac
    }

    /// A signed token for `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signed = format!("v1.{payload}");
        let tag = self.mac(signed.as_bytes()).finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The claims of a genuine, unexpired token (`now` in unix ms).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims> {
        let bad = || Error::Unauthorized("invalid client token".into());
        let (signed, tag) = token.rsplit_once('.').ok_or_else(bad)?;
        let payload = signed.strip_prefix("v1.").ok_or_else(bad)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        self.mac(signed.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| bad())?;
        let claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?)
                .map_err(|_| bad())?;
        if claims.expires_at <= now {
            return Err(Error::Unauthorized(
                "client token expired; refresh it at POST /v1/clients/refresh or register again"
                    .into(),
            ));
        }
        Ok(claims)
    }
}

/// A short, stable fingerprint of a key (first 16 hex digits of its SHA-256): what the audit log
/// records instead of the key.
pub fn fingerprint(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))[..16].to_string()
}

/// Constant-time equality of two secrets (compares their SHA-256 digests with HMAC's verifier).
fn secret_eq(a: &str, b: &str) -> bool {
    let (da, db) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    let mut diff = 0u8;
    for (x, y) in da.iter().zip(db.iter()) {
        diff |= x ^ y;
    }
    diff == 0
}

/// The deployment a key belongs to.
pub fn deployment_for<'a>(keys: &'a [DeploymentKey], presented: &str) -> Option<&'a str> {
    keys.iter()
        .find(|k| secret_eq(&k.key, presented))
        .map(|k| k.deployment.as_str())
}

/// The fingerprint of the admin key presented, if it is one of `keys`.
pub fn admin_fingerprint(keys: &[String], presented: &str) -> Option<String> {
    keys.iter()
        .any(|k| secret_eq(k, presented))
        .then(|| fingerprint(presented))
}

/// 32 bytes from the OS.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::internal(format!("no OS randomness: {e}")))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_reject_forgery_and_expiry() {
        let s = TokenSigner::new(b"secret-secret-secret".to_vec());
        let claims = Claims {
            client_id: "abc".into(),
            deployment: "site".into(),
            expires_at: 1_000,
        };
        let t = s.issue(&claims);
        assert_eq!(s.verify(&t, 999).unwrap(), claims);
        assert!(matches!(s.verify(&t, 1_000), Err(Error::Unauthorized(_))));
        let other = TokenSigner::new(b"another-secret".to_vec());
        assert!(other.verify(&t, 0).is_err());
        // Tampering with the claims breaks the MAC.
        let forged_claims = Claims {
            expires_at: i64::MAX,
            ..claims
        };
        let forged = other.issue(&forged_claims);
        let (_, tag) = t.rsplit_once('.').unwrap();
        let (signed, _) = forged.rsplit_once('.').unwrap();
        assert!(s.verify(&format!("{signed}.{tag}"), 0).is_err());
        assert!(s.verify("garbage", 0).is_err());
    }

    #[test]
    fn keys_match_in_constant_time_and_fingerprints_hide_them() {
        let keys = vec!["admin-key-0123456789".to_string()];
        assert!(admin_fingerprint(&keys, "admin-key-0123456789").is_some());
        assert!(admin_fingerprint(&keys, "admin-key-012345678").is_none());
        let fp = fingerprint("admin-key-0123456789");
        assert_eq!(fp.len(), 16);
        assert!(!fp.contains("admin"));
    }
}
