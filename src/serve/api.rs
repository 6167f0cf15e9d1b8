//! The JSON API behind the page (documented in `docs/serve.md`): every
//! request is a method, a path and a body in, a status and a JSON body out,
//! with no HTTP in sight, so that it can be tested on its own.

use super::live::Events;
use super::preprocess::mnist_style;
use crate::checkpoint::{self, CheckpointInfo};
use crate::data::Dataset;
use crate::layers::reference;
use crate::layers::softmax_with_loss::softmax_row;
use crate::layers::{AvgPooling, Convolution, MaxPooling, PoolingConfig};
use crate::networks::{LayerOutput, Network};
use crate::tensor::Tensor;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

/// The answer to a request: an HTTP status, a content type and the body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The HTTP status code (200, 400, 404, ...).
    pub status: u16,
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The body's bytes.
    pub body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    /// A JSON error `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply::json(status, &json!({ "error": message }))
    }

    fn asset(content_type: &'static str, text: &'static str) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: text.as_bytes().to_vec(),
        }
    }
}

const INDEX_HTML: &str = include_str!("../../assets/web/index.html");
const APP_JS: &str = include_str!("../../assets/web/app.js");
const STYLE_CSS: &str = include_str!("../../assets/web/style.css");

/// How many test images `GET /api/samples` offers, and how many of them at
/// most the network gets wrong.
const SAMPLES: usize = 16;
const WRONG_SAMPLES: usize = 6;

/// The geometry of a convolution or pooling layer, as the arithmetic needs it.
#[derive(Clone, Debug)]
enum Geometry {
    Conv {
        weight: Vec<f32>,
        bias: Vec<f32>,
        /// (FN, C, FH, FW)
        shape: [usize; 4],
        stride: usize,
        pad: usize,
    },
    MaxPool(PoolingConfig),
    AvgPool(PoolingConfig),
    Other,
}

/// What the page is told about a layer.
#[derive(Clone, Debug)]
struct LayerInfo {
    name: String,
    kind: &'static str,
    /// Per image, without the batch.
    input_shape: Vec<usize>,
    shape: Vec<usize>,
    params: usize,
    geometry: Geometry,
}

/// A test image offered on the page.
#[derive(Clone, Debug)]
struct Sample {
    index: usize,
    label: usize,
    prediction: usize,
    image: Vec<f32>,
}

/// How many of a test set's first images the samples are chosen from.
const SAMPLE_CANDIDATES: usize = 500;

/// One version of the served network, with what the page is told about its
/// layers (a convolution's weights among them): a request uses one snapshot
/// throughout, so that its numbers agree with each other while training
/// publishes newer ones.
struct Snapshot {
    net: Mutex<Network<f32>>,
    layers: Vec<LayerInfo>,
    /// Chosen on the first `GET /api/samples` of this version.
    samples: OnceLock<Vec<Sample>>,
    /// 0 for the first; one more for each [`App::publish`].
    version: u64,
    /// The epoch and the batches of it done when it was taken (training).
    at: Option<(usize, usize)>,
}

/// The served network and what the page asks about it.
pub struct App {
    current: RwLock<Arc<Snapshot>>,
    info: CheckpointInfo,
    /// The first test images and their labels, to choose samples from.
    candidates: Option<(Vec<usize>, Vec<f32>)>,
    /// A training run's progress (`convnet train --serve`).
    events: Option<Events>,
}

fn geometry_of(layer: &dyn crate::layers::Layer<f32>) -> Geometry {
    let conv = |weight: &Tensor<f32>, bias: &Tensor<f32>, stride, pad| {
        let s = weight.shape();
        Geometry::Conv {
            weight: weight.data().to_vec(),
            bias: bias.data().to_vec(),
            shape: [s[0], s[1], s[2], s[3]],
            stride,
            pad,
        }
    };
    if let Some(c) = layer.downcast_ref::<Convolution<f32>>() {
        conv(&c.weight, &c.bias, c.stride, c.pad)
    } else if let Some(c) = layer.downcast_ref::<reference::Convolution<f32>>() {
        conv(&c.weight, &c.bias, c.stride, c.pad)
    } else if let Some(p) = layer.downcast_ref::<MaxPooling<f32>>() {
        Geometry::MaxPool(p.config.clone())
    } else if let Some(p) = layer.downcast_ref::<reference::MaxPooling<f32>>() {
        Geometry::MaxPool(p.config.clone())
    } else if let Some(p) = layer.downcast_ref::<AvgPooling<f32>>() {
        Geometry::AvgPool(p.config.clone())
    } else {
        Geometry::Other
    }
}

