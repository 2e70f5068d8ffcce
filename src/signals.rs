//! SIGHUP: reload what can be reloaded without a restart (the Rego policies), and say
//! in one log line what happened. Installed for every config, so that SIGHUP never
//! takes the default action (terminating the process, exit 129), also when there is
//! nothing to reload.

use std::sync::Arc;

use crate::policy::{PolicyService, ReloadOutcome};

/// Installs the SIGHUP handler now (before this returns, so a SIGHUP right after start-up
/// is already caught) and serves it, with the policy file watcher, on a small thread of
/// its own beside Pingora's runtimes.
pub fn spawn_reloader(policy: Option<Arc<PolicyService>>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("SIGHUP handler: {e}"))?;
    let mut hup = {
        let _guard = rt.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| format!("SIGHUP handler: {e}"))?
    };
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            rt.block_on(async move {
                let _watcher = policy.as_ref().and_then(|p| p.spawn_watcher());
                while hup.recv().await.is_some() {
                    reload(policy.clone()).await;
                }
            })
        })
        .map_err(|e| format!("SIGHUP handler: {e}"))?;
    Ok(())
}

/// One SIGHUP, one log line.
async fn reload(policy: Option<Arc<PolicyService>>) {
    let Some(policy) = policy else {
        tracing::info!(
            target: "margo_proxy::reload",
            "SIGHUP: nothing to reload (no policy section; other settings take effect on restart)"
        );
        return;
    };
    let previous = policy.current().revision().to_owned();
    match tokio::task::spawn_blocking(move || policy.reload()).await {
        Ok(Ok(outcome)) => tracing::info!(
            target: "margo_proxy::reload",
            "SIGHUP: {}",
            describe(&outcome)
        ),
        Ok(Err(e)) => tracing::error!(
            target: "margo_proxy::reload",
            "SIGHUP: policy reload failed, keeping revision {}: {e}",
            short(&previous)
        ),
        Err(e) => tracing::error!(
            target: "margo_proxy::reload",
            "SIGHUP: policy reload did not finish, keeping revision {}: {e}",
            short(&previous)
        ),
    }
}

/// "policies reloaded: revision 1a2b3c4d5e6f -> 9f8e7d6c5b4a", "policies unchanged (...)".
pub fn describe(outcome: &ReloadOutcome) -> String {
    match outcome {
        ReloadOutcome::Unchanged { revision } => {
            format!("policies unchanged (revision {})", short(revision))
        }
        ReloadOutcome::Reloaded { from, to } => {
            format!(
                "policies reloaded: revision {} -> {}",
                short(from),
                short(to)
            )
        }
    }
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_as_sentences() {
        let r = ReloadOutcome::Reloaded {
            from: "a".repeat(64),
            to: "b".repeat(64),
        };
        assert_eq!(
            describe(&r),
            format!(
                "policies reloaded: revision {} -> {}",
                "a".repeat(12),
                "b".repeat(12)
            )
        );
        let u = ReloadOutcome::Unchanged {
            revision: "abc".into(),
        };
        assert_eq!(describe(&u), "policies unchanged (revision abc)");
    }
}
