//! `convnet serve`: a local web page that shows what a trained network does
//! with a digit you draw (feature `serve`, part of the default `cli`).
//!
//! The page (`assets/web/`, compiled into the program) talks to a small JSON
//! API ([`api`], documented in `docs/serve.md`): the model's layers, every
//! layer's output for an image, one unit's arithmetic, the filters and some
//! test images. The HTTP side is `tiny_http`: a few threads take requests
//! from one queue; the network sits behind a mutex.
//!
//! Training live ([`live`], `convnet train --serve`): the same page follows
//! a training run, its network replaced by newer snapshots as the run goes
//! on, and `GET /api/progress` streams the run's progress as server-sent
//! events, each stream on a thread of its own so that it never holds up a
//! worker.
//!
//! Safe by default: the caller chooses the address (the command line binds
//! 127.0.0.1 unless told otherwise), request bodies are limited to
//! [`MAX_BODY`] bytes, and a malformed request gets a 4xx reply with a JSON
//! error while the server keeps serving.

pub mod api;
pub mod live;
pub mod preprocess;

pub use api::{App, Reply};
pub use live::{RunInfo, Trainer};

use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request body accepted (a drawing of 280×280 values as JSON
/// text is about 1 MB).
pub const MAX_BODY: usize = 4 << 20;

/// How many requests are answered at once.
const WORKERS: usize = 4;

/// How many progress streams may be open at once; more get a 503.
pub const MAX_STREAMS: usize = 32;

/// A quiet progress stream sends a comment this often, so that a client
/// that went away is noticed (its thread then ends).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A running server; [`Server::stop`] (or a [`Stopper`]) ends it.
pub struct Server {
    http: Arc<tiny_http::Server>,
    url: String,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    streams: Streams,
    app: Arc<App>,
}

/// The threads of the open progress streams.
type Streams = Arc<Mutex<Vec<JoinHandle<()>>>>;

/// Stops a [`Server`] from another thread (a Ctrl-C handler).
#[derive(Clone)]
pub struct Stopper {
    http: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    app: Arc<App>,
}

impl Stopper {
    /// Asks every worker to finish its request and stop, and ends the
    /// progress streams.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.app.close();
        for _ in 0..WORKERS {
            self.http.unblock();
        }
    }
}

impl Server {
    /// Starts serving `app` on `host:port` (port 0: any free port; the
    /// chosen one is in [`url`](Self::url)).
    pub fn start(app: Arc<App>, host: &str, port: u16) -> Result<Server> {
        let address = format!("{host}:{port}");
        let http = tiny_http::Server::http(address.as_str()).map_err(|e| Error::Io {
            path: address.clone(),
            error: std::io::Error::other(format!("cannot listen: {e}")),
        })?;
        let bound = http.server_addr().to_ip().ok_or_else(|| Error::Io {
            path: address.clone(),
            error: std::io::Error::other("not an IP address"),
        })?;
        let url = format!("http://{bound}/");
        let http = Arc::new(http);
        let stopping = Arc::new(AtomicBool::new(false));
        let streams = Streams::default();
        let workers = (0..WORKERS)
            .map(|_| {
                let (http, app, stopping) = (http.clone(), app.clone(), stopping.clone());
                let streams = streams.clone();
                std::thread::spawn(move || {
                    while !stopping.load(Ordering::SeqCst) {
                        match http.recv() {
                            Ok(request) if is_progress(&request) => {
                                stream_progress(&app, request, &streams)
                            }
                            Ok(request) => answer(&app, request),
                            Err(_) if stopping.load(Ordering::SeqCst) => break,
                            Err(_) => continue,
                        }
                    }
                })
            })
            .collect();
        Ok(Server {
            http,
            url,
            stopping,
            workers,
            streams,
            app,
        })
    }

    /// `http://ADDRESS:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A handle that stops the server from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper {
            http: self.http.clone(),
            stopping: self.stopping.clone(),
            app: self.app.clone(),
        }
    }

    /// Waits until the server is stopped (by a [`Stopper`]): its workers
    /// and its progress streams have ended.
    pub fn wait(self) {
        for worker in self.workers {
            let _ = worker.join();
        }
        let streams = std::mem::take(&mut *lock(&self.streams));
        for stream in streams {
            let _ = stream.join();
        }
    }

    /// Stops the server and waits for its workers.
    pub fn stop(self) {
        self.stopper().stop();
        self.wait();
    }
}

