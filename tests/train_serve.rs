//! Training live (`convnet train --serve`): the progress stream
//! (`GET /api/progress`, server-sent events) and the snapshots of the
//! network that the page's requests use, through the library's API and
//! through the binary on 127.0.0.1 with a port the system chooses.

mod common;

use common::{convnet_fails, convnet_ok, TempDir};
use convnet::checkpoint::{self, CheckpointInfo};
use convnet::data::load_embedded_mnist10k;
use convnet::init::Init;
use convnet::networks::{build_model, ModelOptions, Network};
use convnet::serve::{App, RunInfo, Trainer};
use convnet::train::{train, Progress, TrainConfig};
use convnet::{Rng, Tensor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn reply_json(reply: &convnet::serve::Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    serde_json::from_slice(&reply.body).unwrap()
}

/// `image` through the app: every layer's output and the reply's version.
fn served(app: &App, image: &[f32]) -> (Vec<Vec<f32>>, u64) {
    let body = json!({ "image": image }).to_string();
    let reply = reply_json(&app.handle("POST", "/api/forward", body.as_bytes()));
    let layers = reply["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| floats(&l["data"]))
        .collect();
    (layers, reply["version"].as_u64().unwrap())
}

/// `image` through `net` itself: every layer's output.
fn library(net: &mut Network<f32>, image: &[f32]) -> Vec<Vec<f32>> {
    let x = Tensor::from_vec(&[1, 1, 28, 28], image.to_vec()).unwrap();
    net.layer_outputs(&x)
        .unwrap()
        .into_iter()
        .map(|o| o.output.data().to_vec())
        .collect()
}

/// A small SimpleConvNet (4 filters, 20 hidden units) and its description.
fn small_network() -> (Network<f32>, CheckpointInfo) {
    let options = ModelOptions {
        init: Some(Init::He),
        filters: Some(4),
        hidden_size: Some(20),
        ..ModelOptions::default()
    };
    let net = build_model::<f32>("simple", &options, [1, 28, 28], 10, &mut Rng::new(5)).unwrap();
    let info = CheckpointInfo {
        model: "simple".to_string(),
        options,
        input_shape: [1, 28, 28],
        class_names: (0..10).map(|d| d.to_string()).collect(),
        extra: BTreeMap::new(),
    };
    (net, info)
}

#[test]
fn the_page_computes_with_the_newest_snapshot_and_the_events_tell_the_run() {
    let data = load_embedded_mnist10k().unwrap();
    let image = data.test.image(0).to_vec();
    let (mut net, info) = small_network();
    let app = Arc::new(App::training(&mut net, info, Some(&data.test)).unwrap());
    // Before any snapshot: the initial network, version 0.
    let (layers, version) = served(&app, &image);
    assert_eq!(version, 0);
    assert_eq!(layers, library(&mut net, &image));

    let config = TrainConfig {
        epochs: 1,
        seed: 2,
        threads: Some(2),
        ..TrainConfig::default()
    };
    let batches = data.train.len().div_ceil(config.batch_size);
    let run = RunInfo {
        epochs: 1,
        start_epoch: 0,
        batches,
        batch_size: config.batch_size,
        train_images: data.train.len(),
        test_images: data.test.len(),
        dataset: data.name.clone(),
    };
    let mut trainer = Trainer::new(app.clone(), &run);
    let mut checked = 0;
    let history = train(&mut net, &data, &config, |event, net| {
        trainer.progress(&event, net);
        // In the middle of the epoch, with training held here: a snapshot
        // now, and the page's forward pass is the library's on these very
        // weights, to the bit.
        if let Progress::Batch { done: 10 | 40, .. } = event {
            trainer.snapshot(net);
            let (layers, version) = served(&app, &image);
            assert_eq!(version, app.version());
            assert_eq!(layers, library(net, &image), "at version {version}");
            // The filters and a unit's weights are the snapshot's too.
            let filters = reply_json(&app.handle("GET", "/api/filters", b""));
            assert_eq!(filters["version"].as_u64(), Some(version));
            assert_eq!(
                floats(&filters["layers"][0]["weight"]),
                net.layers[0].layer.params()[0].value.data()
            );
            let unit = json!({"image": image, "layer": 0, "channel": 1, "y": 3, "x": 4});
            let unit = app.handle("POST", "/api/unit", unit.to_string().as_bytes());
            let unit = reply_json(&unit);
            assert_eq!(unit["version"].as_u64(), Some(version));
            let weights = floats(&filters["layers"][0]["weight"]);
            assert_eq!(floats(&unit["filter"]), weights[25..50]);
            checked += 1;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(checked, 2);
    trainer.finish(&mut net, "finished", None);
    let (layers, version) = served(&app, &image);
    assert_eq!(version, app.version());
    assert_eq!(layers, library(&mut net, &image));

    // The checkpoint of the served network is the trained one.
    let bytes = app.handle("GET", "/api/checkpoint", b"");
    assert_eq!(bytes.status, 200);
    let (mut copy, copy_info) =
        checkpoint::load_from_bytes(&bytes.body, "served", u64::MAX).unwrap();
    assert_eq!(
        copy_info.extra.get("served_version"),
        Some(&version.to_string())
    );
    for (a, b) in copy.params().iter().zip(net.params()) {
        assert_eq!(a.value.data(), b.value.data());
    }

    // The events: start, every batch in order, the epoch with the metrics
    // train returned, snapshots of rising versions, done.
    let history_reply = reply_json(&app.handle("GET", "/api/history", b""));
    assert_eq!(history_reply["training"], false);
    let events = history_reply["events"].as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"].as_u64(), Some(i as u64 + 1));
    }
    assert_eq!(events[0]["type"], "start");
    assert_eq!(events[0]["batches"].as_u64(), Some(batches as u64));
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "batch")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=batches as u64).collect::<Vec<_>>());
    let epochs: Vec<&Value> = events.iter().filter(|e| e["type"] == "epoch").collect();
    assert_eq!(epochs.len(), 1);
    assert_eq!(epochs[0]["test_acc"].as_f64(), Some(history[0].test_acc));
    assert_eq!(
        epochs[0]["train_loss"].as_f64(),
        Some(history[0].train_loss)
    );
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "snapshot")
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(versions.len() >= 4, "{versions:?}");
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    assert_eq!(*versions.last().unwrap(), version);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["status"], "finished");

    // Without the HTTP server, /api/progress answers with the events so far
    // as server-sent-event text.
    let text = app.handle("GET", "/api/progress?after=1", b"");
    assert_eq!(text.content_type, "text/event-stream");
    let text = String::from_utf8(text.body).unwrap();
    assert!(text.starts_with("id: 2\ndata: {"), "{}", &text[..80]);
    assert_eq!(text.matches("\n\n").count(), events.len() - 1);
    for (path, status) in [
        ("/api/progress?after=x", 400),
        ("/api/progress?since=3", 400),
        ("/api/progress?after=-1", 400),
    ] {
        let reply = app.handle("GET", path, b"");
        assert_eq!(reply.status, status, "{path}");
    }
    assert_eq!(app.handle("POST", "/api/progress", b"").status, 405);
    assert_eq!(app.handle("POST", "/api/history", b"").status, 405);
}

