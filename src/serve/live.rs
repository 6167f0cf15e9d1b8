//! Training live (`convnet train --serve`): the page's server follows a
//! training run. The trainer's thread reports every mini-batch and epoch to
//! a [`Trainer`], which turns them into progress events ([`Events`], read
//! by `GET /api/progress` as server-sent events and by `GET /api/history`)
//! and now and then publishes a snapshot of the network: a copy of its
//! weights that the page's requests use from then on (see
//! [`App::publish`]). Training never waits for a web request: the event log
//! and the current snapshot are each behind a lock that is held only to
//! append an event or to swap a pointer, never during a forward pass or
//! while writing to a client.

use super::api::App;
use crate::networks::Network;
use crate::train::{EpochMetrics, Progress};
use serde_json::{json, Value};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The progress events of a run, in order, each a JSON object with an `id`
/// (1, 2, ...) and a `type` (see `docs/serve.md`).
#[derive(Default)]
pub struct Events {
    log: Mutex<Log>,
    changed: Condvar,
}

#[derive(Default)]
struct Log {
    /// Each event as JSON text; event `id` is at index `id - 1`.
    events: Vec<String>,
    /// A `done` event was pushed: no more will come.
    finished: bool,
    /// The server is stopping: every stream ends.
    closed: bool,
}

/// What a progress stream gets from [`Events::wait_after`].
#[derive(Debug, PartialEq)]
pub enum Next {
    /// New events (id and JSON text), oldest first.
    Events(Vec<(u64, String)>),
    /// Nothing new within the time asked for.
    Quiet,
    /// The run is over or the server stops, and every event has been read.
    End,
}

impl Events {
    /// Appends an event (a JSON object; its `id` is set here) and wakes
    /// every stream; returns the id.
    pub fn push(&self, mut event: Value) -> u64 {
        let mut log = self.lock();
        let id = log.events.len() as u64 + 1;
        event["id"] = json!(id);
        if event["type"] == "done" {
            log.finished = true;
        }
        log.events.push(event.to_string());
        drop(log);
        self.changed.notify_all();
        id
    }

    /// Every event so far, as JSON values.
    pub fn all(&self) -> Vec<Value> {
        let texts = self.lock().events.clone();
        texts
            .iter()
            .filter_map(|t| serde_json::from_str(t).ok())
            .collect()
    }

    /// Whether the run is over (a `done` event was pushed).
    pub fn finished(&self) -> bool {
        self.lock().finished
    }