/// The index of the largest value (the first of equal ones).
fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// A request's error: a status and a message.
type ApiResult<T> = std::result::Result<T, (u16, String)>;

fn bad(message: impl Into<String>) -> (u16, String) {
    (400, message.into())
}

impl App {
    /// Serves `net`; with `samples` (a test set of the network's input shape
    /// and classes), `GET /api/samples` offers some of its images, among them
    /// some the network gets wrong.
    pub fn new(
        mut net: Network<f32>,
        info: CheckpointInfo,
        samples: Option<&Dataset>,
    ) -> crate::Result<App> {
        let candidates = match samples {
            Some(set) if set.input_shape() == net.input_shape && !set.is_empty() => {
                let count = set.len().min(SAMPLE_CANDIDATES);
                let labels: Vec<usize> = (0..count).map(|i| set.labels[i] as usize).collect();
                let images: Vec<f32> = (0..count).flat_map(|i| set.image(i).to_vec()).collect();
                Some((labels, images))
            }
            _ => None,
        };
        let layers = layer_infos(&mut net)?;
        let chosen = match &candidates {
            Some((labels, images)) => choose_samples(&mut net, labels, images)?,
            None => Vec::new(),
        };
        let snapshot = Snapshot {
            net: Mutex::new(net),
            layers,
            samples: OnceLock::from(chosen),
            version: 0,
            at: None,
        };
        Ok(App {
            current: RwLock::new(Arc::new(snapshot)),
            info,
            candidates,
            events: None,
        })
    }

    /// Serves a training run (`convnet train --serve`): a copy of `net` now,
    /// newer ones as [`publish`](Self::publish) gives them, and the run's
    /// progress events (see [`super::live::Trainer`]).
    pub fn training(
        net: &mut Network<f32>,
        info: CheckpointInfo,
        samples: Option<&Dataset>,
    ) -> crate::Result<App> {
        let copy = copy_network(net, &info)?;
        let mut app = App::new(copy, info, samples)?;
        app.events = Some(Events::default());
        Ok(app)
    }

    /// Makes a copy of `net`'s weights the served network (for training
    /// live: `epoch` and `batch` say how far the run was); returns its
    /// version. Requests already under way finish with the network they
    /// started with. An error (weights that are not finite) leaves the
    /// served network as it was.
    pub fn publish(
        &self,
        net: &mut Network<f32>,
        epoch: usize,
        batch: usize,
    ) -> crate::Result<u64> {
        // The copy is made before the lock is taken: requests are held up
        // only for the swap.
        let mut copy = copy_network(net, &self.info)?;
        let layers = layer_infos(&mut copy)?;
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let version = current.version + 1;
        *current = Arc::new(Snapshot {
            net: Mutex::new(copy),
            layers,
            samples: OnceLock::new(),
            version,
            at: Some((epoch, batch)),
        });
        Ok(version)
    }

    /// The version of the served network: 0 for the first, one more for
    /// each [`publish`](Self::publish).
    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// The progress events of the run being served, if it is one.
    pub fn events(&self) -> Option<&Events> {
        self.events.as_ref()
    }

    /// The checkpoint's description of the served network.
    pub fn info(&self) -> &CheckpointInfo {
        &self.info
    }

