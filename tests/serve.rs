//! `convnet serve` through its HTTP API, on 127.0.0.1 with a port the system
//! chooses: the numbers it serves are the library's and `convnet predict`'s,
//! bad requests get a 4xx and the server keeps serving, Ctrl-C stops it.

mod common;

use common::{convnet_ok, TempDir};
use convnet::checkpoint;
use convnet::data::load_embedded_mnist10k;
use convnet::Tensor;
use image::{GrayImage, Luma};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `convnet serve`, killed when dropped.
struct Served {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_convnet"))
            .args(["serve", "--port", "0", "--threads", "2"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) else {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("no URL in {line:?}; stderr: {err}");
        };
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Served {
            url: url.trim_end_matches('/').to_string(),
            child,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let response = self.agent.get(&format!("{}{path}", self.url)).call();
        reply(response)
    }

    fn post_bytes(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let response = self
            .agent
            .post(&format!("{}{path}", self.url))
            .header("Content-Type", "application/json")
            .send(body);
        reply(response)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_bytes(path, body.to_string().as_bytes())
    }
}

fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A checkpoint of SimpleConvNet with its initial (He) weights: the numbers
/// are what is compared, not the accuracy.
fn untrained_checkpoint(dir: &TempDir) -> std::path::PathBuf {
    let model = dir.join("model.safetensors");
    convnet_ok(
        &["train", "--epochs", "0", "--seed", "3", "--save"],
        &[&model],
    );
    model
}

/// Test digit `i` as the network's input and as a PNG file with the same values.
fn digit(i: usize, png: &Path) -> Vec<f32> {
    let data = load_embedded_mnist10k().unwrap();
    let pixels = data.test.image(i).to_vec();
    let byte = |x: u32, y: u32| (pixels[(y * 28 + x) as usize] * 255.0).round() as u8;
    GrayImage::from_fn(28, 28, |x, y| Luma([byte(x, y)]))
        .save(png)
        .unwrap();
    // Test digits are bytes / 255 already, as predict reads the PNG.
    pixels
}

#[test]
fn served_numbers_are_the_library_s_and_predict_s() {
    let dir = TempDir::new("serve-numbers");
    let model = untrained_checkpoint(&dir);
    let png = dir.join("digit.png");
    let image = digit(7, &png);
    let predicted = convnet_ok(
        &["predict", "--json", "--top-k", "10", "--checkpoint"],
        &[&model, &png],
    );
    let predicted: Value = serde_json::from_str(predicted.trim()).unwrap();

    let server = Served::start(&["--checkpoint", model.to_str().unwrap()]);
    let (status, info) = server.get("/api/model");
    assert_eq!(status, 200, "{info}");
    let names: Vec<&str> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["conv1", "relu1", "pool1", "fc1", "relu2", "fc2"]);
    assert_eq!(info["layers"][0]["params"], 30 * 25 + 30);
    assert_eq!(info["layers"][0]["shape"], json!([30, 24, 24]));
    assert_eq!(info["drawable"], true);

    let (status, forward) = server.post("/api/forward", &json!({ "image": image }));
    assert_eq!(status, 200, "{forward}");
    // The probabilities are predict's, to the last bit.
    let probabilities = floats(&forward["probabilities"]);
    for p in predicted["predictions"].as_array().unwrap() {
        let index = p["index"].as_u64().unwrap() as usize;
        assert_eq!(
            probabilities[index],
            p["probability"].as_f64().unwrap() as f32,
            "class {index}"
        );
    }
    assert_eq!(
        forward["prediction"], predicted["predictions"][0]["index"],
        "{forward:?}"
    );

    // Every layer's output is the library's layer_outputs, exactly.
    let (mut net, _) = checkpoint::load(&model).unwrap();
    let x = Tensor::from_vec(&[1, 1, 28, 28], image.clone()).unwrap();
    let outputs = net.layer_outputs(&x).unwrap();
    let served = forward["layers"].as_array().unwrap();
    assert_eq!(served.len(), outputs.len());
    for (s, o) in served.iter().zip(&outputs) {
        assert_eq!(s["name"], o.name.as_str());
        assert_eq!(floats(&s["data"]), o.output.data(), "{}", o.name);
        assert_eq!(
            s["shape"].as_array().unwrap().len(),
            o.output.shape().len() - 1
        );
    }
    assert_eq!(floats(&forward["input"]), image);

    // The page's compact form: every value as a byte of its layer's range.
    let (status, compact) = server.post("/api/forward", &json!({"image": image, "maps": "u8"}));
    assert_eq!(status, 200, "{compact}");
    assert_eq!(compact["probabilities"], forward["probabilities"]);
    for (s, o) in compact["layers"].as_array().unwrap().iter().zip(&outputs) {
        assert!(s.get("data").is_none());
        let hex = s["u8"].as_str().unwrap();
        assert_eq!(hex.len(), 2 * o.output.len(), "{}", o.name);
        let (min, max) = (s["min"].as_f64().unwrap(), s["max"].as_f64().unwrap());
        let step = (max - min) / 255.0;
        for (i, &v) in o.output.data().iter().enumerate() {
            let q = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            let back = min + q as f64 * step;
            assert!(
                (back - v as f64).abs() <= step / 2.0 + 1e-6,
                "{} [{i}]: {v} sent as {q}",
                o.name
            );
        }
    }