    /// The events after id `after`, waiting up to `wait` for one if there
    /// is none yet.
    pub fn wait_after(&self, after: u64, wait: Duration) -> Next {
        let mut log = self.lock();
        let deadline = Instant::now() + wait;
        loop {
            if (log.events.len() as u64) > after {
                let start = after as usize;
                return Next::Events(
                    log.events[start..]
                        .iter()
                        .enumerate()
                        .map(|(i, e)| ((start + i + 1) as u64, e.clone()))
                        .collect(),
                );
            }
            if log.finished || log.closed {
                return Next::End;
            }
            let now = Instant::now();
            if now >= deadline {
                return Next::Quiet;
            }
            log = match self.changed.wait_timeout(log, deadline - now) {
                Ok((log, _)) => log,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written
        // (each change is one push or one flag), so a poisoned lock is used.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the `start` event says about a run.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// Epochs in all (as `--epochs`).
    pub epochs: usize,
    /// Epochs already done (a resumed run).
    pub start_epoch: usize,
    /// Mini-batches per epoch.
    pub batches: usize,
    /// Images per mini-batch.
    pub batch_size: usize,
    /// Training images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// The data set's name.
    pub dataset: String,
}

/// The least time between two snapshots of the network.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// How many times the time one snapshot took must pass before the next:
/// copying a large network's weights should cost training little.
const SNAPSHOT_COST_FACTOR: u32 = 20;

/// The trainer's side of training live: call [`progress`](Self::progress)
/// with every [`Progress`] event and the network, then
/// [`finish`](Self::finish).
pub struct Trainer {
    app: Arc<App>,
    last_snapshot: Instant,
    /// The time to wait after a snapshot before the next.
    wait: Duration,
    epoch: usize,
    batch: usize,
    batches: usize,
}

impl Trainer {
    /// Starts following a run on `app` (made with [`App::training`]): sends
    /// the `start` event.
    pub fn new(app: Arc<App>, run: &RunInfo) -> Trainer {
        let trainer = Trainer {
            app,
            last_snapshot: Instant::now(),
            wait: SNAPSHOT_EVERY,
            epoch: run.start_epoch,
            batch: 0,
            batches: run.batches,
        };
        trainer.push(json!({
            "type": "start",
            "model": trainer.app.info().model,
            "epochs": run.epochs,
            "start_epoch": run.start_epoch,
            "batches": run.batches,
            "batch_size": run.batch_size,
            "train_images": run.train_images,
            "test_images": run.test_images,
            "dataset": run.dataset,
        }));
        trainer
    }

    /// Sends an event (an app made with [`App::new`] has no event log: the
    /// events go nowhere).
    fn push(&self, event: Value) {
        if let Some(events) = self.app.events() {
            events.push(event);
        }
    }

    /// The server's side.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Reports one training event: a `batch`, `epoch` or `interrupted`
    /// event, and a snapshot of `net` after every epoch and, during an
    /// epoch, at most every [`SNAPSHOT_EVERY`].
    pub fn progress(&mut self, event: &Progress, net: &mut Network<f32>) {
        let snapshot = match event {
            Progress::Batch {
                epoch,
                done,
                total,
                loss,
            } => {
                (self.epoch, self.batch, self.batches) = (*epoch, *done, *total);
                self.push(json!({
                    "type": "batch",
                    "epoch": epoch,
                    "batch": done,
                    "batches": total,
                    "step": (epoch - 1) * total + done,
                    "loss": finite(*loss),
                }));
                self.last_snapshot.elapsed() >= self.wait
            }
            Progress::Epoch(m) => {
                (self.epoch, self.batch) = (m.epoch, self.batches);
                self.push(epoch_event(m));
                true
            }
            Progress::Interrupted { epoch, position } => {
                (self.epoch, self.batch) = (*epoch, position.batches_done);
                self.push(json!({
                    "type": "interrupted",
                    "epoch": epoch,
                    "batch": position.batches_done,
                }));
                true
            }
        };
        if snapshot {
            self.snapshot(net);
        }
    }

    /// Publishes `net` as the page's network now.
    pub fn snapshot(&mut self, net: &mut Network<f32>) {
        let start = Instant::now();
        // A network that cannot be copied (weights gone non-finite: the
        // training stops on that itself) keeps the last good snapshot.
        if let Ok(version) = self.app.publish(net, self.epoch, self.batch) {
            self.push(json!({
                "type": "snapshot",
                "version": version,
                "epoch": self.epoch,
                "batch": self.batch,
            }));
        }
        self.wait = SNAPSHOT_EVERY.max(start.elapsed() * SNAPSHOT_COST_FACTOR);
        self.last_snapshot = Instant::now();
    }

    /// Ends the run: publishes `net` as the final network and sends the
    /// `done` event with `status` (`finished`, `interrupted` or `failed`)
    /// and, for a failure, its message. The progress streams end after it.
    pub fn finish(&mut self, net: &mut Network<f32>, status: &str, message: Option<&str>) {
        self.snapshot(net);
        self.push(json!({
            "type": "done",
            "status": status,
            "message": message,
            "epoch": self.epoch,
            "batch": self.batch,
        }));
    }
}

/// JSON has no NaN nor infinity: such a loss is sent as null.
fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// An `epoch` event: the metrics as `convnet train --metrics` writes them.
fn epoch_event(m: &EpochMetrics) -> Value {
    json!({
        "type": "epoch",
        "epoch": m.epoch,
        "train_loss": finite(m.train_loss),
        "train_acc": m.train_acc,
        "test_loss": finite(m.test_loss),
        "test_acc": m.test_acc,
        "seconds": m.seconds,
        "images_per_second": m.images_per_second,
        "lr": m.lr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_and_read_after_an_id() {
        let events = Events::default();
        assert_eq!(events.push(json!({"type": "start"})), 1);
        assert_eq!(events.push(json!({"type": "batch"})), 2);
        match events.wait_after(1, Duration::ZERO) {
            Next::Events(list) => {
                assert_eq!(list.len(), 1);
                assert_eq!(list[0].0, 2);
                let v: Value = serde_json::from_str(&list[0].1).unwrap();
                assert_eq!(v, json!({"type": "batch", "id": 2}));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(events.wait_after(2, Duration::ZERO), Next::Quiet);
        events.push(json!({"type": "done"}));
        assert!(events.finished());
        assert!(matches!(
            events.wait_after(2, Duration::ZERO),
            Next::Events(_)
        ));
        assert_eq!(events.wait_after(3, Duration::ZERO), Next::End);
        assert_eq!(events.all().len(), 3);
    }

    #[test]
    fn a_waiting_stream_wakes_for_an_event_and_ends_on_close() {
        let events = Arc::new(Events::default());
        let reader = {
            let events = events.clone();
            std::thread::spawn(move || events.wait_after(0, Duration::from_secs(3600)))
        };
        events.push(json!({"type": "start"}));
        assert!(matches!(reader.join().unwrap(), Next::Events(_)));
        let reader = {
            let events = events.clone();
            std::thread::spawn(move || events.wait_after(1, Duration::from_secs(3600)))
        };
        events.close();
        assert_eq!(reader.join().unwrap(), Next::End);
    }
}
