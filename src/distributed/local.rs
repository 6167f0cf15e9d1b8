//! A [`Transport`] between threads of one process: each "process" of a
//! data-parallel run is a thread with its own network. It exists to test the
//! sharded training without MPI, and as the smallest example of a transport.
//! Each member's training must run on a rayon pool of its own (`pool.install`):
//! on one shared pool the members' jobs would queue behind one another, and
//! the first would wait for the others' messages forever.
//!
//! ```
//! use convnet::distributed::{local::LocalTransport, Transport};
//! let group = LocalTransport::group(2);
//! let other = group[1].clone();
//! let peer = std::thread::spawn(move || {
//!     let mut got = [0u8; 2];
//!     other.exchange(0, &[3, 4], &mut got).unwrap();
//!     got
//! });
//! let mut got = [0u8; 2];
//! group[0].exchange(1, &[1, 2], &mut got).unwrap();
//! assert_eq!((got, peer.join().unwrap()), ([3, 4], [1, 2]));
//! ```

use super::Transport;
use crate::error::{Error, Result};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// One member of a group of threads that exchange messages through channels.
pub struct LocalTransport {
    rank: usize,
    /// `to[p]`: the channel into member `p`'s inbox from this member.
    to: Vec<Sender<Vec<u8>>>,
    /// `from[p]`: this member's inbox from member `p`.
    from: Vec<Mutex<Receiver<Vec<u8>>>>,
}

impl LocalTransport {
    /// A group of `size` members, member `r` at index `r`.
    pub fn group(size: usize) -> Vec<Arc<LocalTransport>> {
        // channels[from][to]
        let mut senders: Vec<Vec<Sender<Vec<u8>>>> = (0..size).map(|_| Vec::new()).collect();
        let mut receivers: Vec<Vec<Mutex<Receiver<Vec<u8>>>>> =
            (0..size).map(|_| Vec::new()).collect();
        for sender in senders.iter_mut() {
            for inbox in receivers.iter_mut() {
                let (tx, rx) = channel();
                sender.push(tx);
                inbox.push(Mutex::new(rx));
            }
        }
        senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(rank, (to, from))| Arc::new(LocalTransport { rank, to, from }))
            .collect()
    }
}

impl Transport for LocalTransport {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.to.len()
    }

    fn exchange(&self, partner: usize, send: &[u8], receive: &mut [u8]) -> Result<()> {
        let lost = || Error::Config(format!("member {partner} of the local group is gone"));
        let (to, from) = match (self.to.get(partner), self.from.get(partner)) {
            (Some(to), Some(from)) => (to, from),
            _ => return Err(Error::Config(format!("no member {partner} in the group"))),
        };
        to.send(send.to_vec()).map_err(|_| lost())?;
        let message = from
            .lock()
            .map_err(|_| lost())?
            .recv()
            .map_err(|_| lost())?;
        if message.len() != receive.len() {
            return Err(Error::Config(format!(
                "member {partner} sent {} bytes, {} expected",
                message.len(),
                receive.len()
            )));
        }
        receive.copy_from_slice(&message);
        Ok(())
    }
}
