//! Keeping the thread pool's workers awake for the length of a long job,
//! such as training: [`with_workers_awake`].
//!
//! Every layer splits its batch into rayon tasks, so one training step
//! starts and ends a dozen or more parallel loops (`deep`: 6 convolutions
//! forward and backward, the sums of their partial gradients, Adam). Between
//! them the calling thread runs short serial parts (the fully connected
//! layers, the loss). rayon's idle workers go to sleep soon after they run
//! out of work, and the next loop then first has to wake one, a system
//! call and a context switch, which on a machine of few cores costs as
//! much as a small loop's work. A training step would pay that about once
//! per loop (`perf stat -e context-switches` counts the switches).
//!
//! [`with_workers_awake`] runs a job on the pool while one task per other
//! worker keeps it busy: it runs the pool's pending tasks as they come
//! ([`rayon::yield_now`], so it still takes its share of every loop) and
//! spins in between, giving its core to the OS scheduler (`yield_now` of
//! the standard library) once it has been idle a while, so that a busy
//! machine is not starved. Libraries built on OpenMP keep their threads
//! spinning the same way.
//!
//! ```
//! use convnet::parallel::awake_workers::with_workers_awake;
//! use rayon::prelude::*;
//! let sum: u64 = with_workers_awake(|| (0..1000u64).into_par_iter().sum());
//! assert_eq!(sum, 499_500);
//! ```

use crate::parallel::team::SetOnDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// After this long without a task, an awake worker also yields its core to
/// the OS between its looks for work.
const SPIN_BEFORE_YIELDING: Duration = Duration::from_micros(500);

/// Runs `work` on the current rayon pool (on one of its threads) while the
/// pool's other workers stay awake, taking tasks as they come; returns
/// `work`'s result once they have stopped. With one thread it just runs
/// `work`.
pub fn with_workers_awake<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let stop = AtomicBool::new(false);
    rayon::scope(|scope| {
        // The thread that runs `work`: a task that lands here returns at
        // once, as it would never get back to `work` otherwise.
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let stop = &stop;
            scope.spawn(move |_| {
                if rayon::current_thread_index() != owner {
                    stay_awake(stop);
                }
            });
        }
        // Stops the awake workers however `work` ends, panics included.
        let _stop = SetOnDrop(&stop);
        work()
    })
}

/// Runs the pool's tasks as they come until `stop` is set.
fn stay_awake(stop: &AtomicBool) {
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = Instant::now();
        } else if idle_since.elapsed() > SPIN_BEFORE_YIELDING {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::team::test_pool as pool;
    use rayon::prelude::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    #[test]
    fn the_work_runs_with_every_worker_taking_tasks() {
        for threads in [1, 2, 3] {
            let (sum, threads_seen) = pool(threads).install(|| {
                with_workers_awake(|| {
                    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
                    let mut sum = 0u64;
                    // Many loops, as in training: each one's tasks spread over the pool.
                    for _ in 0..200 {
                        sum += (0..10_000u32)
                            .into_par_iter()
                            .with_max_len(100)
                            .map(|i| {
                                seen.lock().unwrap().insert(rayon::current_thread_index());
                                u64::from(i)
                            })
                            .sum::<u64>();
                    }
                    (sum, seen.into_inner().unwrap().len())
                })
            });
            assert_eq!(sum, 200 * 49_995_000, "{threads} threads");
            assert!(
                threads_seen >= threads.min(2),
                "{threads} threads: {threads_seen} took tasks"
            );
        }
    }

    #[test]
    fn a_panic_in_the_work_stops_the_workers_and_reaches_the_caller() {
        let result = pool(2).install(|| {
            catch_unwind(AssertUnwindSafe(|| {
                with_workers_awake(|| panic!("inside the work"));
            }))
        });
        assert!(result.is_err());
    }

    #[test]
    fn nested_calls_and_a_team_inside_do_not_deadlock() {
        let total = pool(2).install(|| {
            with_workers_awake(|| {
                let inner: u64 = with_workers_awake(|| (0..100u64).into_par_iter().sum());
                let team = crate::parallel::team::with_team(|| 7u64);
                inner + team
            })
        });
        assert_eq!(total, 4950 + 7);
    }
}
