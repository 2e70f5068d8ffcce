//! The Redis side of the bus: one publishing connection, one subscription, each
//! reconnecting on its own with capped exponential backoff and full jitter, on a
//! small runtime of their own so a slow Redis never holds up request threads.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::message::{self, Invalidation, Message};
use super::metrics::Source;
use super::{BusConfig, Coherence};
use crate::auth::secret::Secret;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Everything the bus thread needs, built (and checked) with the config.
pub struct BusWorker {
    client: redis::Client,
    channel: String,
    key: Secret,
    /// This replica's id in messages, so it skips its own.
    origin: String,
    outbox: mpsc::Receiver<Invalidation>,
}

impl BusWorker {
    pub(super) fn new(
        cfg: &BusConfig,
        outbox: mpsc::Receiver<Invalidation>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let url = cfg.resolve_url()?;
        let client = redis::Client::open(url.expose())
            .map_err(|e| format!("bus.url: {}", redact(&e.to_string(), url.expose())))?;
        Ok(Self {
            client,
            channel: cfg.channel.clone(),
            key: cfg.resolve_secret()?,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            outbox,
        })
    }

    /// Starts the bus thread; it runs until the process exits.
    pub fn spawn(self, coherence: Arc<Coherence>) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("bus runtime: {e}"))?;
        std::thread::Builder::new()
            .name("bus".into())
            .spawn(move || {
                let Self {
                    client,
                    channel,
                    key,
                    origin,
                    outbox,
                } = self;
                tracing::info!(%channel, replica = %origin, "invalidation bus starting");
                let sub = subscribe_loop(&client, &channel, &key, &origin, &coherence);
                let publ = publish_loop(&client, &channel, &key, &origin, outbox, &coherence);
                rt.block_on(async { futures::join!(sub, publ) });
            })
            .map(|_| ())
            .map_err(|e| format!("bus thread: {e}"))
    }
}

/// Redis errors may quote the URL, which may carry a password.
fn redact(text: &str, url: &str) -> String {
    text.replace(url, "<bus url>")
}

/// Capped exponential backoff with full jitter (AWS architecture blog, "Exponential
/// Backoff And Jitter"): replicas that lost Redis together do not reconnect together.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn delay(&mut self) -> Duration {
        let cap = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let jitter = uuid::Uuid::new_v4().as_u128() as u64 % (cap.as_millis() as u64 + 1);
        Duration::from_millis(jitter.max(BACKOFF_MIN.as_millis() as u64 / 2))
    }
}

async fn subscribe_loop(
    client: &redis::Client,
    channel: &str,
    key: &Secret,
    origin: &str,
    coherence: &Coherence,
) {
    let mut backoff = Backoff::new();
    // Set once the subscription was lost or never came up: the next success flushes.
    let mut may_have_missed = false;
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(channel).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        match connected {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                coherence
                    .status
                    .connected
                    .store(true, std::sync::atomic::Ordering::Release);
                coherence.metrics.set_connected(true);
                if may_have_missed {
                    coherence.metrics.reconnected();
                    coherence.apply(&Invalidation::AllTags, Source::Bus).await;
                    coherence.metrics.tags_flushed();
                    tracing::info!("invalidation bus back; tag entries flushed once");
                } else {
                    tracing::info!("invalidation bus subscribed");
                }
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    receive(msg.get_payload_bytes(), key, origin, coherence).await;
                }
                tracing::warn!("invalidation bus subscription lost; serving on, tags stale for at most their TTL");
            }
            Ok(Err(e)) => {
                if !may_have_missed {
                    tracing::warn!(error = %redact(&e.to_string(), ""), "invalidation bus unreachable; retrying");
                }
            }
            Err(_) => {
                if !may_have_missed {
                    tracing::warn!("invalidation bus connect timed out; retrying");
                }
            }
        }
        may_have_missed = true;
        coherence
            .status
            .connected
            .store(false, std::sync::atomic::Ordering::Release);
        coherence.metrics.set_connected(false);
        tokio::time::sleep(backoff.delay()).await;
    }
}

async fn receive(payload: &[u8], key: &Secret, origin: &str, coherence: &Coherence) {
    match message::open(payload, key.expose().as_bytes(), message::now_secs()) {
        Ok(msg) if msg.origin == origin => coherence.metrics.message("received", "own"),
        Ok(msg) => {
            coherence.metrics.message("received", "ok");
            for inv in &msg.invalidations {
                coherence.apply(inv, Source::Bus).await;
            }
        }
        Err(e) => {
            coherence.metrics.message("received", e.label());
            // No payload in the log: it is unauthenticated input.
            tracing::warn!(error = %e, bytes = payload.len(), "bus message refused");
        }
    }
}

async fn publish_loop(
    client: &redis::Client,
    channel: &str,
    key: &Secret,
    origin: &str,
    mut outbox: mpsc::Receiver<Invalidation>,
    coherence: &Coherence,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = Backoff::new();
    let mut retry_at = tokio::time::Instant::now();
    let mut seq = 0u64;
    while let Some(first) = outbox.recv().await {
        // Whatever queued up meanwhile goes out in the same message.
        let mut batch = vec![first];
        while batch.len() < message::MAX_BATCH {
            match outbox.try_recv() {
                Ok(i) => batch.push(i),
                Err(_) => break,
            }
        }
        if conn.is_none() && tokio::time::Instant::now() >= retry_at {
            match tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
                .await
            {
                Ok(Ok(c)) => {
                    backoff.reset();
                    conn = Some(c);
                }
                _ => retry_at = tokio::time::Instant::now() + backoff.delay(),
            }
        }
        let Some(c) = conn.as_mut() else {
            for inv in &batch {
                coherence.remember_missed(inv);
            }
            coherence.metrics.message("sent", "dropped");
            continue;
        };
        // What could not be sent before goes first, as repository flushes.
        let missed = coherence.take_missed();
        let mut ok = true;
        for chunk in [missed, batch.clone()].iter().filter(|c| !c.is_empty()) {
            for part in chunk.chunks(message::MAX_BATCH) {
                seq += 1;
                let msg = Message {
                    origin: origin.to_owned(),
                    seq,
                    ts: message::now_secs(),
                    invalidations: part.to_vec(),
                };
                let Ok(wire) = message::seal(&msg, key.expose().as_bytes()) else {
                    coherence.metrics.message("sent", "too_large");
                    continue;
                };
                let sent = tokio::time::timeout(
                    PUBLISH_TIMEOUT,
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(wire)
                        .query_async::<i64>(c),
                )
                .await;
                if matches!(sent, Ok(Ok(_))) {
                    coherence.metrics.message("sent", "ok");
                } else {
                    ok = false;
                    for inv in part {
                        coherence.remember_missed(inv);
                    }
                    coherence.metrics.message("sent", "error");
                }
            }
        }
        if !ok {
            tracing::warn!("invalidation bus publish failed; will announce the affected repositories when it is back");
            conn = None;
            retry_at = tokio::time::Instant::now() + backoff.delay();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..20).map(|_| b.delay()).collect();
        assert!(delays.iter().all(|d| *d <= BACKOFF_MAX));
        assert!(delays.iter().all(|d| *d >= BACKOFF_MIN / 2));
        assert_eq!(b.next, BACKOFF_MAX);
        b.reset();
        assert_eq!(b.next, BACKOFF_MIN);
    }

    #[test]
    fn redaction_hides_the_url() {
        assert_eq!(
            redact("cannot connect to redis://:pw@h:1", "redis://:pw@h:1"),
            "cannot connect to <bus url>"
        );
    }
}
