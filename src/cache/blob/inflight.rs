//! Coalesced misses: one upstream GET per blob at a time. The first miss leads (its
//! response fills the cache while streaming to it); later ones wait until the lead is
//! dropped (fill kept, failed, or not cacheable at all) and look again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Default)]
pub struct Inflight {
    leads: Mutex<HashMap<String, (u64, watch::Receiver<()>)>>,
    next_id: AtomicU64,
}

/// Held by the request whose upstream answer fills the cache.
pub struct LeadGuard {
    inflight: Arc<Inflight>,
    key: String,
    id: u64,
    _tx: watch::Sender<()>,
}

impl Drop for LeadGuard {
    fn drop(&mut self) {
        let mut leads = self
            .inflight
            .leads
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if leads.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            leads.remove(&self.key);
        }
        // `_tx` drops after this body: waiters see the entry gone when they wake.
    }
}

pub enum Lead {
    Leader(LeadGuard),
    /// Resolves (with an error, as the sender is dropped) when the lead ends.
    Follower(watch::Receiver<()>),
}

impl Inflight {
    pub fn lead(self: &Arc<Self>, key: &str) -> Lead {
        let mut leads = self.leads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, rx)) = leads.get(key) {
            return Lead::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        leads.insert(key.to_owned(), (id, rx));
        Lead::Leader(LeadGuard {
            inflight: Arc::clone(self),
            key: key.to_owned(),
            id,
            _tx: tx,
        })
    }
}

/// Waits until the lead behind `rx` ends.
pub async fn wait(mut rx: watch::Receiver<()>) {
    // The value never changes: `changed` returns once the sender is gone.
    while rx.changed().await.is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_and_followers_wake_when_it_ends() {
        let f = Arc::new(Inflight::default());
        let Lead::Leader(guard) = f.lead("d") else {
            panic!("first is the leader")
        };
        let Lead::Follower(rx) = f.lead("d") else {
            panic!("second follows")
        };
        assert!(matches!(f.lead("other"), Lead::Leader(_)));
        let waiter = tokio::spawn(wait(rx));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
            .await
            .expect("woke")
            .expect("joined");
        assert!(matches!(f.lead("d"), Lead::Leader(_)));
    }
}
