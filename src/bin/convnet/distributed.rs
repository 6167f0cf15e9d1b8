//! `convnet train --shards S`, and `convnet train` under `mpirun` (feature
//! `mpi`): data-parallel training over the ranks of an MPI job, every rank
//! with the whole network and a share of every mini-batch
//! (`convnet::distributed`; docs/distributed.md).
//!
//! Rank 0 alone prints, writes the metrics file and saves checkpoints; the
//! other ranks' standard output is thrown away. An error on any rank is one
//! line naming the rank, and ends the whole job (`MPI_Abort`).

use clap::Args;
use convnet::distributed::{Sharding, Transport};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

#[derive(Args)]
pub struct DistributedArgs {
    /// Compute each mini-batch's gradient in S shards (a power of two),
    /// added up in a fixed order: a run with S shards gives the same
    /// weights alone or under `mpirun -n N` (N a power of two up to S).
    /// Default: the whole batch at once; under mpirun, 4, or the number of
    /// ranks if more.
    #[arg(long, value_name = "S")]
    shards: Option<usize>,
}

/// The ranks of the MPI job this process belongs to, once `mpirun` started it.
static WORLD: OnceLock<Arc<dyn Transport>> = OnceLock::new();

/// The sharding `--shards` and the MPI job ask for (`None`: neither).
pub fn sharding(args: &DistributedArgs) -> anyhow::Result<Option<Sharding>> {
    Ok(match (WORLD.get(), args.shards) {
        (None, None) => None,
        (None, Some(shards)) => Some(Sharding::in_one_process(shards)?),
        (Some(world), shards) => {
            let shards = shards.unwrap_or_else(|| world.size().next_power_of_two().max(4));
            Some(Sharding::over(shards, world.clone())?)
        }
    })
}

/// Whether this process speaks for the run: rank 0, or the only process.
pub fn is_leader() -> bool {
    WORLD.get().is_none_or(|world| world.rank() == 0)
}

/// Whether this process is one rank of several, where Ctrl-C must end the
/// job at once (`mpirun` passes it to every rank) rather than stop each
/// rank after its own batch.
pub fn in_job() -> bool {
    WORLD.get().is_some()
}

/// The cost of the exchange, after a run in shards over several ranks: the
/// bytes each rank sent per step, and the time per step computing and
/// exchanging (rank 0's).
pub fn report(sharding: Option<&Sharding>) {
    let Some(sharding) = sharding.filter(|s| s.size() > 1 && is_leader()) else {
        return;
    };
    let stats = sharding.stats();
    if stats.steps == 0 {
        return;
    }
    let steps = stats.steps as f64;
    let compute = 1e3 * stats.compute_seconds / steps;
    let exchange = 1e3 * stats.exchange_seconds / steps;
    println!(
        "distributed: {} ranks, {} shards: {} bytes sent per step by each rank; per step {compute:.2} ms computing, {exchange:.2} ms exchanging ({:.1}% of the step)",
        sharding.size(),
        sharding.shards(),
        convnet::networks::summary::with_commas(stats.bytes_sent / stats.steps as u64),
        100.0 * exchange / (compute + exchange).max(1e-12)
    );
}

/// `convnet train`: under `mpirun` (feature `mpi`), as one rank of a
/// data-parallel job; otherwise as it always runs.
pub fn run_train(args: crate::train::TrainArgs) -> anyhow::Result<ExitCode> {
    #[cfg(feature = "mpi")]
    if started_by_mpirun() {
        return mpi_job::run_train(args);
    }
    crate::train::run_train(args)
}

/// Whether `mpirun` (Open MPI's, MPICH's or a PMIx launcher) started this
/// process: only then is MPI initialised, so that the plain `convnet train`
/// of an MPI build needs no MPI runtime.
#[cfg(feature = "mpi")]
fn started_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

#[cfg(feature = "mpi")]
mod mpi_job {
    use super::WORLD;
    use convnet::distributed::mpi::MpiTransport;
    use convnet::distributed::Transport;
    use mpi::Threading;
    use std::process::ExitCode;
    use std::sync::Arc;
    use std::time::Duration;

    /// How long a rank waits for its partner's part of a step before it
    /// ends the job: `CONVNET_MPI_TIMEOUT` seconds, else 600 (a step of a
    /// large network, or a rank still loading its data).
    fn patience() -> Duration {
        std::env::var("CONVNET_MPI_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(Duration::from_secs(600), Duration::from_secs_f64)
    }

    pub fn run_train(args: crate::train::TrainArgs) -> anyhow::Result<ExitCode> {
        // The training loop runs on a worker thread of its pool: MPI must
        // allow calls from a thread other than the main one.
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            anyhow::bail!("MPI was already initialised");
        };
        anyhow::ensure!(
            matches!(threading, Threading::Serialized | Threading::Multiple),
            "the MPI library offers {threading:?} threading; convnet needs Serialized"
        );
        let transport = Arc::new(MpiTransport::world(patience()));
        let rank = transport.rank();
        let _ = WORLD.set(transport.clone());
        if rank != 0 {
            silence_stdout();
        }
        match crate::train::run_train(args) {
            Ok(code) => {
                // MPI_Finalize: every rank gets here after the same steps.
                drop(universe);
                Ok(code)
            }
            Err(e) => {
                eprintln!(
                    "convnet: rank {rank}: error: {}",
                    crate::fold_lines(&format!("{e:#}"))
                );
                transport.abort(1)
            }
        }
    }

    /// Sends this rank's standard output to /dev/null: rank 0 alone prints
    /// the run's progress (errors still reach standard error).
    fn silence_stdout() {
        use std::os::fd::AsRawFd;
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            // SAFETY: dup2 on two open descriptors; standard output is
            // replaced atomically and `null` is closed after it.
            unsafe {
                libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO);
            }
        }
    }
}
