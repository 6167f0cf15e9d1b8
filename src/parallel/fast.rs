//! Running a long job the fast way, from any program: [`run_fast`].
//!
//! Two settings make training on the CPU markedly faster, and both belong to
//! the threads that compute rather than to the code:
//!
//! 1. subnormal floats flushed to zero on every thread
//!    ([`denormals`](super::denormals): late in training many values are
//!    subnormal, and the processor handles those in slow microcode);
//! 2. the pool's workers kept awake between the layers' parallel loops
//!    ([`awake_workers`](super::awake_workers): fewer context switches per
//!    step).
//!
//! [`run_fast`] makes both for the length of one job, on a suitable pool,
//! and runs the job on one of that pool's threads. [`train`](crate::train::train),
//! [`train_with_optimizer`](crate::train::train_with_optimizer) and
//! [`evaluate`](crate::train::evaluate) call it, so a program that calls them
//! trains as fast as the `convnet` command does. Which pool:
//!
//! | called from | threads | the job runs on |
//! |---|---|---|
//! | inside a `run_fast` job | `None` or that pool's count | the same job (nothing to do) |
//! | a thread outside any rayon pool | `None` | rayon's global pool, which `run_fast` makes with flushing workers if it does not exist yet |
//! | a thread outside any rayon pool | `Some(n)` | the global pool if it was made by [`thread_pool_with_flushed_denormals`](super::denormals::thread_pool_with_flushed_denormals) with `n` threads |
//! | a worker of a rayon pool (`pool.install`) | `None` or that pool's count | that pool, its workers flushing denormals until the job ends |
//! | anywhere else | | a pool of its own, made once per thread count and kept |
//!
//! `None` thus means the pool the program is already using: one thread per
//! core unless the program or `RAYON_NUM_THREADS` says otherwise. Results
//! depend on the number of threads (how a batch is split), never on which
//! pool of that size runs it.
//!
//! ```
//! use convnet::parallel::run_fast;
//! use rayon::prelude::*;
//! let sum: u64 = run_fast(Some(2), || (0..1000u64).into_par_iter().sum()).unwrap();
//! assert_eq!(sum, 499_500);
//! assert_eq!(run_fast(Some(2), rayon::current_num_threads).unwrap(), 2);
//! assert!(run_fast(Some(0), || ()).is_err());
//! ```

use super::awake_workers::with_workers_awake;
use super::denormals::{
    global_pool_flushing, is_flushing_worker, pool_builder_with_flushed_denormals,
    set_flush_denormals,
};
use crate::error::{Error, Result};
use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};

thread_local! {
    /// Set on the thread that runs a [`run_fast`] job, while it runs.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

/// Runs `work` on a rayon pool of `threads` threads (`None`: the pool in use,
/// see the [module documentation](self)) whose workers flush subnormal floats
/// to zero and are kept awake between parallel loops, and returns its result.
/// An error only if `threads` is 0 or a pool cannot be started; a panic in
/// `work` reaches the caller.
pub fn run_fast<R: Send>(threads: Option<usize>, work: impl FnOnce() -> R + Send) -> Result<R> {
    if threads == Some(0) {
        return Err(Error::Config(
            "the number of threads must be at least 1".into(),
        ));
    }
    let fits = |count: usize| threads.is_none_or(|n| n == count);
    if rayon::current_thread_index().is_some() && fits(rayon::current_num_threads()) {
        if IN_JOB.with(Cell::get) {
            return Ok(work());
        }
        if is_flushing_worker() {
            return Ok(awake(work));
        }
        return Ok(flushing_current_pool(|| awake(work)));
    }
    if rayon::current_thread_index().is_none() {
        if threads.is_none() && global_pool_flushing().is_none() {
            // Make the global pool flush, if nothing has made it yet.
            make_global_pool();
        }
        if global_pool_flushing().is_some_and(fits) {
            // From outside the pool, `with_workers_awake` runs `work` on one
            // of the global pool's threads.
            return Ok(awake(work));
        }
    }
    let pool = own_pool(threads)?;
    Ok(pool.install(|| awake(work)))
}

/// `work` with the current pool's other workers awake, marked as a job.
fn awake<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    with_workers_awake(|| {
        IN_JOB.with(|flag| flag.set(true));
        let _unset = ClearOnDrop(&IN_JOB);
        work()
    })
}

