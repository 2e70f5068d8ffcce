//! The webhook a Git server calls on a push (`POST /git/<upstream>/hook` on the admin
//! listener): authenticated by the shared secret, either as GitHub and Gitea sign
//! deliveries (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`) or as
//! `Authorization: Bearer <secret>` for servers that cannot sign. Both comparisons are
//! constant-time. The body is not interpreted: any authenticated delivery means
//! "fetch now".

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::auth::secret::Secret;

/// Largest delivery body read (GitHub caps payloads at 25 MB; pushes are far smaller).
pub const MAX_HOOK_BODY: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAuth {
    Signed,
    Bearer,
}

/// Whether the delivery carries the secret, and how.
pub fn authenticate(
    secret: &Secret,
    signature_256: Option<&str>,
    authorization: Option<&str>,
    body: &[u8],
) -> Option<HookAuth> {
    if let Some(sig) = signature_256 {
        let hex_sig = sig.trim().strip_prefix("sha256=")?;
        let presented = hex::decode(hex_sig).ok()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).ok()?;
        mac.update(body);
        // `verify_slice` compares in constant time.
        return mac
            .verify_slice(&presented)
            .is_ok()
            .then_some(HookAuth::Signed);
    }
    let token = authorization?.strip_prefix("Bearer ")?;
    secret.ct_eq(token).then_some(HookAuth::Bearer)
}

/// The signature header a sender computes (for tests and scripts); HMAC takes keys
/// of any length, so `None` does not happen in practice.
pub fn sign(secret: &str, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(body);
    Some(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_and_bearer() {
        let s = Secret::new("0123456789abcdef-hook");
        let body = br#"{"ref":"refs/tags/v1.0.0"}"#;
        let good = sign("0123456789abcdef-hook", body).unwrap();
        assert_eq!(
            authenticate(&s, Some(&good), None, body),
            Some(HookAuth::Signed)
        );
        assert_eq!(authenticate(&s, Some(&good), None, b"other"), None);
        assert_eq!(authenticate(&s, Some("sha256=zz"), None, body), None);
        assert_eq!(authenticate(&s, Some(&good[7..]), None, body), None);
        // A bad signature is not rescued by a bearer token.
        assert_eq!(
            authenticate(
                &s,
                Some("sha256=00"),
                Some("Bearer 0123456789abcdef-hook"),
                body
            ),
            None
        );
        assert_eq!(
            authenticate(&s, None, Some("Bearer 0123456789abcdef-hook"), body),
            Some(HookAuth::Bearer)
        );
        assert_eq!(authenticate(&s, None, Some("Bearer nope"), body), None);
        assert_eq!(authenticate(&s, None, None, body), None);
    }
}