    /// Ends every progress stream (the server is stopping).
    pub fn close(&self) {
        if let Some(events) = &self.events {
            events.close();
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the page offers the drawing canvas: a digit classifier (one
    /// channel of 28×28, the classes 0 to 9). Other networks, Fashion-MNIST's
    /// and CIFAR-10's among them, get a picture upload instead.
    pub fn drawable(&self) -> bool {
        let digits = self.info.class_names.len() == 10
            && self
                .info
                .class_names
                .iter()
                .enumerate()
                .all(|(d, name)| *name == d.to_string());
        self.info.input_shape == [1, 28, 28] && digits
    }

    /// Answers one request. `path` may carry a query string (ignored, but
    /// for `/api/progress`'s `after`). `GET /api/progress` is answered here
    /// with the events so far; the HTTP server streams it instead (see
    /// [`progress_after`](Self::progress_after)).
    pub fn handle(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let full_path = path;
        let path = path.split(['?', '#']).next().unwrap_or("");
        let result = match (method, path) {
            ("GET", "/" | "/index.html") => {
                return Reply::asset("text/html; charset=utf-8", INDEX_HTML)
            }
            ("GET", "/app.js") => return Reply::asset("text/javascript; charset=utf-8", APP_JS),
            ("GET", "/style.css") => return Reply::asset("text/css; charset=utf-8", STYLE_CSS),
            ("GET", "/api/model") => Ok(self.model()),
            ("GET", "/api/filters") => Ok(self.filters()),
            ("GET", "/api/samples") => Ok(self.samples()),
            ("GET", "/api/history") => Ok(self.history()),
            ("GET", "/api/checkpoint") => return self.checkpoint(),
            ("GET", "/api/progress") => match self.progress_after(full_path, None) {
                Ok(after) => return self.progress_text(after),
                Err(error) => Err(error),
            },
            ("POST", "/api/forward") => parse(body).and_then(|v| self.forward(&v)),
            ("POST", "/api/unit") => parse(body).and_then(|v| self.unit(&v)),
            (
                _,
                "/" | "/index.html" | "/app.js" | "/style.css" | "/api/model" | "/api/filters"
                | "/api/samples" | "/api/forward" | "/api/unit" | "/api/history"
                | "/api/checkpoint" | "/api/progress",
            ) => Err((405, format!("{method} is not allowed on {path}"))),
            _ => Err((404, format!("no such page: {path}"))),
        };
        match result {
            Ok(value) => Reply::json(200, &value),
            Err((status, message)) => Reply::error(status, &message),
        }
    }

    /// For `GET /api/progress` (`path` with its query string): the id after
    /// which to send events, from the query's `after=ID`, else from the
    /// `Last-Event-ID` header an EventSource sends when it reconnects,
    /// else 0 (every event). An error reply when this server serves no
    /// training run, or for a malformed id.
    pub fn progress_after(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> std::result::Result<u64, (u16, String)> {
        if self.events.is_none() {
            return Err((
                404,
                "no training run here: /api/progress is for `convnet train --serve`".to_string(),
            ));
        }
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let query = query.split('#').next().unwrap_or("");
        let mut after = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("after", value)) => after = Some(value),
                _ => return Err(bad(format!("unknown query parameter: {pair}"))),
            }
        }
        match after.or(last_event_id) {
            None => Ok(0),
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("the event id must be a whole number, not {text:?}"))),
        }
    }

    /// The events after id `after` as server-sent-event text (`id:` and
    /// `data:` lines), without waiting for more.
    fn progress_text(&self, after: u64) -> Reply {
        let mut body = String::new();
        if let Some(events) = &self.events {
            if let super::live::Next::Events(list) =
                events.wait_after(after, std::time::Duration::ZERO)
            {
                for (id, text) in list {
                    body.push_str(&sse_frame(id, &text));
                }
            }
        }
        Reply {
            status: 200,
            content_type: "text/event-stream",
            body: body.into_bytes(),
        }
    }

    /// `GET /api/history`: every progress event so far.
    fn history(&self) -> Value {
        json!({
            "training": self.in_training(),
            "events": self.events.as_ref().map(Events::all).unwrap_or_default(),
        })
    }

    /// Whether a training run is going on (not yet `done`).
    fn in_training(&self) -> bool {
        self.events.as_ref().is_some_and(|e| !e.finished())
    }

    /// `GET /api/checkpoint`: the served network as a checkpoint file, its
    /// version in the metadata.
    fn checkpoint(&self) -> Reply {
        let snapshot = self.snapshot();
        let mut info = self.info.clone();
        info.extra
            .insert("served_version".to_string(), snapshot.version.to_string());
        if let Some((epoch, batch)) = snapshot.at {
            info.extra
                .insert("served_at".to_string(), format!("{epoch},{batch}"));
        }
        let bytes = match snapshot.net.lock() {
            Ok(mut net) => checkpoint::to_bytes(&mut net, &info),
            Err(_) => return Reply::error(500, "the network is unusable after an earlier failure"),
        };
        match bytes {
            Ok(body) => Reply {
                status: 200,
                content_type: "application/octet-stream",
                body,
            },
            Err(e) => Reply::error(500, &e.to_string()),
        }
    }

    /// `GET /api/model`.
    fn model(&self) -> Value {
        let snapshot = self.snapshot();
        let layers: Vec<Value> = snapshot
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut v = json!({
                    "index": i,
                    "name": l.name,
                    "kind": l.kind,
                    "input_shape": l.input_shape,
                    "shape": l.shape,
                    "params": l.params,
                });
                match &l.geometry {
                    Geometry::Conv {
                        shape, stride, pad, ..
                    } => {
                        v["conv"] = json!({
                            "filters": shape[0], "channels": shape[1],
                            "size": shape[2], "stride": stride, "pad": pad,
                        })
                    }
                    Geometry::MaxPool(p) | Geometry::AvgPool(p) => {
                        v["pool"] = json!({"size": p.size, "stride": p.stride, "pad": p.pad})
                    }
                    Geometry::Other => {}
                }
                v
            })
            .collect();
        json!({
            "model": self.info.model,
            "input_shape": self.info.input_shape,
            "class_names": self.info.class_names,
            "drawable": self.drawable(),
            "params": snapshot.layers.iter().map(|l| l.params).sum::<usize>(),
            "layers": layers,
            "progress": self.events.is_some(),
            "training": self.in_training(),
            "version": snapshot.version,
        })
    }

    /// `GET /api/filters`: every convolution's weights and biases.
    fn filters(&self) -> Value {
        let snapshot = self.snapshot();
        let layers: Vec<Value> = snapshot
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.geometry {
                Geometry::Conv {
                    weight,
                    bias,
                    shape,
                    ..
                } => {
                    let (min, max) = min_max(weight);
                    Some(json!({
                        "index": i, "name": l.name, "shape": shape,
                        "min": min, "max": max, "weight": weight, "bias": bias,
                    }))
                }
                _ => None,
            })
            .collect();
        json!({ "layers": layers, "version": snapshot.version })
    }

    /// `GET /api/samples`.
    fn samples(&self) -> Value {
        let name = |i: usize| self.class_name(i);
        let snapshot = self.snapshot();
        let chosen = snapshot.samples.get_or_init(|| {
            let (Some((labels, images)), Ok(mut net)) = (&self.candidates, snapshot.net.lock())
            else {
                return Vec::new();
            };
            choose_samples(&mut net, labels, images).unwrap_or_default()
        });
        let samples: Vec<Value> = chosen
            .iter()
            .map(|s| {
                json!({
                    "index": s.index, "label": s.label, "label_name": name(s.label),
                    "prediction": s.prediction, "prediction_name": name(s.prediction),
                    "correct": s.label == s.prediction, "image": s.image,
                })
            })
            .collect();
        json!({ "samples": samples, "version": snapshot.version })
    }

    fn class_name(&self, i: usize) -> String {
        self.info
            .class_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    }

    /// The network's input from a request: `"image"` (C·H·W values) or,
    /// for a drawable network, `"drawing"` (`width`, `height`, `pixels`),
    /// prepared as MNIST's digits were.
    fn input(&self, request: &Value) -> ApiResult<Vec<f32>> {
        let [c, h, w] = self.info.input_shape;
        let numbers = |value: &Value, what: &str| -> ApiResult<Vec<f32>> {
            let list = value
                .as_array()
                .ok_or_else(|| bad(format!("\"{what}\" must be a list of numbers")))?;
            list.iter()
                .map(|v| {
                    v.as_f64()
                        .map(|x| x as f32)
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| bad(format!("\"{what}\" must hold only finite numbers")))
                })
                .collect()
        };
        if let Some(image) = request.get("image") {
            let values = numbers(image, "image")?;
            if values.len() != c * h * w {
                return Err(bad(format!(
                    "\"image\" must hold {} values ({c}×{h}×{w}), got {}",
                    c * h * w,
                    values.len()
                )));
            }
            return Ok(values);
        }
        if let Some(drawing) = request.get("drawing") {
            if !self.drawable() {
                return Err(bad("this network takes \"image\", not \"drawing\""));
            }
            let size = |key: &str| {
                drawing
                    .get(key)
                    .and_then(Value::as_u64)
                    .filter(|&n| (1..=4096).contains(&n))
                    .map(|n| n as usize)
                    .ok_or_else(|| {
                        bad(format!(
                            "\"drawing.{key}\" must be a whole number from 1 to 4096"
                        ))
                    })
            };
            let (width, height) = (size("width")?, size("height")?);
            let pixels = numbers(
                drawing.get("pixels").unwrap_or(&Value::Null),
                "drawing.pixels",
            )?;
            return mnist_style(&pixels, width, height).map_err(|e| bad(e.detail()));
        }
        Err(bad("the request needs \"image\" or \"drawing\""))
    }

    /// Every layer's output for one image, by `snapshot`'s network.
    fn run(&self, snapshot: &Snapshot, x: &[f32]) -> ApiResult<(Vec<LayerOutput<f32>>, Vec<f32>)> {
        let [c, h, w] = self.info.input_shape;
        let x = Tensor::from_vec(&[1, c, h, w], x.to_vec()).map_err(|e| bad(e.detail()))?;
        let mut net = snapshot.net.lock().map_err(|_| {
            (
                500,
                "the network is unusable after an earlier failure".to_string(),
            )
        })?;
        let internal = |e: crate::Error| (500, e.to_string());
        let outputs = net.layer_outputs(&x).map_err(internal)?;
        // The scores as `predict` computes them (fused layers and all), so
        // that the probabilities are those of `convnet predict`.
        let scores = net.predict(&x, false).map_err(internal)?;
        let mut probabilities = vec![0.0f32; scores.len()];
        softmax_row(scores.data(), &mut probabilities);
        Ok((outputs, probabilities))
    }

    /// `POST /api/forward`.
    fn forward(&self, request: &Value) -> ApiResult<Value> {
        let start = Instant::now();
        let x = self.input(request)?;
        let snapshot = self.snapshot();
        let (outputs, probabilities) = self.run(&snapshot, &x)?;
        // `"maps": "u8"`: each layer's values as bytes for display (hex),
        // a fifth of the exact numbers' size.
        let bytes = match request.get("maps") {
            None => false,
            Some(v) if v == "u8" => true,
            Some(v) if v == "exact" => false,
            Some(_) => return Err(bad("\"maps\" must be \"exact\" or \"u8\"")),
        };
        let layers: Vec<Value> = outputs
            .iter()
            .map(|o| {
                let (min, max) = min_max(o.output.data());
                let mut layer = json!({
                    "name": o.name, "kind": o.kind, "shape": &o.output.shape()[1..],
                    "min": min, "max": max,
                });
                if bytes {
                    layer["u8"] = Value::String(quantised_hex(o.output.data(), min, max));
                } else {
                    layer["data"] = json!(o.output.data());
                }
                layer
            })
            .collect();
        let prediction = argmax(&probabilities);
        Ok(json!({
            "input": x,
            "input_shape": self.info.input_shape,
            "layers": layers,
            "probabilities": probabilities,
            "prediction": prediction,
            "class": self.class_name(prediction),
            "server_ms": start.elapsed().as_secs_f64() * 1000.0,
            "version": snapshot.version,
        }))
    }

    /// `POST /api/unit`: how one output value of one layer was computed.
    fn unit(&self, request: &Value) -> ApiResult<Value> {
        let x = self.input(request)?;
        let index = |key: &str| {
            request
                .get(key)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| bad(format!("\"{key}\" must be a whole number")))
        };
        let layer = index("layer")?;
        // One snapshot for the outputs and the weights shown with them.
        let snapshot = self.snapshot();
        let info = snapshot.layers.get(layer).ok_or_else(|| {
            bad(format!(
                "\"layer\" must be below {} (the number of layers)",
                snapshot.layers.len()
            ))
        })?;
        let shape = &info.shape;
        let (channel, y, x_pos) = if shape.len() == 3 {
            (index("channel")?, index("y")?, index("x")?)
        } else {
            (index("channel")?, 0, 0)
        };
        let unit_index = if shape.len() == 3 {
            if channel >= shape[0] || y >= shape[1] || x_pos >= shape[2] {
                return Err(bad(format!(
                    "the unit ({channel}, {y}, {x_pos}) is outside the output {shape:?}"
                )));
            }
            (channel * shape[1] + y) * shape[2] + x_pos
        } else {
            if channel >= shape.iter().product() {
                return Err(bad(format!(
                    "the unit {channel} is outside the output {shape:?}"
                )));
            }
            channel
        };
        let (outputs, _) = self.run(&snapshot, &x)?;
        let input: &[f32] = if layer == 0 {
            &x
        } else {
            outputs[layer - 1].output.data()
        };
        let output = outputs[layer].output.data()[unit_index];
        let mut reply = json!({
            "layer": layer, "name": info.name, "kind": info.kind,
            "unit": {"channel": channel, "y": y, "x": x_pos},
            "input_layer": if layer == 0 { Value::from("input") } else { Value::from(outputs[layer - 1].name.clone()) },
            "input_shape": info.input_shape,
            "output": output,
            "version": snapshot.version,
        });
        let in_shape = &info.input_shape;
        // The value at (c, iy, ix) of the input, or None in the padding.
        let at = |c: usize, iy: isize, ix: isize| -> Option<f32> {
            let (h, w) = (in_shape[1] as isize, in_shape[2] as isize);
            ((0..h).contains(&iy) && (0..w).contains(&ix))
                .then(|| input[(c * in_shape[1] + iy as usize) * in_shape[2] + ix as usize])
        };
        match &info.geometry {
            Geometry::Conv {
                weight,
                bias,
                shape: [_, cin, fh, fw],
                stride,
                pad,
            } => {
                let (y0, x0) = (
                    (y * stride) as isize - *pad as isize,
                    (x_pos * stride) as isize - *pad as isize,
                );
                let size = cin * fh * fw;
                let filter = &weight[channel * size..(channel + 1) * size];
                let mut patch = Vec::with_capacity(size);
                let mut products = Vec::with_capacity(size);
                let mut sum = 0.0f64;
                for c in 0..*cin {
                    for ky in 0..*fh {
                        for kx in 0..*fw {
                            let v = at(c, y0 + ky as isize, x0 + kx as isize).unwrap_or(0.0);
                            let wv = filter[(c * fh + ky) * fw + kx];
                            patch.push(v);
                            products.push(v * wv);
                            sum += v as f64 * wv as f64;
                        }
                    }
                }
                let b = bias[channel];
                reply["window"] =
                    json!({"y0": y0, "x0": x0, "height": fh, "width": fw, "channels": cin});
                reply["patch"] = json!(patch);
                reply["filter"] = json!(filter);
                reply["products"] = json!(products);
                reply["sum"] = json!(sum);
                reply["bias"] = json!(b);
                reply["total"] = json!(sum + b as f64);
                // The ReLU after it, if the next layer is one.
                if let Some(next) = snapshot.layers.get(layer + 1).filter(|l| l.kind == "Relu") {
                    reply["relu"] = json!({
                        "name": next.name,
                        "output": outputs[layer + 1].output.data()[unit_index],
                    });
                }
            }
            Geometry::MaxPool(p) | Geometry::AvgPool(p) => {
                let (y0, x0) = (
                    (y * p.stride) as isize - p.pad as isize,
                    (x_pos * p.stride) as isize - p.pad as isize,
                );
                let mut values = Vec::with_capacity(p.size * p.size);
                let mut best: Option<(usize, usize, f32)> = None;
                for ky in 0..p.size {
                    for kx in 0..p.size {
                        let v = at(channel, y0 + ky as isize, x0 + kx as isize);
                        if let Some(v) = v {
                            if best.is_none_or(|(_, _, b)| v > b) {
                                best = Some((ky, kx, v));
                            }
                        }
                        values.push(v);
                    }
                }
                reply["window"] =
                    json!({"y0": y0, "x0": x0, "height": p.size, "width": p.size, "channels": 1});
                reply["values"] = json!(values);
                if matches!(info.geometry, Geometry::MaxPool(_)) {
                    if let Some((ky, kx, v)) = best {
                        reply["winner"] =
                            json!({"y": y0 + ky as isize, "x": x0 + kx as isize, "value": v});
                    }
                }
            }
            Geometry::Other => {
                if info.kind == "Relu"
                    || info.kind == "Sigmoid"
                    || info.kind == "Tanh"
                    || info.kind == "Dropout"
                {
                    reply["input_value"] = json!(input[unit_index]);
                }
            }
        }
        Ok(reply)
    }
}

