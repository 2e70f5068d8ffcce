//! Access token or ID token? Telling them apart before a token grants anything.
//!
//! An ID token proves a login *to a client*; it is not a grant to call an API.
//! Accepting one lets any relying party of the IdP replay its users' ID tokens
//! at the registry (RFC 8725 §2.8, "substitution attacks"; RFC 9068 §4). Most
//! IdPs sign both kinds with the same key and `typ: JWT` header, so the
//! signature alone says nothing: the kind has to be read from the token.
//!
//! The rules, in order (the first that decides wins):
//! 1. Header `typ` (RFC 7515 §4.1.9, compared case-insensitively with an
//!    optional `application/` prefix):
//!    - `at+jwt` (RFC 9068 §2.1): an access token, unless a claim below
//!      contradicts it (rules 2-3);
//!    - anything else when the issuer sets `require_at_jwt_typ`: refused;
//!    - absent or `JWT`: undecided, read on;
//!    - any other value announces another kind (`logout+jwt` of OIDC
//!      Back-Channel Logout §2.4, `secevent+jwt` of RFC 8417, `dpop+jwt` of
//!      RFC 9449, `id_token+jwt`…): refused.
//! 2. Cognito's `token_use` claim is `access` or `id`
//!    (<https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-id-token.html>):
//!    anything but `access` is refused.
//! 3. Keycloak's payload `typ` claim is `Bearer` on access tokens and `ID`,
//!    `Refresh`, `Offline`, `Logout`… on the others: anything but `Bearer`
//!    (or `at+jwt`) is refused.
//! 4. An explicit `at+jwt` header is accepted here: the heuristics below are
//!    for tokens that do not say what they are.
//! 5. `nonce`, `at_hash`, `c_hash` (OIDC Core §2, §3.3.2.11) and `s_hash`
//!    (FAPI 1.0 Advanced §5.1) exist only in ID tokens: refused.
//! 6. An `azp` (OIDC Core §2: the party the *ID token* was issued to) with no
//!    grant-shaped claim at all (`client_id` of RFC 9068, Okta's `cid`,
//!    `scope`/`scp`/`roles`, the distribution `access` claim) is the shape of
//!    a Google-style ID token: refused. IdPs that put `azp` in access tokens
//!    (Keycloak, Auth0, Entra ID) always add `scope`, `scp` or `roles`.
//!
//! Besides, `aud` must name the registry; an ID token's `aud` is a client id,
//! so an ID token gets this far only if a client id equals a configured
//! audience, which is exactly the case these rules catch.

use crate::auth::error::InvalidReason;

/// Why a token was judged not to be an access token (for tests and debug
/// logs; the client sees [`InvalidReason::NotAccessToken`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAccess {
    /// Header `typ` names another kind, or is not `at+jwt` where required.
    HeaderTyp,
    /// Cognito `token_use` other than `access`.
    TokenUse,
    /// Keycloak payload `typ` other than `Bearer`.
    PayloadTyp,
    /// `nonce`, `at_hash`, `c_hash` or `s_hash`: ID-token-only claims.
    IdTokenClaim,
    /// `azp` without any grant-shaped claim.
    AzpOnly,
}

impl From<NotAccess> for InvalidReason {
    fn from(_: NotAccess) -> Self {
        InvalidReason::NotAccessToken
    }
}

/// Claims that only ID tokens carry.
const ID_TOKEN_CLAIMS: [&str; 4] = ["nonce", "at_hash", "c_hash", "s_hash"];
/// Claims that say "this grants access", any one of which makes `azp` harmless.
const GRANT_CLAIMS: [&str; 6] = ["client_id", "cid", "scope", "scp", "roles", "access"];

