//! The [`Transport`] between the ranks of an MPI job (feature `mpi`):
//! point-to-point messages on `MPI_COMM_WORLD`, waited for with a deadline.
//!
//! MPI must be initialised by the program (with at least
//! `MPI_THREAD_SERIALIZED`: the training loop runs on a worker thread of
//! its pool, one call at a time) before a transport is made, and stay so
//! while it is used; `convnet train` does this when `mpirun` starts it.
//!
//! A rank that dies is noticed by `mpirun`, which ends the others (it names
//! the rank). A rank that stops answering without dying (a hung host) is
//! noticed here: after `patience` without the partner's message, this rank
//! says which rank did not answer and aborts the whole job.

use super::Transport;
use crate::error::Result;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use std::time::{Duration, Instant};

/// The ranks of `MPI_COMM_WORLD`.
#[derive(Clone, Debug)]
pub struct MpiTransport {
    rank: usize,
    size: usize,
    patience: Duration,
}

impl MpiTransport {
    /// The world's ranks, giving up on a partner after `patience` (it has
    /// to cover the partner's slowest step, and its loading of the data
    /// before the first one). MPI must already be initialised.
    pub fn world(patience: Duration) -> MpiTransport {
        let world = SimpleCommunicator::world();
        MpiTransport {
            rank: usize::try_from(world.rank()).unwrap_or(0),
            size: usize::try_from(world.size()).unwrap_or(1),
            patience,
        }
    }

    /// Ends every rank of the job (`MPI_Abort`) with exit status `code`.
    pub fn abort(&self, code: i32) -> ! {
        SimpleCommunicator::world().abort(code)
    }
}

impl Transport for MpiTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn exchange(&self, partner: usize, send: &[u8], receive: &mut [u8]) -> Result<()> {
        let world = SimpleCommunicator::world();
        let peer_rank = i32::try_from(partner).map_err(|_| {
            crate::Error::Config(format!("no rank {partner} in a world of {}", self.size))
        })?;
        let peer = world.process_at_rank(peer_rank);
        let deadline = Instant::now() + self.patience;
        mpi::request::scope(|scope| {
            let mut receiving = Some(peer.immediate_receive_into(scope, receive));
            let mut sending = Some(peer.immediate_send(scope, send));
            // Polled rather than waited for, so that a silent partner ends
            // the job instead of hanging it; yielding between the polls
            // leaves the core to the other ranks when they share it.
            loop {
                if let Some(request) = receiving.take() {
                    receiving = request.test().err();
                }
                if let Some(request) = sending.take() {
                    sending = request.test().err();
                }
                if receiving.is_none() && sending.is_none() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    eprintln!(
                        "convnet: rank {}: rank {partner} did not answer within {} s: ending the job",
                        self.rank,
                        self.patience.as_secs_f64()
                    );
                    // The requests cannot be dropped unfinished: MPI owns the
                    // buffers. Aborting ends every rank.
                    world.abort(1);
                }
                std::thread::yield_now();
            }
        })
    }
}
