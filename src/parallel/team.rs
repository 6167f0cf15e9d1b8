//! A two-thread team for work too small for rayon's hand-over: one image
//! through a network (inference at batch 1).
//!
//! The layers split a batch into rayon tasks, which suits batches of many
//! images. For one image, splitting each layer's work between the cores
//! costs more than it saves: rayon's idle workers go to sleep soon after
//! they run out of work, and waking one (a system call and a context
//! switch) costs more than one image's share of a layer, so a layer split
//! into rayon tasks at batch 1 runs slower than on one thread. Libraries
//! built on OpenMP keep their threads spinning instead.
//!
//! A [`Team`] does that for the length of one call. [`with_team`] takes a
//! second rayon worker, which spins, waiting for jobs, until the call
//! returns; meanwhile [`Team::run`] hands it part of a job and takes the
//! rest itself, with no system call on either side. A helper that has not
//! taken its part by the time the caller has finished its own (its core
//! busy with another program) loses it: the caller does both, so a busy
//! machine costs the second core's speed-up, not a wait for the scheduler.
//! Code inside the call
//! finds the team with [`with_current_team`]. The team has two members (the
//! caller and one helper), as many as the 2-core machine it was written
//! for; where no second worker is free (a one-thread pool), `run` does
//! both parts itself.
//!
//! What a hand-over costs depends on how far apart the two cores are. On a
//! virtual machine the two threads may run on cores that share a cache or
//! on cores that do not, and the host can move them while a program runs:
//! a cache line then takes several times longer to cross, and every part
//! handed over, and every value one member wrote and the other reads,
//! pays for it. So the team measures the crossing ([`Team::probe`], a few
//! round trips of one value) when it starts and again every
//! [`PROBE_EVERY`]; while a round trip takes longer than
//! [`DISTANT_ROUND_TRIP`] the team is *distant*, and [`run_in_team`]
//! leaves to the caller alone the work that the layer says is not worth
//! it then (see `docs/performance.md`).
//!
//! ```
//! use convnet::parallel::team::{with_current_team, with_team};
//! use std::sync::Mutex;
//! let parts = Mutex::new(Vec::new());
//! with_team(|| {
//!     with_current_team(|team| {
//!         let team = team.expect("inside with_team");
//!         team.run(&|part| parts.lock().unwrap().push(part));
//!     })
//! });
//! let mut parts = parts.into_inner().unwrap();
//! parts.sort();
//! assert_eq!(parts, [0, 1]); // each part ran once, here or on the helper
//! ```

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// A round trip between the members (one value there and back) above which
/// the team is distant: between the round trips of cores that share a
/// cache and of cores that do not, on the machines in docs/performance.md.
pub const DISTANT_ROUND_TRIP: Duration = Duration::from_nanos(200);

/// How long a measurement of the round trip stays good, for every team of
/// the process: a host may move the threads at any time.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Round trips per measurement; [`Team::probe`] reports the fastest of
/// three sets, each timed as a whole.
const PROBE_ROUND_TRIPS: u32 = 8;

/// How long a measurement may take before the caller gives it up (the
/// helper's core taken by another program): well above what one takes on
/// distant cores (the measured cost is in docs/performance.md, under this
/// file's name).
const PROBE_TIMEOUT: Duration = Duration::from_micros(50);

/// How long [`measure_round_trip`] waits for its helper to start serving
/// (a rayon worker that may first have to finish other work) before it
/// reports no measurement.
pub const HELPER_START_TIMEOUT: Duration = Duration::from_millis(10);

/// Calls of [`run_in_team`] between two looks at the clock for a stale
/// measurement.
const CALLS_PER_CLOCK_LOOK: usize = 64;

/// The last measurement of the process: whether the members were distant,
/// and when it was made (nanoseconds after [`clock_start`], 0: never).
static DISTANT: AtomicBool = AtomicBool::new(false);
static PROBED_AT_NS: AtomicU64 = AtomicU64::new(0);

