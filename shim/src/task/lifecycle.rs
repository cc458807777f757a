//! The states a task moves through, with the only legal moves between them.

use std::time::SystemTime;

use crate::error::{ShimError, ShimResult};

/// How and when a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// POSIX-style status (0-255).
    pub code: u32,
    /// When the shim saw it end.
    pub at: SystemTime,
}

/// Created → Running → Stopped, or Created → Stopped when killed or deleted before Start.
/// Deletion removes the task from the registry, so there is no Deleted state to mishandle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Prepared (program compiled, stdio open); no guest code has run.
    Created,
    /// The program is running.
    Running,
    /// The program has ended.
    Stopped(Exit),
}

impl Lifecycle {
    /// Created → Running.
    pub fn start(&mut self, id: &str) -> ShimResult<()> {
        match self {
            Lifecycle::Created => {
                *self = Lifecycle::Running;
                Ok(())
            }
            Lifecycle::Running => Err(ShimError::FailedPrecondition(format!(
                "task {id} is already running"
            ))),
            Lifecycle::Stopped(_) => Err(ShimError::FailedPrecondition(format!(
                "task {id} has already stopped"
            ))),
        }
    }

    /// Created/Running → Stopped. The first exit wins; a second is refused so a late report
    /// cannot rewrite a status containerd has already seen.
    pub fn stop(&mut self, code: u32) -> Option<Exit> {
        match self {
            Lifecycle::Stopped(_) => None,
            _ => {
                let exit = Exit {
                    code,
                    at: SystemTime::now(),
                };
                *self = Lifecycle::Stopped(exit);
                Some(exit)
            }
        }
    }

    /// The exit, if the task has ended.
    pub fn exit(&self) -> Option<Exit> {
        match self {
            Lifecycle::Stopped(exit) => Some(*exit),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_transitions_succeed() {
        let mut state = Lifecycle::Created;
        state.start("t").unwrap();
        assert!(state.start("t").is_err());
        assert_eq!(state.stop(3).map(|e| e.code), Some(3));
        assert!(state.stop(4).is_none());
        assert_eq!(state.exit().map(|e| e.code), Some(3));
        assert!(state.start("t").is_err());
    }
}
