use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes of linear memory and table space a program's instance holds, updated by the store's
/// resource limiter as the guest grows them. Shared so a host can report it while the program
/// runs on another thread.
#[derive(Clone, Debug, Default)]
pub struct MemoryGauge {
    bytes: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
}

impl MemoryGauge {
    /// Current bytes of linear memory held by the instance.
    pub fn current(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Highest value `current` has reached.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub(crate) fn grow(&self, from: usize, to: usize) {
        let delta = to.saturating_sub(from) as u64;
        let now = self.bytes.fetch_add(delta, Ordering::Relaxed) + delta;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn release_all(&self) {
        self.bytes.store(0, Ordering::Relaxed);
    }
}

/// CPU time consumed by one thread, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuUsage {
    /// Total time on CPU.
    pub total_ns: u64,
    /// Time in user mode.
    pub user_ns: u64,
    /// Time in kernel mode.
    pub kernel_ns: u64,
}

/// CPU time of thread `tid` of this process, read from procfs. Programs run on one thread
/// each, so this is the program's CPU time. Returns zeros once the thread is gone.
pub fn thread_cpu_usage(tid: i32) -> CpuUsage {
    let base = format!("/proc/self/task/{tid}");
    // schedstat's first field is nanosecond-precise run time; stat's utime/stime are in clock
    // ticks and only used to split it.
    let total_ns = std::fs::read_to_string(format!("{base}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let (user_ticks, system_ticks) = std::fs::read_to_string(format!("{base}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after ") ".
            let rest = s.rsplit_once(") ")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after ") ".
            Some((
                fields.get(11)?.parse::<u64>().ok()?,
                fields.get(12)?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or((0, 0));
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    let to_ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / ticks_per_second);
    let user_ns = to_ns(user_ticks);
    let kernel_ns = to_ns(system_ticks);
    CpuUsage {
        total_ns: total_ns.max(user_ns + kernel_ns),
        user_ns,
        kernel_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_tracks_growth_and_peak() {
        let gauge = MemoryGauge::default();
        gauge.grow(0, 65536);
        gauge.grow(65536, 131072);
        assert_eq!(gauge.current(), 131072);
        gauge.release_all();
        assert_eq!(gauge.current(), 0);
        assert_eq!(gauge.peak(), 131072);
    }

    #[test]
    fn busy_thread_has_cpu_time() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 30 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_usage(tid).total_ns >= 10_000_000);
    }
}
