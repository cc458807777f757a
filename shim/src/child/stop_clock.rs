//! When the signal thread ends a command's process itself, because a stop was not answered.
//!
//! A command's blocking host calls run on its own thread (see
//! `runtime::Program::run_blocking_confined`), where a stop request cannot reach it. So the
//! first stop starts a clock: unanswered within the stop grace, the process ends with the
//! stop's status, as the signal would end a Linux process. Once the program has stopped
//! (the stopper is settled), its thread's teardown (draining output) gets the teardown
//! grace instead, a backstop for output written to something that never reads.

use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

/// How long a command's stop request may go unanswered. The thread answers at once, or
/// within an epoch tick when computing, unless it is inside a blocking host call (a
/// preview-1 sleep, a read of a FIFO). Short enough that `docker stop` of a sleeping service
/// still looks immediate.
pub(super) const STOP_GRACE: Duration = Duration::from_millis(200);

/// How long the teardown after an answered stop may take: the output drain it does is
/// bounded to 600 ms.
pub(super) const TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// The clock of one process's stop.
#[derive(Debug)]
pub(super) struct StopClock {
    /// `None` for a program whose stop is a drain (an HTTP component): no clock at all.
    grace: Option<Duration>,
    /// When the process ends, and with which signal's status.
    deadline: Option<(Instant, i32)>,
    tearing_down: bool,
}

/// A stop that ran out of time.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Overdue {
    /// The first stop signal: the status the process ends with.
    pub(super) signal: i32,
    /// Whether the program had stopped and only its teardown ran over.
    pub(super) tearing_down: bool,
}

impl StopClock {
    /// A clock with `grace` for the first stop (none: stops are never overdue).
    pub(super) fn new(grace: Option<Duration>) -> Self {
        StopClock {
            grace,
            deadline: None,
            tearing_down: false,
        }
    }

    /// A stop with `first` as the status's signal came at `now`; later ones change nothing.
    pub(super) fn stopped(&mut self, first: i32, now: Instant) {
        if let (Some(grace), None) = (self.grace, self.deadline) {
            self.deadline = Some((now + grace, first));
        }
    }

    /// How long the signal thread may wait for its next event, rounded up to whole
    /// milliseconds: a zero timeout for the last fraction of one would spin.
    pub(super) fn timeout(&self, now: Instant) -> PollTimeout {
        match self.deadline {
            Some((deadline, _)) => {
                let left = deadline.saturating_duration_since(now);
                PollTimeout::try_from(left.as_micros().div_ceil(1000)).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        }
    }

    /// After a wake-up at `now`: the stop that ran out of time, if one did. `settled` is
    /// whether the program has stopped running.
    pub(super) fn check(&mut self, settled: bool, now: Instant) -> Option<Overdue> {
        let (deadline, signal) = self.deadline?;
        if settled && !self.tearing_down {
            self.tearing_down = true;
            self.deadline = Some((now + TEARDOWN_GRACE, signal));
            return None;
        }
        // The clock ran while a cgroup freeze held this process too: a stop read just
        // before a pause ends the process as soon as it is thawed.
        (now >= deadline).then_some(Overdue {
            signal,
            tearing_down: self.tearing_down,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: i32 = libc::SIGTERM;

    #[test]
    fn without_a_grace_a_stop_is_never_overdue() {
        let start = Instant::now();
        let mut clock = StopClock::new(None);
        clock.stopped(TERM, start);
        assert_eq!(clock.timeout(start), PollTimeout::NONE);
        assert_eq!(clock.check(false, start + Duration::from_secs(3600)), None);
    }

    #[test]
    fn an_unanswered_stop_is_overdue_after_the_grace_with_the_first_signal() {
        let start = Instant::now();
        let mut clock = StopClock::new(Some(STOP_GRACE));
        assert_eq!(clock.check(false, start), None);
        clock.stopped(TERM, start);
        clock.stopped(libc::SIGINT, start + Duration::from_millis(50));
        assert_eq!(clock.check(false, start + Duration::from_millis(199)), None);
        assert_eq!(
            clock.check(false, start + STOP_GRACE),
            Some(Overdue {
                signal: TERM,
                tearing_down: false
            })
        );
    }

    #[test]
    fn an_answered_stop_gets_the_teardown_grace_once() {
        let start = Instant::now();
        let mut clock = StopClock::new(Some(STOP_GRACE));
        clock.stopped(TERM, start);
        let answered = start + Duration::from_millis(100);
        assert_eq!(clock.check(true, answered), None);
        assert_eq!(clock.check(true, answered + STOP_GRACE), None);
        assert_eq!(
            clock.check(true, answered + TEARDOWN_GRACE),
            Some(Overdue {
                signal: TERM,
                tearing_down: true
            })
        );
    }

    #[test]
    fn the_timeout_rounds_up_to_whole_milliseconds() {
        let start = Instant::now();
        let mut clock = StopClock::new(Some(STOP_GRACE));
        clock.stopped(TERM, start);
        let almost = start + STOP_GRACE - Duration::from_micros(10);
        assert_eq!(clock.timeout(almost), PollTimeout::from(1u16));
        assert_eq!(clock.timeout(start + STOP_GRACE), PollTimeout::ZERO);
    }
}
