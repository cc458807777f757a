//! Proportional set size (PSS) of everything a containerd runs for its containers: the shim
//! daemons and every process below them.
//!
//! PSS, not RSS: a page shared by k processes counts 1/k in each, so the sum over a set of
//! processes is what that set really costs the machine, and adding one more container shows
//! its true marginal cost (shared binary and library pages are not counted again).

use std::collections::{BTreeSet, HashMap};

use crate::Containerd;

/// The PSS of a set of processes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PssSample {
    /// Sum of `Pss:` over the processes, in KiB.
    pub kib: u64,
    /// Sum of `Pss_Anon:` (heap, stacks: memory no other process shares), in KiB. Unlike
    /// file pages, it does not shrink when unrelated processes on the machine map the same
    /// binaries, so it is the steadier figure on a busy machine.
    pub anon_kib: u64,
    /// How many processes were summed.
    pub processes: usize,
    /// How many of them are this project's shim daemons.
    pub wasm_shims: usize,
    /// How many are containerd's runc shims (plain runc containers, or the ones our shim
    /// starts for a pod's sandbox).
    pub runc_shims: usize,
}

impl PssSample {
    /// The sum in MiB.
    pub fn mib(&self) -> f64 {
        self.kib as f64 / 1024.0
    }

    /// The anonymous part in MiB.
    pub fn anon_mib(&self) -> f64 {
        self.anon_kib as f64 / 1024.0
    }
}

/// PSS of every shim serving `containerd` (ours and runc's) plus all their descendants
/// (container processes such as busybox `sleep` or a pod's pause). containerd itself is not
/// counted: it is the same for every runtime.
pub fn containerd_children(containerd: &Containerd) -> PssSample {
    let wasm = containerd.shim_pids();
    let runc = containerd.runc_shim_pids();
    let roots: Vec<u32> = wasm.iter().chain(runc.iter()).copied().collect();
    let pids = with_descendants(&roots);
    let rollups: Vec<String> = pids.iter().filter_map(|pid| rollup(*pid)).collect();
    let sum = |field: &str| -> u64 { rollups.iter().filter_map(|r| rollup_field(r, field)).sum() };
    PssSample {
        kib: sum("Pss"),
        anon_kib: sum("Pss_Anon"),
        processes: pids.len(),
        wasm_shims: wasm.len(),
        runc_shims: runc.len(),
    }
}

/// `roots` and every process descending from them, found through the parent pid of every
/// process in /proc: shims daemonize, so the tree starts at them, not at containerd.
pub fn with_descendants(roots: &[u32]) -> BTreeSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, ppid) in all_parents() {
        children.entry(ppid).or_default().push(pid);
    }
    let mut seen: BTreeSet<u32> = BTreeSet::new();
    let mut todo: Vec<u32> = roots.to_vec();
    while let Some(pid) = todo.pop() {
        if seen.insert(pid) {
            todo.extend(children.get(&pid).into_iter().flatten());
        }
    }
    seen
}

/// (pid, parent pid) of every process now in /proc; processes that end meanwhile are skipped.
fn all_parents() -> Vec<(u32, u32)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_from_stat(&stat)?))
        })
        .collect()
}

/// The parent pid in a /proc/PID/stat line. The command name (field 2) is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parent_from_stat(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    // State, then ppid.
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// /proc/PID/smaps_rollup: the totals over all mappings of a process in one cheap read
/// (instead of summing every mapping of /proc/PID/smaps). None if it has ended.
pub fn rollup(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()
}

/// The value in kB of line `field:` of a smaps_rollup (`Pss` is not `Pss_Anon`).
pub fn rollup_field(rollup: &str, field: &str) -> Option<u64> {
    rollup.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pss_line_only() {
        let rollup = "00400000-7ffd [rollup]\nRss:  2048 kB\nPss:  1234 kB\nPss_Anon:  99 kB\n";
        assert_eq!(rollup_field(rollup, "Pss"), Some(1234));
        assert_eq!(rollup_field(rollup, "Pss_Anon"), Some(99));
        assert_eq!(rollup_field("Rss: 1 kB\n", "Pss"), None);
    }

    #[test]
    fn parent_survives_odd_command_names() {
        assert_eq!(parent_from_stat("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parent_from_stat("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_its_own_descendant_and_has_pss() {
        let me = std::process::id();
        assert!(with_descendants(&[me]).contains(&me));
        let pss = rollup(me).and_then(|r| rollup_field(&r, "Pss"));
        assert!(pss.is_some_and(|k| k > 0));
        assert!(crate::parent_of(me).is_some_and(|p| p != me));
    }
}
