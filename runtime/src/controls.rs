//! The handles a host keeps on a running program.

use crate::{CodeUpgrade, MemoryGauge, Pauser, Stopper};

/// The handles a host keeps on a running program: stop it, pause it, watch and limit its
/// memory. Clones share the program (and a container's programs may share one set).
#[derive(Clone, Debug, Default)]
pub struct Controls {
    /// Stops the program on behalf of a signal.
    pub stopper: Stopper,
    /// Freezes and thaws it.
    pub pauser: Pauser,
    /// Its memory, and the limit on it.
    pub gauge: MemoryGauge,
    /// Optimized code for a program that serves on baseline code.
    pub upgrade: CodeUpgrade,
}