    // A convolution unit: the patch, filter and products add up, with the
    // bias, to the layer's output there; the ReLU after it clips it.
    let conv1 = outputs[0].output.data();
    let relu1 = outputs[1].output.data();
    for (channel, y, x) in [(0, 0, 0), (5, 10, 12), (29, 23, 23), (12, 6, 9)] {
        let request = json!({"image": image, "layer": 0, "channel": channel, "y": y, "x": x});
        let (status, unit) = server.post("/api/unit", &request);
        assert_eq!(status, 200, "{unit}");
        let at = (channel * 24 + y) * 24 + x;
        assert_eq!(unit["output"].as_f64().unwrap() as f32, conv1[at]);
        let total = unit["total"].as_f64().unwrap();
        let sum = unit["sum"].as_f64().unwrap() + unit["bias"].as_f64().unwrap();
        assert!((total - sum).abs() < 1e-12);
        assert!(
            (total - conv1[at] as f64).abs() <= 1e-5 * (1.0 + total.abs()),
            "{total} vs {}",
            conv1[at]
        );
        let products = floats(&unit["products"]);
        let (patch, filter) = (floats(&unit["patch"]), floats(&unit["filter"]));
        assert_eq!(products.len(), 25);
        for i in 0..25 {
            assert_eq!(products[i], patch[i] * filter[i]);
            let (ky, kx) = (i / 5, i % 5);
            assert_eq!(patch[i], image[(y + ky) * 28 + x + kx]);
        }
        assert_eq!(unit["relu"]["output"].as_f64().unwrap() as f32, relu1[at]);
        assert_eq!(relu1[at], conv1[at].max(0.0));
    }
    // A max-pooling unit: its window's winner is its output.
    let pool1 = outputs[2].output.data();
    let request = json!({"image": image, "layer": 2, "channel": 4, "y": 5, "x": 7});
    let (status, unit) = server.post("/api/unit", &request);
    assert_eq!(status, 200, "{unit}");
    let window: Vec<f32> = floats(&unit["values"]);
    let expected: Vec<f32> = [(10, 14), (10, 15), (11, 14), (11, 15)]
        .iter()
        .map(|&(y, x)| relu1[(4 * 24 + y) * 24 + x])
        .collect();
    assert_eq!(window, expected);
    let best = expected.iter().copied().fold(f32::MIN, f32::max);
    assert_eq!(unit["winner"]["value"].as_f64().unwrap() as f32, best);
    assert_eq!(pool1[(4 * 12 + 5) * 12 + 7], best);

    // Filters: conv1's weights and biases as the checkpoint holds them.
    let (status, filters) = server.get("/api/filters");
    assert_eq!(status, 200);
    assert_eq!(filters["layers"].as_array().unwrap().len(), 1);
    assert_eq!(filters["layers"][0]["shape"], json!([30, 1, 5, 5]));
    assert_eq!(floats(&filters["layers"][0]["weight"]).len(), 750);

    // Samples: real test digits with their labels; an untrained network
    // gets some wrong, and those are among them.
    let (status, samples) = server.get("/api/samples");
    assert_eq!(status, 200);
    let samples = samples["samples"].as_array().unwrap();
    assert!(!samples.is_empty());
    let data = load_embedded_mnist10k().unwrap();
    for s in samples {
        let i = s["index"].as_u64().unwrap() as usize;
        assert_eq!(s["label"].as_u64().unwrap(), data.test.labels[i] as u64);
        assert_eq!(floats(&s["image"]), data.test.image(i).to_vec());
    }
    assert!(samples.iter().any(|s| s["correct"] == false));

