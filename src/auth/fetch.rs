//! Calls to the IdP: one shared client with timeouts, no redirects, and a
//! size cap on bodies, so a slow or hostile IdP cannot stall or bloat the
//! proxy. Redirects are refused because following one would let a
//! compromised discovery document send us to keys of the attacker's choice.

use std::time::Duration;

use crate::auth::error::ConfigError;

/// Largest body read from the IdP (JWKS, discovery, token, introspection).
pub const MAX_BODY: usize = 1 << 20;

/// Why an IdP call failed (log-safe: no credentials, no bodies).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connect, TLS, timeout...
    #[error("request failed: {0}")]
    Transport(String),
    /// Non-success status.
    #[error("status {0}")]
    Status(u16, Vec<u8>),
    /// Body over [`MAX_BODY`].
    #[error("response too large")]
    TooLarge,
    /// Not the JSON we expected.
    #[error("bad json: {0}")]
    Json(String),
}

/// Build the shared client.
pub fn client(timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("margo-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Http(e.to_string()))
}

/// Send, read at most [`MAX_BODY`] bytes, return status and body.
pub async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), FetchError> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| FetchError::Transport(e.without_url().to_string()))?;
    let status = resp.status().as_u16();
    if resp.content_length().is_some_and(|l| l > MAX_BODY as u64) {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| FetchError::Transport(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// GET a JSON document, success status required.
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> Result<serde_json::Value, FetchError> {
    let (status, body) = send(client.get(url).header("accept", "application/json")).await?;
    if !(200..300).contains(&status) {
        return Err(FetchError::Status(status, body));
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::Json(e.to_string()))
}