/// `convnet train --serve --port 0 ARGS`, its URL, and a reader of its
/// standard output; killed when dropped.
struct Training {
    child: Child,
    url: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Training {
    fn start(args: &[&str]) -> Training {
        let mut child = Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(["train", "--serve", "--port", "0", "--threads", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("no URL in {line:?}; stderr: {err}");
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        // stderr (progress lines) is read away so that it never fills up.
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Training {
            url: url.trim_end_matches('/').to_string(),
            child,
            stdout,
        }
    }

    fn agent() -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(600)))
            .build();
        ureq::Agent::new_with_config(config)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let mut response = Training::agent()
            .get(&format!("{}{path}", self.url))
            .call()
            .unwrap();
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The progress stream from the start: every event until the server
    /// ends the stream.
    fn progress(&self) -> Vec<Value> {
        let response = Training::agent()
            .get(&format!("{}/api/progress", self.url))
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        let reader = BufReader::new(response.into_body().into_reader());
        let mut events = Vec::new();
        let mut id = None;
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.parse::<u64>().unwrap());
            } else if let Some(data) = line.strip_prefix("data: ") {
                let event: Value = serde_json::from_str(data).unwrap();
                assert_eq!(event["id"].as_u64(), id, "{event}");
                events.push(event);
            }
        }
        events
    }

    /// Sends Ctrl-C and returns the exit code.
    fn interrupt(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // A hang is the failure looked for: the limit is far above the time
        // it takes.
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "still running after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The rest of standard output, once the program has ended.
    fn rest_of_stdout(&mut self) -> String {
        let mut text = String::new();
        self.stdout.read_to_string(&mut text).unwrap();
        text
    }
}

