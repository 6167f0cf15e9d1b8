//! Processor settings for fast training: flushing subnormal floats to zero.
//!
//! Late in training many gradients, and the Adam moments built from their
//! squares, shrink below f32's smallest normal number (1.2e-38). x86 CPUs
//! handle such subnormal numbers in microcode, up to a hundred times slower,
//! so an epoch slows down just as the training loss nears zero. Setting the FTZ (flush to zero) and DAZ (denormals are zero) bits
//! of the MXCSR register makes them plain zeros instead — what most deep
//! learning frameworks do on the CPU. The effect on results is below 1e-38
//! per value.
//!
//! The setting belongs to a thread, so it must be made on every thread that
//! computes: [`flush_denormals`] for the current one, and
//! [`thread_pool_with_flushed_denormals`] for rayon's workers.
//!
//! ```
//! convnet::parallel::denormals::flush_denormals();
//! let tiny = std::hint::black_box(1e-30f32);
//! let product = tiny * std::hint::black_box(1e-10f32); // 1e-40 would be subnormal
//! # #[cfg(target_arch = "x86_64")]
//! assert_eq!(product, 0.0);
//! ```

use std::cell::Cell;
use std::sync::OnceLock;

/// Sets flush-to-zero and denormals-are-zero on the calling thread
/// (x86-64 only; elsewhere it does nothing).
pub fn flush_denormals() {
    set_flush_denormals(true);
}

/// Sets (`on`) or clears flush-to-zero and denormals-are-zero on the calling
/// thread; returns whether both were set before. Elsewhere than on x86-64
/// it does nothing and returns false.
pub(crate) fn set_flush_denormals(on: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        const FLUSH_TO_ZERO: u32 = 1 << 15;
        const DENORMALS_ARE_ZERO: u32 = 1 << 6;
        const BITS: u32 = FLUSH_TO_ZERO | DENORMALS_ARE_ZERO;
        let mut csr: u32 = 0;
        // SAFETY: SSE is part of x86-64; stmxcsr/ldmxcsr read and write the
        // 32-bit value behind a valid pointer. Only the two bits named above
        // change, which affects float results only for subnormal numbers.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr as *mut u32, options(nostack, preserves_flags));
            let before = csr & BITS == BITS;
            if on {
                csr |= BITS;
            } else {
                csr &= !BITS;
            }
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr as *const u32, options(nostack, preserves_flags, readonly));
            before
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = on;
        false
    }
}

thread_local! {
    /// Set on the workers of pools made by [`pool_builder_with_flushed_denormals`].
    static FLUSHING_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is a worker of a pool made by
/// [`pool_builder_with_flushed_denormals`] (so every worker of its pool flushes).
pub(crate) fn is_flushing_worker() -> bool {
    FLUSHING_WORKER.with(Cell::get)
}

/// The number of threads of rayon's global pool, once
/// [`thread_pool_with_flushed_denormals`] has made it.
static GLOBAL_POOL_FLUSHING: OnceLock<usize> = OnceLock::new();

/// The global pool's thread count if [`thread_pool_with_flushed_denormals`]
/// made it (so that its workers flush denormals).
pub(crate) fn global_pool_flushing() -> Option<usize> {
    GLOBAL_POOL_FLUSHING.get().copied()
}

/// A rayon pool builder whose workers flush denormals as they start.
pub fn pool_builder_with_flushed_denormals() -> rayon::ThreadPoolBuilder {
    rayon::ThreadPoolBuilder::new().start_handler(|_| {
        flush_denormals();
        FLUSHING_WORKER.with(|flag| flag.set(true));
    })
}

/// Makes rayon's global pool (`threads` workers, or one per core), with
/// denormals flushed on every worker and on the calling thread. An error if
/// `threads` is 0 or above [`max_threads`](crate::limits::max_threads), or
/// if the global pool already exists (it can be made once per process, and
/// rayon makes it at the first parallel loop).
pub fn thread_pool_with_flushed_denormals(threads: Option<usize>) -> crate::Result<()> {
    flush_denormals();
    let mut builder = pool_builder_with_flushed_denormals();
    if let Some(n) = threads {
        crate::limits::check_threads(n)?;
        builder = builder.num_threads(n);
    }
    builder
        .build_global()
        .map_err(|e| crate::Error::Config(format!("cannot start the thread pool: {e}")))?;
    record_global_pool();
    Ok(())
}

/// Notes that the global pool was just made by [`pool_builder_with_flushed_denormals`].
pub(crate) fn record_global_pool() {
    // From outside the pool: the global pool's size.
    let _ = GLOBAL_POOL_FLUSHING.set(rayon::current_num_threads());
}