/// `values` scaled from `[min, max]` to bytes 0..=255 (rounded), as two
/// hex digits each: the page's maps need no more than its 256 colours.
fn quantised_hex(values: &[f32], min: f32, max: f32) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let span = max - min;
    let scale = if span > 0.0 { 255.0 / span } else { 0.0 };
    let mut text = String::with_capacity(2 * values.len());
    for &v in values {
        let q = ((v - min) * scale).round().clamp(0.0, 255.0) as usize;
        text.push(DIGITS[q >> 4] as char);
        text.push(DIGITS[q & 15] as char);
    }
    text
}

fn parse(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| bad(format!("the body is not valid JSON: {e}")))
}

/// Picks the samples among the candidates (`labels` and their `images`, in
/// order): the first ones, with up to [`WRONG_SAMPLES`] of the first ones
/// the network gets wrong among them.
fn choose_samples(
    net: &mut Network<f32>,
    labels: &[usize],
    images: &[f32],
) -> crate::Result<Vec<Sample>> {
    let [c, h, w] = net.input_shape;
    let len = c * h * w;
    let count = labels.len();
    let x = Tensor::from_vec(&[count, c, h, w], images.to_vec())?;
    let scores = net.predict(&x, false)?;
    let classes = scores.len() / count;
    let predictions: Vec<usize> = scores.data().chunks(classes).map(argmax).collect();
    let wrong: Vec<usize> = (0..count)
        .filter(|&i| predictions[i] != labels[i])
        .take(WRONG_SAMPLES)
        .collect();
    let right = (0..count)
        .filter(|&i| predictions[i] == labels[i])
        .take(SAMPLES - wrong.len());
    let mut chosen: Vec<usize> = right.chain(wrong.iter().copied()).collect();
    chosen.sort_unstable();
    Ok(chosen
        .into_iter()
        .map(|i| Sample {
            index: i,
            label: labels[i],
            prediction: predictions[i],
            image: images[i * len..(i + 1) * len].to_vec(),
        })
        .collect())
}