impl Drop for Training {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn train_serve_streams_the_run_and_then_serves_the_saved_network() {
    let dir = TempDir::new("train-serve");
    let model = dir.join("m.safetensors");
    let metrics = dir.join("m.jsonl");
    let mut training = Training::start(&[
        "--epochs",
        "2",
        "--filters",
        "4",
        "--hidden-size",
        "20",
        "--save",
        model.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    // The stream replays what happened before it was opened, then follows
    // the run, and ends after the `done` event.
    let events = training.progress();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"].as_u64(), Some(i as u64 + 1), "{e}");
    }
    assert_eq!(events[0]["type"], "start");
    assert_eq!(events[0]["epochs"], 2);
    assert_eq!(events[0]["model"], "simple");
    let batches = events[0]["batches"].as_u64().unwrap();
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["status"], "finished");
    // Batches in order, each epoch's after its batches.
    let mut expected = (1, 1);
    for e in &events[1..events.len() - 1] {
        match e["type"].as_str().unwrap() {
            "batch" => {
                let at = (e["epoch"].as_u64().unwrap(), e["batch"].as_u64().unwrap());
                assert_eq!(at, expected, "{e}");
                assert_eq!(e["step"].as_u64(), Some((at.0 - 1) * batches + at.1));
                assert!(e["loss"].as_f64().unwrap() > 0.0);
                expected.1 += 1;
            }
            "epoch" => {
                assert_eq!(e["epoch"].as_u64(), Some(expected.0), "{e}");
                assert_eq!(expected.1, batches + 1, "an epoch event after every batch");
                expected = (expected.0 + 1, 1);
            }
            "snapshot" => {}
            other => panic!("unexpected event {other}: {e}"),
        }
    }
    assert_eq!(expected, (3, 1), "two epochs");
    // The epochs' metrics are the metrics file's.
    let lines = std::fs::read_to_string(&metrics).unwrap();
    let from_file: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let from_stream: Vec<&Value> = events.iter().filter(|e| e["type"] == "epoch").collect();
    assert_eq!(from_file.len(), 2);
    for (file, stream) in from_file.iter().zip(&from_stream) {
        for key in [
            "epoch",
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "lr",
        ] {
            assert_eq!(file[key], stream[key], "{key}");
        }
    }
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "snapshot")
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(
        versions.len() >= 3,
        "one per epoch and the final one: {versions:?}"
    );
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");