/// `typ` header or claim, lower-cased, without the `application/` prefix
/// RFC 7515 §4.1.9 allows.
fn media_type(v: &str) -> String {
    let lower = v.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// Decide a verified JWT's kind; see the module docs for the rules.
pub fn check_jwt(
    header_typ: Option<&str>,
    claims: &serde_json::Value,
    require_at_jwt: bool,
) -> Result<(), NotAccess> {
    let typ = header_typ.map(media_type);
    let explicit_access = match typ.as_deref() {
        Some("at+jwt") => true,
        _ if require_at_jwt => return Err(NotAccess::HeaderTyp),
        None | Some("jwt") => false,
        Some(_) => return Err(NotAccess::HeaderTyp),
    };
    check_kind_claims(claims)?;
    if explicit_access {
        return Ok(());
    }
    if ID_TOKEN_CLAIMS.iter().any(|c| claims.get(c).is_some()) {
        return Err(NotAccess::IdTokenClaim);
    }
    if claims.get("azp").is_some() && !GRANT_CLAIMS.iter().any(|c| claims.get(c).is_some()) {
        return Err(NotAccess::AzpOnly);
    }
    Ok(())
}

/// The claims by which IdPs state a token's kind (rules 2-3). Also applied to
/// RFC 7662 introspection answers, which Keycloak gives for ID tokens too.
pub fn check_kind_claims(claims: &serde_json::Value) -> Result<(), NotAccess> {
    if let Some(v) = claims.get("token_use") {
        if v.as_str() != Some("access") {
            return Err(NotAccess::TokenUse);
        }
    }
    if let Some(v) = claims.get("typ") {
        let ok = v
            .as_str()
            .map(media_type)
            .is_some_and(|t| t == "bearer" || t == "at+jwt");
        if !ok {
            return Err(NotAccess::PayloadTyp);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Claims of a plain distribution/OAuth access token.
    fn access() -> serde_json::Value {
        json!({"iss": "https://idp", "aud": "registry", "sub": "dev", "exp": 1, "iat": 0,
               "client_id": "ci", "scope": "repository:a:pull"})
    }

    fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        if let (Some(o), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                if v.is_null() {
                    o.remove(k);
                } else {
                    o.insert(k.clone(), v.clone());
                }
            }
        }
        base
    }

    #[test]
    fn access_tokens_pass() {
        // RFC 9068, in its registered spellings.
        for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
            assert_eq!(check_jwt(Some(typ), &access(), true), Ok(()), "{typ}");
            assert_eq!(check_jwt(Some(typ), &access(), false), Ok(()), "{typ}");
        }
        // Plain JWT access tokens (distribution token servers, most IdPs).
        for typ in [None, Some("JWT"), Some("jwt"), Some("application/jwt")] {
            assert_eq!(check_jwt(typ, &access(), false), Ok(()), "{typ:?}");
        }
        // A distribution token: no client_id, only `access`.
        let dist = json!({"iss": "t", "aud": "reg", "sub": "u", "exp": 1,
                          "access": [{"type": "repository", "name": "a", "actions": ["pull"]}]});
        assert_eq!(check_jwt(Some("JWT"), &dist, false), Ok(()));
        // Cognito access token, Keycloak access token (`azp` with `scope`), Entra
        // app-only access token (`azp` with `roles`), Okta (`cid`, `scp`).
        let cognito = with(access(), json!({"token_use": "access", "client_id": "c"}));
        let keycloak = with(
            access(),
            json!({"typ": "Bearer", "azp": "ci", "client_id": null}),
        );
        let entra = json!({"iss": "i", "aud": "a", "exp": 1, "azp": "app", "roles": ["push"]});
        let okta = json!({"iss": "i", "aud": "a", "exp": 1, "cid": "c", "scp": ["x"]});
        for c in [cognito, keycloak, entra, okta] {
            assert_eq!(check_jwt(Some("JWT"), &c, false), Ok(()), "{c}");
        }
    }

    #[test]
    fn every_known_id_token_shape_is_refused() {
        let cases = [
            // Cognito ID token: the claim alone marks it.
            (
                Some("JWT"),
                with(access(), json!({"token_use": "id"})),
                NotAccess::TokenUse,
            ),
            (
                None,
                with(access(), json!({"token_use": "ID"})),
                NotAccess::TokenUse,
            ),
            (
                Some("JWT"),
                with(access(), json!({"token_use": 1})),
                NotAccess::TokenUse,
            ),
            // Keycloak ID, refresh and logout tokens (payload `typ`).
            (
                Some("JWT"),
                with(access(), json!({"typ": "ID"})),
                NotAccess::PayloadTyp,
            ),
            (
                Some("JWT"),
                with(access(), json!({"typ": "Refresh"})),
                NotAccess::PayloadTyp,
            ),
            (
                None,
                with(access(), json!({"typ": "Logout"})),
                NotAccess::PayloadTyp,
            ),
            (
                Some("JWT"),
                with(access(), json!({"typ": ["Bearer"]})),
                NotAccess::PayloadTyp,
            ),
            // A contradictory token: at+jwt header, ID-token claim kind.
            (
                Some("at+jwt"),
                with(access(), json!({"token_use": "id"})),
                NotAccess::TokenUse,
            ),
            (
                Some("at+jwt"),
                with(access(), json!({"typ": "ID"})),
                NotAccess::PayloadTyp,
            ),
            // Header `typ` of other kinds.
            (Some("id_token+jwt"), access(), NotAccess::HeaderTyp),
            (Some("logout+jwt"), access(), NotAccess::HeaderTyp),
            (
                Some("application/secevent+jwt"),
                access(),
                NotAccess::HeaderTyp,
            ),
            (Some("dpop+jwt"), access(), NotAccess::HeaderTyp),
            (Some(""), access(), NotAccess::HeaderTyp),
            // OIDC ID-token-only claims.
            (
                Some("JWT"),
                with(access(), json!({"nonce": "n-0S6_WzA2Mj"})),
                NotAccess::IdTokenClaim,
            ),
            (
                None,
                with(access(), json!({"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"})),
                NotAccess::IdTokenClaim,
            ),
            (
                None,
                with(access(), json!({"c_hash": "LDktKdoQak3Pk0cnXxCltA"})),
                NotAccess::IdTokenClaim,
            ),
            (
                None,
                with(access(), json!({"s_hash": "x"})),
                NotAccess::IdTokenClaim,
            ),
            // A Google-style ID token: `azp` and identity claims, no grant.
            (
                Some("JWT"),
                json!({"iss": "https://accounts.google.com", "aud": "registry", "azp": "registry",
                       "sub": "1", "email": "a@b", "email_verified": true, "exp": 1, "iat": 0}),
                NotAccess::AzpOnly,
            ),
        ];
        for (typ, claims, want) in cases {
            assert_eq!(
                check_jwt(typ, &claims, false),
                Err(want),
                "{typ:?} {claims}"
            );
        }
    }

    #[test]
    fn required_at_jwt_refuses_plain_jwts() {
        for typ in [None, Some("JWT"), Some("at+jwt+x")] {
            assert_eq!(
                check_jwt(typ, &access(), true),
                Err(NotAccess::HeaderTyp),
                "{typ:?}"
            );
        }
    }

    #[test]
    fn introspection_answers_say_their_kind_too() {
        assert_eq!(
            check_kind_claims(&json!({"active": true, "typ": "Bearer"})),
            Ok(())
        );
        assert_eq!(
            check_kind_claims(&json!({"active": true, "typ": "ID"})),
            Err(NotAccess::PayloadTyp)
        );
        assert_eq!(
            check_kind_claims(&json!({"active": true, "token_use": "id"})),
            Err(NotAccess::TokenUse)
        );
    }
}