/// The instant the process's probe times count from.
fn clock_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A job: called once with 0 and once with 1, at the same time on the two members.
pub type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// The caller of [`with_team`] and one spinning helper.
#[derive(Default)]
pub struct Team {
    /// Jobs posted so far; the helper runs part 1 of each once.
    posted: AtomicUsize,
    /// Jobs whose part 1 has been claimed, by the helper or by the caller.
    claimed: AtomicUsize,
    /// The last job whose part 1 the helper claimed and finished.
    done: AtomicUsize,
    /// Whether the helper is serving (else `run` does both parts).
    helper_ready: AtomicBool,
    /// Set when the caller's work has returned: the helper stops.
    finished: AtomicBool,
    /// Whether a part 1 panicked on the helper.
    helper_panicked: AtomicBool,
    /// The job being run, while `run` waits for it.
    job: Mutex<Option<JobPtr>>,
    /// [`Team::probe`]'s value: the caller makes it odd, the helper answers
    /// by adding one.
    ping: AtomicUsize,
    /// Whether the members are distant (see the module documentation).
    distant: AtomicBool,
}

/// A job's address, handed to the helper.
struct JobPtr(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the closure behind the pointer is `Sync`, and `run` keeps it alive
// until the helper has finished with it (see `run`).
unsafe impl Send for JobPtr {}

thread_local! {
    /// The team of the `with_team` call running on this thread, if any.
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    /// [`run_in_team`]'s calls on this thread, counted to look at the clock
    /// only now and then.
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// Runs `work` with a [`Team`]: a second rayon worker spins, ready for
/// [`Team::run`]'s jobs, until `work` returns. Inside a team already, `work`
/// runs in that one.
pub fn with_team<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if CURRENT.with(|current| !current.get().is_null()) {
        return work();
    }
    let team = Team::default();
    // The process's last verdict, until this team measures again.
    team.distant
        .store(DISTANT.load(Ordering::Relaxed), Ordering::Relaxed);
    let (result, ()) = rayon::join(
        || {
            // Stops the helper however `work` ends, panics included.
            let _stop = SetOnDrop(&team.finished);
            CURRENT.with(|current| current.set(&team));
            let _unset = UnsetOnDrop;
            work()
        },
        || team.serve(),
    );
    result
}

/// Whether `images` is a batch for a team: fewer images than the pool has
/// threads, so that splitting the batch would leave threads idle.
pub fn is_small_batch(images: usize) -> bool {
    images < rayon::current_num_threads()
}

/// Runs `work` in a team ([`with_team`]) when `images` [`is_small_batch`],
/// else as it is: the one rule by which `predict` and the benchmarks choose.
pub fn with_team_if_small_batch<R: Send>(images: usize, work: impl FnOnce() -> R + Send) -> R {
    if is_small_batch(images) {
        with_team(work)
    } else {
        work()
    }
}

/// Calls `work` with the team of the enclosing [`with_team`] when `images`
/// [`is_small_batch`] and a team is running, unless the team is
/// [distant](Team::is_distant) and the layer says its work is not worth
/// sharing then (`also_when_distant` false); returns whether it did (else
/// the caller does the work as usual).
pub fn run_in_team(images: usize, also_when_distant: bool, work: impl FnOnce(&Team)) -> bool {
    is_small_batch(images)
        && with_current_team(|team| match team {
            Some(team) if also_when_distant || !team.measured_distant() => {
                work(team);
                true
            }
            _ => false,
        })
}

/// Runs `work(0, parts[0])` and `work(1, parts[1])`: side by side in the
/// team of the enclosing [`with_team`] where [`run_in_team`] would
/// ([`Team::run_parts`]), else one after the other on this thread. For
/// work that gives the same result either way (one image of a layer cut
/// into two halves).
pub fn run_parts_in_team_or_here<P: Send>(
    images: usize,
    also_when_distant: bool,
    parts: [P; 2],
    work: impl Fn(usize, P) + Sync,
) {
    let mut parts = Some(parts);
    run_in_team(images, also_when_distant, |team| {
        team.run_parts(parts.take().expect("called once"), &work)
    });
    if let Some([first, second]) = parts {
        work(0, first);
        work(1, second);
    }
}

/// The round trip between two threads of the current pool, measured in a
/// team ([`Team::probe`]; the enclosing one, if any); `None` in a
/// one-thread pool or when the helper does not start serving within
/// [`HELPER_START_TIMEOUT`].
/// `convnet bench` reports it beside its batch-1 figures.
pub fn measure_round_trip() -> Option<Duration> {
    if rayon::current_num_threads() < 2 {
        return None;
    }
    with_team(|| {
        with_current_team(|team| {
            let team = team?;
            let start = Instant::now();
            while !team.helper_ready.load(Ordering::Acquire) {
                if start.elapsed() > HELPER_START_TIMEOUT {
                    return None;
                }
                std::hint::spin_loop();
            }
            team.probe()
        })
    })
}

/// Runs `work` with no team on this thread, even inside a [`with_team`]:
/// the layers then do all their work here (what [`team_choice`]'s "alone"
/// means). The enclosing team, if any, is current again afterwards,
/// however `work` ends.
///
/// [`team_choice`]: super::team_choice
pub fn without_team<R>(work: impl FnOnce() -> R) -> R {
    let team = CURRENT.with(|current| current.replace(std::ptr::null()));
    let _restore = RestoreOnDrop(team);
    work()
}

/// Makes a team current again when dropped.
struct RestoreOnDrop(*const Team);

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(self.0));
    }
}

