//! Per-thread shards of the series every request touches.
//!
//! A Prometheus counter or histogram is a set of atomics shared by all worker
//! threads; at a hundred thousand cache hits a second on two cores, the cores
//! spend more time handing those cache lines back and forth than counting. Each
//! worker thread therefore counts into a shard of its own (Prometheus' own
//! `Local*` types behind an uncontended lock), and [`Shards::flush`] folds all
//! shards into the shared series before every scrape, so `/metrics` is exact.

use std::sync::{Mutex, MutexGuard};

use prometheus::local::{LocalHistogram, LocalIntCounter};

use crate::shard::{self, Padded};

/// One operation's hot series in one shard; each is created on first use, like
/// the shared series it flushes into.
#[derive(Default)]
pub(crate) struct LocalSeries {
    pub(crate) get_ok: Option<LocalIntCounter>,
    pub(crate) head_ok: Option<LocalIntCounter>,
    pub(crate) duration: Option<LocalHistogram>,
    pub(crate) upstream: Option<LocalHistogram>,
    pub(crate) received: Option<LocalIntCounter>,
    pub(crate) sent: Option<LocalIntCounter>,
    pub(crate) other_repository: Option<LocalIntCounter>,
}

impl LocalSeries {
    fn flush(&self) {
        let counters = [
            &self.get_ok,
            &self.head_ok,
            &self.received,
            &self.sent,
            &self.other_repository,
        ];
        for c in counters.into_iter().flatten() {
            c.flush();
        }
        for h in [&self.duration, &self.upstream].into_iter().flatten() {
            h.flush();
        }
    }
}

type Shard = Padded<Mutex<Vec<LocalSeries>>>;

pub(crate) struct Shards {
    shards: Box<[Shard]>,
}

impl Shards {
    /// `series` per shard (one per operation).
    pub(crate) fn new(series: usize) -> Self {
        let shards = (0..shard::SHARDS)
            .map(|_| {
                Padded(Mutex::new(
                    (0..series).map(|_| LocalSeries::default()).collect(),
                ))
            })
            .collect();
        Self { shards }
    }

    fn lock(shard: &Shard) -> MutexGuard<'_, Vec<LocalSeries>> {
        // A panic while counting leaves plain numbers behind; keep counting.
        shard.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This thread's shard.
    pub(crate) fn mine(&self) -> MutexGuard<'_, Vec<LocalSeries>> {
        Self::lock(&self.shards[shard::index() % self.shards.len()])
    }

    /// Moves every shard's counts into the shared series.
    pub(crate) fn flush(&self) {
        for shard in self.shards.iter() {
            for series in Self::lock(shard).iter() {
                series.flush();
            }
        }
    }
}
