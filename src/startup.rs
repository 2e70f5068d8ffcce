//! What `serve` and `check-config` do before anything listens: the same config checks
//! for both, the proxy state built as `serve` builds it (so `check-config` refuses what
//! `serve` would), and a bind test of every address so that a port already in use is
//! one clear line and a non-zero exit instead of Pingora retrying and panicking.

use std::net::TcpListener;

use crate::config::{Config, ConfigError, Diagnostic, Diagnostics, Loaded};

/// An address `serve` cannot listen on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} ({what}): {reason}")]
pub struct BindError {
    pub address: String,
    /// `listeners[0]`, `admin`.
    pub what: String,
    pub reason: String,
}

/// Binds and releases every listener and the admin address. Pingora binds in its own
/// threads, retries for about half a minute and panics there; this check runs before
/// and answers at once. A port taken between the two binds is still Pingora's to report.
pub fn check_bind(config: &Config) -> Result<(), BindError> {
    let listeners = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listeners[{i}]"), l.value.address.as_str()));
    let admin = config
        .admin
        .iter()
        .map(|a| ("admin".to_owned(), a.address.as_str()));
    for (what, address) in listeners.chain(admin) {
        if let Err(e) = TcpListener::bind(address) {
            return Err(BindError {
                address: address.to_owned(),
                what,
                reason: bind_reason(&e),
            });
        }
    }
    Ok(())
}

fn bind_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "address already in use (another process listens there)".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".into()
        }
        std::io::ErrorKind::AddrNotAvailable => "address not available on this host".into(),
        _ => e.to_string(),
    }
}

/// Builds the proxy state from a loaded config exactly as `serve` does, and drops it:
/// what `check-config` adds to the config checks (policies compile, auth keys load...).
pub fn check_state(loaded: &Loaded) -> Result<(), ConfigError> {
    crate::install_crypto_provider();
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(async { crate::proxy::ProxyState::from_config(&loaded.config) })
        });
    match built {
        Ok(_) => Ok(()),
        Err(message) => Err(setup_error(loaded, &message)),
    }
}

/// A set-up failure (`serve` finds these while building its services), as a finding at
/// the section it names: `policy: ...` at `policy:`, `auth: ...` at `auth:`.
pub fn setup_error(loaded: &Loaded, message: &str) -> ConfigError {
    let section = message.split(':').next().unwrap_or_default().trim();
    let (line, column) = loaded.locator.find(section).unwrap_or((1, 1));
    ConfigError::Invalid(Diagnostics {
        origin: loaded.warnings.origin.clone(),
        items: vec![Diagnostic::new(line, column, message)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named_with_its_cause() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let free = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free");
        let config = Config::parse(&format!(
            "listeners:\n  - address: {free}\nadmin:\n  address: {addr}\nupstreams:\n  - name: u\n    url: http://127.0.0.1:5000\n"
        ))
        .expect("config");
        let e = check_bind(&config).expect_err("taken");
        assert_eq!(e.what, "admin");
        assert_eq!(
            e.to_string(),
            format!("cannot listen on {addr} (admin): address already in use (another process listens there)")
        );
    }
}