/// Calls `f` with the team of the enclosing [`with_team`], or `None`.
pub fn with_current_team<R>(f: impl FnOnce(Option<&Team>) -> R) -> R {
    let team = CURRENT.with(|current| current.get());
    // SAFETY: CURRENT is set only while `with_team`'s `work` runs on this
    // thread, and `team` lives on `with_team`'s stack until after it returns.
    f(unsafe { team.as_ref() })
}

impl Team {
    /// Runs `job(0)` on this thread and `job(1)` on the helper, and returns
    /// when both have finished (both here when no helper is serving). A job
    /// must not call `run` itself: the helper takes one job at a time.
    pub fn run(&self, job: Job<'_>) {
        if !self.helper_ready.load(Ordering::Acquire) {
            job(0);
            job(1);
            return;
        }
        // SAFETY: only the lifetime changes. The helper calls the job only
        // between `posted` reaching this ticket and its `done` reaching it,
        // and this function does not return before `done` does, so the job
        // outlives every use. A panic in `job(0)` is caught and resumed
        // after the wait for the same reason.
        let ptr: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(job as *const (dyn Fn(usize) + Sync + '_)) };
        *self.lock_job() = Some(JobPtr(ptr));
        let ticket = self.posted.fetch_add(1, Ordering::AcqRel) + 1;
        let mut mine = catch_unwind(AssertUnwindSafe(|| job(0)));
        // A helper that has not claimed part 1 by now is not running (its
        // core busy with another program): do part 1 here rather than wait
        // for the scheduler to bring it back.
        if self.claim(ticket) {
            if mine.is_ok() {
                mine = catch_unwind(AssertUnwindSafe(|| job(1)));
            }
        } else {
            while self.done.load(Ordering::Acquire) < ticket {
                std::hint::spin_loop();
            }
        }
        *self.lock_job() = None;
        if let Err(panic) = mine {
            std::panic::resume_unwind(panic);
        }
        if self.helper_panicked.swap(false, Ordering::AcqRel) {
            panic!("a team job panicked on the helper thread");
        }
    }

    /// Whether the members are distant: the last round trip measured took
    /// longer than [`DISTANT_ROUND_TRIP`] (see the module documentation).
    pub fn is_distant(&self) -> bool {
        self.distant.load(Ordering::Relaxed)
    }

    /// [`is_distant`](Self::is_distant), after measuring again every
    /// [`CALLS_PER_CLOCK_LOOK`] calls on this thread if the last
    /// measurement has gone stale.
    fn measured_distant(&self) -> bool {
        let calls = CALLS.with(|calls| {
            calls.set(calls.get().wrapping_add(1));
            calls.get()
        });
        if calls % CALLS_PER_CLOCK_LOOK == 1 {
            self.measure_if_stale();
        }
        self.is_distant()
    }

    /// Measures the round trip again if the process's last measurement is
    /// older than [`PROBE_EVERY`], and takes the process's latest verdict.
    fn measure_if_stale(&self) {
        let now = clock_start().elapsed().as_nanos() as u64;
        let probed_at = PROBED_AT_NS.load(Ordering::Relaxed);
        let stale = probed_at == 0 || now.saturating_sub(probed_at) > PROBE_EVERY.as_nanos() as u64;
        // A helper still starting is asked at a later look.
        if stale && self.helper_ready.load(Ordering::Acquire) {
            // A failed measurement keeps the last verdict, and is not tried
            // again before the next period either: a busy helper would make
            // each try wait for the timeout.
            if let Some(round_trip) = self.probe() {
                DISTANT.store(round_trip > DISTANT_ROUND_TRIP, Ordering::Relaxed);
            }
            PROBED_AT_NS.store(now.max(1), Ordering::Relaxed);
        }
        self.distant
            .store(DISTANT.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The time one value takes to go to the helper and back: the fastest
    /// of three sets of round trips, each set timed as a whole. `None` when
    /// no helper is serving or it stops answering (its core busy).
    pub fn probe(&self) -> Option<Duration> {
        if !self.helper_ready.load(Ordering::Acquire) {
            return None;
        }
        let mut fastest: Option<Duration> = None;
        let probe_start = Instant::now();
        for _ in 0..3 {
            let start = Instant::now();
            for _ in 0..PROBE_ROUND_TRIPS {
                let sent = self.ping.load(Ordering::Relaxed);
                if sent % 2 == 1 {
                    return None; // an earlier ping still unanswered
                }
                self.ping.store(sent + 1, Ordering::Release);
                while self.ping.load(Ordering::Acquire) != sent + 2 {
                    if probe_start.elapsed() > PROBE_TIMEOUT {
                        return None;
                    }
                    std::hint::spin_loop();
                }
            }
            let round_trip = start.elapsed() / PROBE_ROUND_TRIPS;
            fastest = Some(fastest.map_or(round_trip, |f| f.min(round_trip)));
        }
        fastest
    }

    /// Runs `work(0, parts[0])` here and `work(1, parts[1])` on the helper
    /// (see [`run`](Self::run)): [`run`](Self::run) for work on two disjoint
    /// pieces of data, such as the two halves of an output.
    pub fn run_parts<P: Send>(&self, parts: [P; 2], work: impl Fn(usize, P) + Sync) {
        let parts = parts.map(|part| Mutex::new(Some(part)));
        self.run(&|i| {
            let part = parts[i]
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(part) = part {
                work(i, part);
            }
        });
    }

    /// The helper's loop: part 1 of each posted job, until `finished`.
    fn serve(&self) {
        self.helper_ready.store(true, Ordering::Release);
        let mut seen = 0;
        loop {
            let posted = self.posted.load(Ordering::Acquire);
            if posted > seen {
                seen = posted;
                // Part 1 is the helper's only if the caller has not taken it.
                if !self.claim(posted) {
                    continue;
                }
                if let Some(job) = self.lock_job().as_ref().map(|job| job.0) {
                    // SAFETY: see `run`: having claimed the job, the helper
                    // keeps its caller waiting until `done` reaches it, below.
                    let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(1) }));
                    if result.is_err() {
                        self.helper_panicked.store(true, Ordering::Release);
                    }
                }
                self.done.store(posted, Ordering::Release);
            } else if self.finished.load(Ordering::Acquire) {
                return;
            } else {
                let ping = self.ping.load(Ordering::Acquire);
                if ping % 2 == 1 {
                    self.ping.store(ping + 1, Ordering::Release);
                }
                std::hint::spin_loop();
            }
        }
    }

    /// Claims part 1 of job `ticket` for the calling member; false if the
    /// other member has it. (Jobs run one at a time, so the last claimed job
    /// is `ticket − 1` until one member claims this one.)
    fn claim(&self, ticket: usize) -> bool {
        self.claimed
            .compare_exchange(ticket - 1, ticket, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn lock_job(&self) -> std::sync::MutexGuard<'_, Option<JobPtr>> {
        self.job.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sets its flag when dropped: a stop signal that is sent however the work
/// before it ends, panics included (the team's helper, the awake workers
/// of [`crate::parallel::awake_workers`]).
pub(crate) struct SetOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Clears this thread's current team when dropped.
struct UnsetOnDrop;

impl Drop for UnsetOnDrop {
    fn drop(&mut self) {
        CURRENT.with(|current| current.set(std::ptr::null()));
    }
}

/// A rayon pool of `threads` threads, for tests that need a given count.
#[cfg(test)]
pub(crate) fn test_pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::test_pool as pool;
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn without_team_hides_the_team_for_its_call_only() {
        pool(2).install(|| {
            with_team(|| {
                let current = || with_current_team(|team| team.map(|t| t as *const Team));
                let team = current().expect("inside with_team");
                assert_eq!(without_team(current), None);
                assert!(!without_team(|| run_in_team(1, true, |_| ())));
                assert_eq!(current(), Some(team));
                // However the call ends.
                let ended = catch_unwind(AssertUnwindSafe(|| without_team(|| panic!("a panic"))));
                assert!(ended.is_err());
                assert_eq!(current(), Some(team));
            })
        });
        assert!(without_team(|| with_current_team(|team| team.is_none())));
    }

    #[test]
    fn every_part_runs_once_per_job() {
        for threads in [1, 2, 3] {
            let counts = [AtomicU64::new(0), AtomicU64::new(0)];
            pool(threads).install(|| {
                with_team(|| {
                    with_current_team(|team| {
                        let team = team.unwrap();
                        for _ in 0..1000 {
                            team.run(&|part| {
                                counts[part].fetch_add(1, Ordering::Relaxed);
                            });
                        }
                    })
                })
            });
            let counts = counts.map(|c| c.into_inner());
            assert_eq!(counts, [1000, 1000], "{threads} threads");
        }
    }

    #[test]
    fn a_helper_that_is_not_running_leaves_both_parts_to_the_caller() {
        // A helper marked ready that never serves stands for one whose core
        // another program holds: `run` must not wait for it.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let team = Team::default();
            team.helper_ready.store(true, Ordering::Release);
            let ran = Mutex::new(Vec::new());
            for _ in 0..3 {
                team.run(&|part| ran.lock().unwrap().push(part));
            }
            sender.send(ran.into_inner().unwrap()).unwrap();
        });
        let ran = receiver
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("run waited for a helper that never came");
        assert_eq!(ran, [0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn probe_measures_a_round_trip_only_with_a_helper() {
        // The probe gives up when the helper's core is busy, as it may be
        // while other tests run: a few tries.
        let two = pool(2);
        let round_trip = (0..200)
            .find_map(|_| two.install(measure_round_trip))
            .expect("a helper in a two-thread pool");
        // Cores answer in nanoseconds to microseconds; far more would mean
        // the timing counted something else (a wait for the scheduler).
        assert!(round_trip > Duration::ZERO && round_trip < Duration::from_millis(1));
        assert_eq!(pool(1).install(measure_round_trip), None);
        // A helper marked ready that never serves does not answer.
        let team = Team::default();
        team.helper_ready.store(true, Ordering::Release);
        assert_eq!(team.probe(), None);
    }

    #[test]
    fn a_distant_team_shares_only_the_work_worth_it() {
        pool(2).install(|| {
            with_team(|| {
                with_current_team(|team| {
                    let team = team.unwrap();
                    for distant in [true, false] {
                        for also_when_distant in [false, true] {
                            team.distant.store(distant, Ordering::Relaxed);
                            // Not a call that looks at the clock (and would
                            // measure the distance again).
                            CALLS.with(|calls| calls.set(1));
                            let mut called = false;
                            let shared = run_in_team(1, also_when_distant, |_| called = true);
                            let expected = also_when_distant || !distant;
                            assert_eq!((shared, called), (expected, expected));
                        }
                    }
                    // Batches of as many images as threads are never shared.
                    assert!(!run_in_team(2, true, |_| panic!("not a small batch")));
                })
            })
        });
    }

    #[test]
    fn run_parts_hands_each_member_its_part() {
        let mut data = [0u32; 10];
        pool(2).install(|| {
            with_team(|| {
                with_current_team(|team| {
                    let (left, right) = data.split_at_mut(4);
                    team.unwrap().run_parts([left, right], |part, slice| {
                        slice.iter_mut().for_each(|v| *v = part as u32 + 1);
                    });
                })
            })
        });
        assert_eq!(data, [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn no_team_outside_with_team_and_none_nested() {
        assert!(with_current_team(|team| team.is_none()));
        let address = |team: Option<&Team>| team.map(|t| t as *const Team as usize);
        pool(2).install(|| {
            with_team(|| {
                let outer = with_current_team(address);
                let inner = with_team(|| with_current_team(address));
                assert!(outer.is_some());
                assert_eq!(outer, inner, "a nested call joins the outer team");
            })
        });
        assert!(with_current_team(|team| team.is_none()));
    }

    #[test]
    fn a_panicking_part_panics_the_caller_and_frees_the_helper() {
        for failing_part in [0, 1] {
            let result = pool(2).install(|| {
                catch_unwind(AssertUnwindSafe(|| {
                    with_team(|| {
                        with_current_team(|team| {
                            team.unwrap().run(&|part| assert_ne!(part, failing_part));
                        })
                    })
                }))
            });
            assert!(result.is_err(), "part {failing_part}");
        }
    }
}