/// Reads one request's body (at most [`MAX_BODY`] bytes), lets `app`
/// answer it, and sends the reply. A client that goes away is ignored.
fn answer(app: &App, mut request: tiny_http::Request) {
    let method = request.method().as_str().to_string();
    let url = request.url().to_string();
    let reply = if request.body_length().is_some_and(|n| n > MAX_BODY) {
        Reply::error(413, &format!("the body is larger than {MAX_BODY} bytes"))
    } else {
        let mut body = Vec::new();
        match request
            .as_reader()
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut body)
        {
            Ok(_) if body.len() > MAX_BODY => {
                Reply::error(413, &format!("the body is larger than {MAX_BODY} bytes"))
            }
            Ok(_) => app.handle(&method, &url, &body),
            Err(e) => Reply::error(400, &format!("cannot read the body: {e}")),
        }
    };
    respond(request, reply);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `request` asks for the progress stream.
fn is_progress(request: &tiny_http::Request) -> bool {
    *request.method() == tiny_http::Method::Get
        && request.url().split(['?', '#']).next() == Some("/api/progress")
}

/// Answers `GET /api/progress`: on a thread of its own, the events after
/// the one asked for, then each new one as it comes, as server-sent events,
/// until the run is over or the server stops. Errors (no run here, a
/// malformed id, too many streams) are answered at once as JSON.
fn stream_progress(app: &Arc<App>, request: tiny_http::Request, streams: &Streams) {
    let last_event_id = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Last-Event-ID"))
        .map(|h| h.value.as_str().to_string());
    let after = match app.progress_after(request.url(), last_event_id.as_deref()) {
        Ok(after) => after,
        Err((status, message)) => return respond(request, Reply::error(status, &message)),
    };
    // tiny_http sends a body of unknown length in chunks from HTTP/1.1 on.
    let version = request.http_version().clone();
    if version < tiny_http::HTTPVersion(1, 1) {
        return respond(
            request,
            Reply::error(505, "the progress stream needs HTTP/1.1"),
        );
    }
    let mut open = lock(streams);
    open.retain(|s| !s.is_finished());
    if open.len() >= MAX_STREAMS {
        drop(open);
        let message = format!("{MAX_STREAMS} progress streams are open already");
        return respond(request, Reply::error(503, &message));
    }
    let app = app.clone();
    open.push(std::thread::spawn(move || {
        // The client going away ends the stream: nothing to report.
        let _ = write_stream(&app, request, after);
    }));
}

/// Writes the progress stream: tiny_http writes the status line and the
/// headers, `chunked_transfer` frames the body, and each event is flushed
/// to the client as it comes (tiny_http's own responses would hold a
/// streamed body back in a buffer).
fn write_stream(app: &App, request: tiny_http::Request, mut after: u64) -> std::io::Result<()> {
    let Some(events) = app.events() else {
        return Ok(());
    };
    let version = request.http_version().clone();
    let request_headers = request.headers().to_vec();
    let headers = vec![
        header("Content-Type", "text/event-stream"),
        header("Cache-Control", "no-store"),
    ];
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(200),
        headers,
        std::io::empty(),
        None,
        None,
    );
    let mut writer = request.into_writer();
    // The header only: the body follows in chunks.
    response.raw_print(&mut writer, version, &request_headers, true, None)?;
    writer.flush()?;
    let mut body = chunked_transfer::Encoder::with_flush_after_write(&mut writer);
    loop {
        match events.wait_after(after, KEEP_ALIVE) {
            live::Next::Events(list) => {
                let mut text = String::new();
                for (id, json) in list {
                    text.push_str(&api::sse_frame(id, &json));
                    after = id;
                }
                body.write_all(text.as_bytes())?;
            }
            live::Next::Quiet => body.write_all(b": still here\n\n")?,
            live::Next::End => break,
        }
        body.get_mut().flush()?;
    }
    // Dropping the encoder writes the last, empty chunk.
    drop(body);
    writer.flush()
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name, value).expect("a valid header")
}

fn respond(request: tiny_http::Request, reply: Reply) {
    let response = tiny_http::Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type))
        .with_header(header("Cache-Control", "no-store"));
    let _ = request.respond(response);
}
