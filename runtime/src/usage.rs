use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of linear memory and table space the instances of one container hold, and the limit
/// they must stay under. Updated by each store's resource limiter as its guest grows; shared so
/// a host can report it, and change the limit, while the programs run on other threads. The
/// programs of one container (its main program and its execs) share one gauge, as the
/// processes of a Linux container share one memory cgroup.
#[derive(Clone, Debug, Default)]
pub struct MemoryGauge {
    bytes: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    /// 0: no limit.
    limit: Arc<AtomicU64>,
}

/// A guest tried to grow its memory past the container's limit: the wasm equivalent of a
/// cgroup OOM kill, reported as status 137.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    /// The limit in bytes.
    pub limit: u64,
    /// The total the growth would have reached.
    pub wanted: u64,
}

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "out of memory: growing to {} bytes would exceed the container's limit of {} bytes",
            self.wanted, self.limit
        )
    }
}

impl std::error::Error for OutOfMemory {}

impl MemoryGauge {
    /// Current bytes of linear memory held by the instances.
    pub fn current(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Highest value `current` has reached.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The memory limit in bytes (0: none).
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the limit (0: none). Applies to every later growth of running instances; memory
    /// already held is not taken back, as a lowered cgroup limit cannot take back pages
    /// either without killing.
    pub fn set_limit(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
    }

    /// Accounts a growth from `from` to `to` bytes, unless it would pass the limit.
    pub(crate) fn try_grow(&self, from: usize, to: usize) -> Result<u64, OutOfMemory> {
        let delta = to.saturating_sub(from) as u64;
        let limit = self.limit();
        let mut current = self.current();
        loop {
            let wanted = current.saturating_add(delta);
            if limit > 0 && wanted > limit {
                return Err(OutOfMemory { limit, wanted });
            }
            match self.bytes.compare_exchange_weak(
                current,
                wanted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(wanted, Ordering::Relaxed);
                    return Ok(delta);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back what one instance held, when its store is dropped.
    pub(crate) fn release(&self, bytes: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_tracks_growth_and_peak() {
        let gauge = MemoryGauge::default();
        gauge.try_grow(0, 65536).unwrap();
        gauge.try_grow(65536, 131072).unwrap();
        assert_eq!(gauge.current(), 131072);
        gauge.release(131072);
        assert_eq!(gauge.current(), 0);
        assert_eq!(gauge.peak(), 131072);
    }

    #[test]
    fn growth_past_the_limit_is_refused_and_the_limit_can_change() {
        let gauge = MemoryGauge::default();
        gauge.set_limit(100_000);
        gauge.try_grow(0, 65536).unwrap();
        let oom = gauge.try_grow(65536, 131072).unwrap_err();
        assert_eq!(oom.limit, 100_000);
        assert_eq!(oom.wanted, 131072);
        assert_eq!(gauge.current(), 65536);
        gauge.set_limit(0);
        gauge.try_grow(65536, 131072).unwrap();
        assert_eq!(gauge.current(), 131072);
    }
}
