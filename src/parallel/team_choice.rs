//! Whether a network's batch-1 forward runs faster in a [team](super::team)
//! or on one thread, measured while it runs.
//!
//! A team pays where a layer's work is large against the hand-over and the
//! data crossing between the two cores: SimpleConvNet's convolution runs
//! faster in one, while LeNet-5's small layers can run slower in one than
//! alone (the figures are in docs/performance.md, "A team or one thread at
//! batch 1, measured"), and by how much depends on the machine (how far apart
//! its cores are, how large their caches), so no fixed rule fits every
//! machine. Both give the same numbers to the bit (the layers' team paths
//! sum in the single thread's order), so the choice is free to follow the
//! clock: a [`TeamChoice`] runs the first [`TRIALS`] calls of every
//! [`CYCLE`] alternately in a team and alone, keeps each side's fastest
//! call (the first call of each run of trials left out), and runs the
//! rest of the cycle the faster way. Measuring again
//! each cycle follows a machine whose load or core placement changes.
//!
//! ```
//! use convnet::parallel::team_choice::{TeamChoice, TRIALS};
//! use std::time::Duration;
//! let mut choice = TeamChoice::default();
//! for _ in 0..TRIALS {
//!     let team = choice.in_team();
//!     // Made-up times: a team slower than one thread alone.
//!     choice.record(team, Duration::from_micros(if team { 30 } else { 20 }));
//! }
//! assert!(!choice.in_team() && !choice.measuring());
//! ```

use std::time::Duration;

/// Calls at the start of each cycle that are trials: runs of [`RUN`]
/// calls, alternately in a team and alone, enough for each side's fastest
/// call to stand for its speed when a few calls are slowed by the rest of
/// the machine.
pub const TRIALS: u64 = 16;

/// Calls in a run of trials on one side. The first of each run is not
/// counted: it finds the data where the other side left it (the helper's
/// half of a layer's output in the other core's cache, or the reverse),
/// which steady calls on its side do not pay.
pub const RUN: u64 = 4;

/// Calls per cycle: the measured choice holds for the calls after the
/// trials, then is measured again.
pub const CYCLE: u64 = 4096;

/// The measured choice between a team and one thread (see the module
/// documentation).
#[derive(Clone, Debug, Default)]
pub struct TeamChoice {
    /// Calls so far.
    calls: u64,
    /// The fastest trial of this cycle in a team and alone.
    fastest_in_team: Option<Duration>,
    fastest_alone: Option<Duration>,
}

impl TeamChoice {
    /// Whether this call is a trial, to be timed and given to
    /// [`record`](Self::record).
    pub fn measuring(&self) -> bool {
        self.calls % CYCLE < TRIALS
    }

    /// Whether this call runs in a team: in alternate runs during the
    /// trials (a team first), then the faster of the two; a team when one
    /// side has no trial counted (the rule before any measurement).
    pub fn in_team(&self) -> bool {
        if self.measuring() {
            return (self.calls % CYCLE / RUN).is_multiple_of(2);
        }
        match (self.fastest_in_team, self.fastest_alone) {
            (Some(team), Some(alone)) => team <= alone,
            _ => true,
        }
    }

    /// Counts a call; for a trial but the first of its run, keeps its time
    /// on its side.
    pub fn record(&mut self, in_team: bool, elapsed: Duration) {
        if self.calls.is_multiple_of(CYCLE) {
            (self.fastest_in_team, self.fastest_alone) = (None, None);
        }
        if self.measuring() && !self.calls.is_multiple_of(RUN) {
            let side = match in_team {
                true => &mut self.fastest_in_team,
                false => &mut self.fastest_alone,
            };
            *side = Some(side.map_or(elapsed, |fastest| fastest.min(elapsed)));
        }
        self.calls += 1;
    }

    /// Counts a call that was not timed (not a trial).
    pub fn skip(&mut self) {
        debug_assert!(!self.measuring(), "a trial must be recorded");
        self.calls += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(choice: &mut TeamChoice, calls: u64, team_us: u64, alone_us: u64) -> Vec<bool> {
        (0..calls)
            .map(|_| {
                let team = choice.in_team();
                if choice.measuring() {
                    let us = if team { team_us } else { alone_us };
                    choice.record(team, Duration::from_micros(us));
                } else {
                    choice.skip();
                }
                team
            })
            .collect()
    }

    #[test]
    fn trials_alternate_then_the_faster_side_holds_for_the_cycle() {
        let mut choice = TeamChoice::default();
        let calls = run(&mut choice, CYCLE, 10, 25);
        let trials: Vec<bool> = (0..TRIALS).map(|i| (i / RUN).is_multiple_of(2)).collect();
        assert_eq!(calls[..TRIALS as usize], trials[..]);
        assert!(calls[TRIALS as usize..].iter().all(|&team| team));
        // The next cycle measures again and follows the machine.
        let calls = run(&mut choice, CYCLE, 40, 25);
        assert_eq!(calls[..TRIALS as usize], trials[..]);
        assert!(calls[TRIALS as usize..].iter().all(|&team| !team));
    }

    #[test]
    fn the_fastest_trial_of_each_side_counts() {
        // Slow calls alone (the machine busy) do not decide: the fastest
        // counted call of each side does. The first call of a run is not
        // counted, however fast.
        let mut choice = TeamChoice::default();
        for i in 0..TRIALS {
            let team = choice.in_team();
            let us = match (team, i % RUN, i) {
                (true, 0, _) => 1,
                (true, ..) => 20,
                (false, _, 13) => 15,
                (false, ..) => 90,
            };
            choice.record(team, Duration::from_micros(us));
        }
        assert!(!choice.measuring() && !choice.in_team());
        let mut first_calls_only = TeamChoice::default();
        for i in 0..TRIALS {
            let team = first_calls_only.in_team();
            let us = if i.is_multiple_of(RUN) { 1 } else { 50 };
            first_calls_only.record(team, Duration::from_micros(if team { us } else { 30 }));
        }
        assert!(!first_calls_only.in_team());
    }
}
