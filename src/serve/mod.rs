//! `convnet serve`: a local web page that shows what a trained network does
//! with a digit you draw (feature `serve`, part of the default `cli`).
//!
//! The page (`assets/web/`, compiled into the program) talks to a small JSON
//! API ([`api`], documented in `docs/serve.md`): the model's layers, every
//! layer's output for an image, one unit's arithmetic, the filters and some
//! test images. The HTTP side is `tiny_http`: a few threads take requests
//! from one queue; the network sits behind a mutex.
//!
//! Safe by default: the caller chooses the address (the command line binds
//! 127.0.0.1 unless told otherwise), request bodies are limited to
//! [`MAX_BODY`] bytes, and a malformed request gets a 4xx reply with a JSON
//! error while the server keeps serving.

pub mod api;
pub mod preprocess;

pub use api::{App, Reply};

use crate::error::{Error, Result};
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The largest request body accepted (a drawing of 280×280 values as JSON
/// text is about 1 MB).
pub const MAX_BODY: usize = 4 << 20;

/// How many requests are answered at once.
const WORKERS: usize = 4;

/// A running server; [`Server::stop`] (or a [`Stopper`]) ends it.
pub struct Server {
    http: Arc<tiny_http::Server>,
    url: String,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

/// Stops a [`Server`] from another thread (a Ctrl-C handler).
#[derive(Clone)]
pub struct Stopper {
    http: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
}

impl Stopper {
    /// Asks every worker to finish its request and stop.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
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
        let workers = (0..WORKERS)
            .map(|_| {
                let (http, app, stopping) = (http.clone(), app.clone(), stopping.clone());
                std::thread::spawn(move || {
                    while !stopping.load(Ordering::SeqCst) {
                        match http.recv() {
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
        }
    }

    /// Waits until the server is stopped (by a [`Stopper`]).
    pub fn wait(self) {
        for worker in self.workers {
            let _ = worker.join();
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
    let header =
        tiny_http::Header::from_bytes("Content-Type", reply.content_type).expect("a valid header");
    let no_cache = tiny_http::Header::from_bytes("Cache-Control", "no-store").expect("valid");
    let response = tiny_http::Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(header)
        .with_header(no_cache);
    let _ = request.respond(response);
}
