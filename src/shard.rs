//! Which per-thread shard the current thread counts into.
//!
//! Counters every request bumps (cache hits, request metrics) are kept in one
//! shard per worker thread and summed when read: a single atomic shared by all
//! cores costs a hot path more in cache-line transfers than the counting itself.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards per counter set; threads beyond this share shards (still correct).
pub const SHARDS: usize = 16;

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The current thread's shard, in `0..SHARDS`.
pub fn index() -> usize {
    MINE.with(|i| *i)
}

/// Padded to its own cache lines, so two shards never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// A monotonic counter split into per-thread shards.
#[derive(Debug, Default)]
pub struct Counter {
    shards: [Padded<AtomicU64>; SHARDS],
}

impl Counter {
    /// Adds one in the current thread's shard.
    pub fn bump(&self) {
        self.shards[index()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` in the current thread's shard.
    pub fn add(&self, n: u64) {
        self.shards[index()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum over all shards.
    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = Arc::new(Counter::default());
        let threads: Vec<_> = (0..SHARDS + 3)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || (0..1000).for_each(|_| c.bump()))
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(c.get(), (SHARDS as u64 + 3) * 1000);
        assert!(index() < SHARDS);
    }
}