    // Training is over: the page's network is the saved checkpoint, and
    // its answers are those of `convnet predict`.
    let (status, info) = training.get("/api/model");
    assert_eq!(status, 200);
    assert_eq!(info["training"], false);
    assert_eq!(info["progress"], true);
    assert_eq!(info["version"].as_u64(), versions.last().copied());
    let image = load_embedded_mnist10k().unwrap().test.image(4).to_vec();
    let png = dir.join("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([(image[(y * 28 + x) as usize] * 255.0).round() as u8])
    })
    .save(&png)
    .unwrap();
    let predicted = convnet_ok(
        &["predict", "--json", "--top-k", "10", "--checkpoint"],
        &[&model, &png],
    );
    let predicted: Value = serde_json::from_str(predicted.trim()).unwrap();
    let mut response = Training::agent()
        .post(&format!("{}/api/forward", training.url))
        .send(json!({ "image": image }).to_string())
        .unwrap();
    let forward: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    let probabilities = floats(&forward["probabilities"]);
    for p in predicted["predictions"].as_array().unwrap() {
        let index = p["index"].as_u64().unwrap() as usize;
        assert_eq!(
            probabilities[index],
            p["probability"].as_f64().unwrap() as f32
        );
    }
    let (mut saved, _) = checkpoint::load(&model).unwrap();
    let mut response = Training::agent()
        .get(&format!("{}/api/checkpoint", training.url))
        .call()
        .unwrap();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    let (mut served, _) = checkpoint::load_from_bytes(&bytes, "served", u64::MAX).unwrap();
    for (a, b) in served.params().iter().zip(saved.params()) {
        assert_eq!(a.value.data(), b.value.data());
    }

    // A stream asked for after the last event ends at once, empty; bad
    // requests get a JSON 4xx.
    let last = events.len();
    let mut response = Training::agent()
        .get(&format!("{}/api/progress?after={last}", training.url))
        .call()
        .unwrap();
    assert_eq!(response.body_mut().read_to_string().unwrap(), "");
    for (path, status) in [("/api/progress?after=x", 400), ("/api/nothing", 404)] {
        let (got, reply) = training.get(path);
        assert_eq!(got, status, "{path}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }

    // It keeps serving until Ctrl-C, which ends it cleanly.
    let (status, _) = training.get("/api/history");
    assert_eq!(status, 200);
    assert_eq!(training.interrupt(), Some(0));
    let out = training.rest_of_stdout();
    assert!(
        out.contains("training is over: serving the final network"),
        "{out}"
    );
}

#[test]
fn ctrl_c_during_train_serve_saves_and_ends_the_stream() {
    let dir = TempDir::new("train-serve-stop");
    let model = dir.join("m.safetensors");
    let mut training = Training::start(&[
        "--epochs",
        "50",
        "--filters",
        "4",
        "--hidden-size",
        "20",
        "--save",
        model.to_str().unwrap(),
    ]);
    // Read the stream until a few batches went by, then press Ctrl-C.
    let response = Training::agent()
        .get(&format!("{}/api/progress", training.url))
        .call()
        .unwrap();
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let mut batches = 0;
    while batches < 3 {
        let line = lines.next().unwrap().unwrap();
        if line.starts_with("data: ") && line.contains("\"type\":\"batch\"") {
            batches += 1;
        }
    }
    assert_eq!(training.interrupt(), Some(130));
    // The stream ends with `done`: interrupted.
    let rest: Vec<Value> = lines
        .map(|l| l.unwrap())
        .filter_map(|l| {
            l.strip_prefix("data: ")
                .map(|d| serde_json::from_str(d).unwrap())
        })
        .collect();
    let done = rest.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["status"], "interrupted");
    assert!(rest.iter().any(|e| e["type"] == "interrupted"));
    assert!(model.exists());
    let out = training.rest_of_stdout();
    assert!(out.contains("continue with --resume"), "{out}");
}

#[test]
fn serve_options_without_serve_and_a_busy_port_are_one_line_errors() {
    let line = convnet_fails(&["train", "--epochs", "1", "--port", "0"], &[]);
    assert!(line.contains("--serve"), "{line}");
    let line = convnet_fails(&["train", "--epochs", "1", "--host", "0.0.0.0"], &[]);
    assert!(line.contains("--serve"), "{line}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let dir = TempDir::new("train-serve-busy");
    let model = dir.join("m.safetensors");
    let line = convnet_fails(
        &[
            "train", "--epochs", "1", "--serve", "--port", &port, "--save",
        ],
        &[&model],
    );
    assert!(line.contains(&port), "{line}");
    assert!(!model.exists(), "nothing trained nor saved");
}