/// Runs `work` with every worker of the current pool (not made by
/// [`pool_builder_with_flushed_denormals`]) flushing denormals, and puts
/// each worker's setting back afterwards, panics included.
fn flushing_current_pool<R>(work: impl FnOnce() -> R) -> R {
    let before = rayon::broadcast(|_| set_flush_denormals(true));
    struct Restore(Vec<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = &self.0;
            rayon::broadcast(|context| {
                if !before[context.index()] {
                    set_flush_denormals(false);
                }
            });
        }
    }
    let _restore = Restore(before);
    work()
}

/// Makes rayon's global pool with flushing workers (one per core, or as
/// `RAYON_NUM_THREADS` says) unless it exists already.
fn make_global_pool() {
    // Several threads may try at once: only one build succeeds.
    static MAKING: Mutex<()> = Mutex::new(());
    let _guard = MAKING.lock().unwrap_or_else(PoisonError::into_inner);
    if global_pool_flushing().is_none()
        && pool_builder_with_flushed_denormals().build_global().is_ok()
    {
        super::denormals::record_global_pool();
    }
}

/// A pool of `threads` flushing workers (`None`: one per core), made at the
/// first call for that count and kept for later ones.
fn own_pool(threads: Option<usize>) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: Mutex<Vec<(Option<usize>, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == threads) {
        return Ok(Arc::clone(pool));
    }
    let mut builder = pool_builder_with_flushed_denormals();
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    let pool = Arc::new(
        builder
            .build()
            .map_err(|e| Error::Config(format!("cannot start a thread pool: {e}")))?,
    );
    pools.push((threads, Arc::clone(&pool)));
    Ok(pool)
}

/// Clears its flag when dropped.
struct ClearOnDrop(&'static std::thread::LocalKey<Cell<bool>>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.with(|flag| flag.set(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::team::test_pool;
    use rayon::prelude::*;

    /// Whether the calling thread flushes denormals (x86-64), leaving it as it was.
    fn flushing() -> bool {
        let before = set_flush_denormals(true);
        if !before {
            set_flush_denormals(false);
        }
        before
    }

    /// Whether every thread of the current pool flushes, seen from inside a job.
    fn every_worker_flushes() -> bool {
        rayon::broadcast(|_| flushing()).into_iter().all(|f| f)
    }

    #[test]
    fn the_job_runs_on_flushing_threads_of_the_asked_size() {
        for threads in [1, 2, 3] {
            let (count, all_flush) = run_fast(Some(threads), || {
                (rayon::current_num_threads(), every_worker_flushes())
            })
            .unwrap();
            assert_eq!(count, threads);
            assert!(all_flush || !cfg!(target_arch = "x86_64"));
        }
    }

    #[test]
    fn inside_a_users_pool_it_uses_that_pool_and_restores_its_workers() {
        let pool = test_pool(2);
        let (count, index, all_flush, sum) = pool.install(|| {
            run_fast(None, || {
                let sum: u64 = (0..10_000u64).into_par_iter().sum();
                (
                    rayon::current_num_threads(),
                    rayon::current_thread_index(),
                    every_worker_flushes(),
                    sum,
                )
            })
            .unwrap()
        });
        assert_eq!((count, sum), (2, 49_995_000));
        assert!(index.is_some());
        assert!(all_flush || !cfg!(target_arch = "x86_64"));
        // The user's pool gets its workers back as they were.
        assert!(pool.install(|| rayon::broadcast(|_| !flushing()).into_iter().all(|f| f)));
    }

    #[test]
    fn nested_jobs_run_in_place() {
        let inner = run_fast(Some(2), || {
            let index = rayon::current_thread_index();
            run_fast(None, || rayon::current_thread_index() == index).unwrap()
        })
        .unwrap();
        assert!(inner);
    }

    #[test]
    fn zero_threads_is_an_error_and_a_panic_reaches_the_caller() {
        assert!(run_fast(Some(0), || ()).is_err());
        let result = std::panic::catch_unwind(|| run_fast(Some(2), || panic!("in the job")));
        assert!(result.is_err());
        // The pool still works afterwards.
        assert_eq!(run_fast(Some(2), || 5).unwrap(), 5);
    }
}
