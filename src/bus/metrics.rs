//! The bus's and the event endpoints' Prometheus families, registered on the
//! proxy's registry. Label values are `&'static str` from this module's enums.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::metrics::PREFIX;

pub struct BusMetrics {
    connected: IntGauge,
    messages: IntCounterVec,
    reconnects: IntCounter,
    tag_flushes: IntCounter,
    events: IntCounterVec,
    invalidations: IntCounterVec,
}

/// Where an invalidation came from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A push or delete through this replica.
    Local,
    /// Another replica, over the bus.
    Bus,
    /// The upstream's own notification.
    Event,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Bus => "bus",
            Self::Event => "event",
        }
    }
}

impl BusMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let name = |n: &str| format!("{PREFIX}_{n}");
        let m = Self {
            connected: IntGauge::with_opts(Opts::new(
                name("bus_connected"),
                "1 while the invalidation bus subscription is up",
            ))?,
            messages: IntCounterVec::new(
                Opts::new(
                    name("bus_messages_total"),
                    "Bus messages by direction (sent, received) and result",
                ),
                &["direction", "result"],
            )?,
            reconnects: IntCounter::with_opts(Opts::new(
                name("bus_reconnects_total"),
                "Times the bus connection was re-established after a loss",
            ))?,
            tag_flushes: IntCounter::with_opts(Opts::new(
                name("bus_tag_flushes_total"),
                "Whole-cache tag flushes after the bus was down (events may have been missed)",
            ))?,
            events: IntCounterVec::new(
                Opts::new(
                    name("upstream_events_total"),
                    "Upstream registry notifications by format and result",
                ),
                &["format", "result"],
            )?,
            invalidations: IntCounterVec::new(
                Opts::new(
                    name("invalidations_total"),
                    "Cache invalidations applied, by where they came from",
                ),
                &["source"],
            )?,
        };
        registry.register(Box::new(m.connected.clone()))?;
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.reconnects.clone()))?;
        registry.register(Box::new(m.tag_flushes.clone()))?;
        registry.register(Box::new(m.events.clone()))?;
        registry.register(Box::new(m.invalidations.clone()))?;
        // Series an operator alerts on exist from the start, at zero.
        for result in [
            "ok",
            "forged",
            "stale",
            "malformed",
            "too_large",
            "dropped",
            "error",
        ] {
            m.messages.with_label_values(&["received", result]);
            m.messages.with_label_values(&["sent", result]);
        }
        Ok(m)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.set(i64::from(up));
    }

    pub fn message(&self, direction: &'static str, result: &'static str) {
        self.messages.with_label_values(&[direction, result]).inc();
    }

    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub fn tags_flushed(&self) {
        self.tag_flushes.inc();
    }

    pub fn event(&self, format: &'static str, result: &'static str) {
        self.events.with_label_values(&[format, result]).inc();
    }

    pub fn invalidated(&self, source: Source, n: usize) {
        self.invalidations
            .with_label_values(&[source.as_str()])
            .inc_by(n as u64);
    }
}
