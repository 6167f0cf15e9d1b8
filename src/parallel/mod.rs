//! Threading: how the layers' work is spread over the cores. The book's
//! layers know nothing of threads; the fast convolution splits its batch with
//! rayon and, for a single image, with a [`team`].
//!
//! | module | what |
//! |---|---|
//! | [`fast`] | [`run_fast`]: a job on a pool whose workers flush denormals and stay awake (what training and evaluation use) |
//! | [`denormals`] | flushing subnormal floats to zero on every worker (a pool builder that does it) |
//! | [`awake_workers`] | keeping rayon's workers spinning between the layers' parallel loops during a long job |
//! | [`team`] | a two-thread team that shares one image's work (inference at batch 1) |
//! | [`team_choice`] | whether the team or one thread runs a network's batch 1 faster, measured as it runs |

pub mod awake_workers;
pub mod denormals;
pub mod fast;
pub mod team;
pub mod team_choice;

pub use fast::run_fast;

/// Values per rayon task in element-wise passes: the layers' (ReLU,
/// dropout, batch norm's blocks) and those over all the parameters once
/// per step (Adam's update, weight decay, the averaged model, the
/// finiteness check). Large enough that a task outweighs its scheduling,
/// small enough that SimpleConvNet's fc1 (432,000 weights) spreads over
/// both cores. Each value is computed on its own, so the split changes no
/// result.
pub const ELEMENTWISE_CHUNK: usize = 1 << 15;