/// What the page is told about each of `net`'s layers.
fn layer_infos(net: &mut Network<f32>) -> crate::Result<Vec<LayerInfo>> {
    let shapes = net.shapes(1)?;
    let mut layers = Vec::with_capacity(net.layers.len());
    for (i, named) in net.layers.iter_mut().enumerate() {
        let params = named.layer.params().iter().map(|p| p.value.len()).sum();
        layers.push(LayerInfo {
            name: named.name.clone(),
            kind: named.layer.kind(),
            input_shape: shapes[i][1..].to_vec(),
            shape: shapes[i + 1][1..].to_vec(),
            params,
            geometry: geometry_of(&*named.layer),
        });
    }
    Ok(layers)
}

/// A copy of `net` (its layers, names, weights and buffers), made the way a
/// checkpoint is saved and loaded: the served network is then exactly what
/// `convnet predict` would load from a checkpoint of it.
fn copy_network(net: &mut Network<f32>, info: &CheckpointInfo) -> crate::Result<Network<f32>> {
    let bytes = checkpoint::to_bytes(net, info)?;
    // The network exists already: its copy needs no memory check.
    let (copy, _) = checkpoint::load_from_bytes(&bytes, "the training network", u64::MAX)?;
    Ok(copy)
}

/// One server-sent event: its id and its data (one line of JSON).
pub(super) fn sse_frame(id: u64, json: &str) -> String {
    format!("id: {id}\ndata: {json}\n\n")
}

#[cfg(test)]
mod tests {
    use super::App;
    use crate::checkpoint::CheckpointInfo;
    use crate::networks::{build_model, ModelOptions};
    use crate::rng::Rng;

    fn app(class_names: &[&str], input_shape: [usize; 3]) -> App {
        let options = ModelOptions::default();
        let net =
            build_model::<f32>("affine(10)", &options, input_shape, 10, &mut Rng::new(1)).unwrap();
        let info = CheckpointInfo {
            model: "affine(10)".into(),
            options,
            input_shape,
            class_names: class_names.iter().map(|s| s.to_string()).collect(),
            extra: Default::default(),
        };
        App::new(net, info, None).unwrap()
    }

    #[test]
    fn only_digit_classifiers_get_the_drawing_pad() {
        use crate::data::mnist::{DIGIT_CLASSES, FASHION_CLASSES};
        assert!(app(&DIGIT_CLASSES, [1, 28, 28]).drawable());
        assert!(!app(&FASHION_CLASSES, [1, 28, 28]).drawable());
        assert!(!app(&DIGIT_CLASSES, [3, 32, 32]).drawable());
    }
}