    // The page and its assets.
    let page = server
        .agent
        .get(&format!("{}/", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(page.contains("<canvas id=\"draw\""));
    let (status, _) = server.get("/app.js");
    assert_eq!(status, 200);
}

#[test]
fn a_drawing_is_centred_like_mnist_and_classified() {
    let dir = TempDir::new("serve-drawing");
    let model = untrained_checkpoint(&dir);
    let server = Served::start(&["--checkpoint", model.to_str().unwrap()]);
    // A vertical bar in the top-left corner of a 100×100 drawing.
    let mut pixels = vec![0.0f32; 100 * 100];
    for y in 5..45 {
        for x in 5..13 {
            pixels[y * 100 + x] = 1.0;
        }
    }
    let request = json!({"drawing": {"width": 100, "height": 100, "pixels": pixels}});
    let (status, forward) = server.post("/api/forward", &request);
    assert_eq!(status, 200, "{forward}");
    let input = floats(&forward["input"]);
    assert_eq!(input.len(), 784);
    let rows: Vec<usize> = (0..28)
        .filter(|&y| (0..28).any(|x| input[y * 28 + x] > 0.0))
        .collect();
    assert_eq!(rows.len(), 20, "the bar is 20 pixels tall");
    assert!(input[14 * 28 + 14] > 0.9, "and in the middle");
    assert_eq!(floats(&forward["probabilities"]).len(), 10);
}

#[test]
fn bad_requests_get_a_4xx_and_the_server_keeps_serving() {
    let dir = TempDir::new("serve-bad");
    let model = untrained_checkpoint(&dir);
    let server = Served::start(&["--checkpoint", model.to_str().unwrap()]);
    let zeros = vec![0.0f32; 784];
    let posts: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/api/forward", b"{not json".to_vec(), 400),
        ("/api/forward", b"".to_vec(), 400),
        ("/api/forward", b"[1, 2, 3]".to_vec(), 400),
        (
            "/api/forward",
            json!({"image": [1, 2, 3]}).to_string().into_bytes(),
            400,
        ),
        (
            "/api/forward",
            json!({"image": vec!["a"; 784]}).to_string().into_bytes(),
            400,
        ),
        (
            "/api/forward",
            json!({"image": vec![1e300; 784]}).to_string().into_bytes(),
            400,
        ),
        (
            "/api/forward",
            json!({"drawing": {"width": 10, "height": 10, "pixels": [0.5]}})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/forward",
            json!({"drawing": {"width": -1, "height": 10, "pixels": []}})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/unit",
            json!({"image": zeros, "layer": 99, "channel": 0, "y": 0, "x": 0})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/unit",
            json!({"image": zeros, "layer": 0, "channel": 30, "y": 0, "x": 0})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/unit",
            json!({"image": zeros, "layer": 0, "channel": 0, "y": 24, "x": 0})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/unit",
            json!({"image": zeros, "layer": 3, "channel": 100})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/unit",
            json!({"image": zeros, "layer": "conv1"})
                .to_string()
                .into_bytes(),
            400,
        ),
        (
            "/api/forward",
            json!({"image": zeros, "maps": "png"})
                .to_string()
                .into_bytes(),
            400,
        ),
        ("/api/model", b"{}".to_vec(), 405),
        ("/api/nothing", b"{}".to_vec(), 404),
        // Over the 4 MiB limit.
        ("/api/forward", vec![b' '; 5 << 20], 413),
    ];
    for (path, body, expected) in posts {
        let (status, reply) = server.post_bytes(path, &body);
        assert_eq!(
            status,
            expected,
            "{path} {}: {reply}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(reply["error"].is_string(), "{reply}");
        // Still serving.
        let (status, _) = server.get("/api/model");
        assert_eq!(status, 200);
    }
    for (path, expected) in [
        ("/nothing", 404),
        ("/api/forward", 405),
        ("/../etc/passwd", 404),
    ] {
        let (status, reply) = server.get(path);
        assert_eq!(status, expected, "{path}: {reply}");
    }
    let (status, _) = server.post("/api/forward", &json!({ "image": zeros }));
    assert_eq!(status, 200);
}

#[test]
fn concurrent_requests_get_the_same_answers() {
    let dir = TempDir::new("serve-concurrent");
    let model = untrained_checkpoint(&dir);
    let server = Served::start(&["--checkpoint", model.to_str().unwrap()]);
    let image = load_embedded_mnist10k().unwrap().test.image(3).to_vec();
    let request = json!({ "image": image });
    let (_, alone) = server.post("/api/forward", &request);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| server.post("/api/forward", &request)))
            .collect();
        for handle in handles {
            let (status, reply) = handle.join().unwrap();
            assert_eq!(status, 200);
            assert_eq!(reply["layers"], alone["layers"]);
            assert_eq!(reply["probabilities"], alone["probabilities"]);
        }
    });
}

#[test]
fn ctrl_c_stops_the_server_and_a_busy_port_is_one_line() {
    let dir = TempDir::new("serve-stop");
    let model = untrained_checkpoint(&dir);
    let mut server = Served::start(&["--checkpoint", model.to_str().unwrap()]);
    let port = server.url.rsplit(':').next().unwrap().to_string();

    // The same port again: one line, non-zero exit.
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["serve", "--port", &port, "--checkpoint"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with("convnet: error:"), "{err}");

    let status = Command::new("kill")
        .args(["-INT", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_a_checkpoint_the_cached_default_network_is_served() {
    let dir = TempDir::new("serve-default");
    let model = untrained_checkpoint(&dir);
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(&model, cache.join("serve-simple-mnist-10k.safetensors")).unwrap();
    let server = Served::start(&["--cache-dir", cache.to_str().unwrap()]);
    let (status, info) = server.get("/api/model");
    assert_eq!(status, 200);
    assert_eq!(info["model"], "simple");

    // A missing checkpoint: one line, non-zero exit.
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .args(["serve", "--port", "0", "--checkpoint"])
        .arg(dir.join("missing.safetensors"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}
