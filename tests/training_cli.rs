//! `convnet train`'s training options end to end: a run with augmentation,
//! validation and an averaged model resumes exactly; early stopping keeps
//! the best epoch in the checkpoint; recipes print themselves in full; and
//! `eval --tta`.

mod common;

use common::{convnet_fails, convnet_ok as convnet, weights, TempDir};
use convnet::checkpoint;

const MODEL: &str = "conv(8,3)-bn-relu-maxpool(2)-dropout(0.3)-affine(32)-relu-affine(10)";

#[test]
fn a_run_with_augmentation_validation_and_an_average_resumes_exactly() {
    let dir = TempDir::new("options-resume");
    let whole = dir.path().join("whole.safetensors");
    let parts = dir.path().join("parts.safetensors");
    let common = [
        "train",
        "--model",
        MODEL,
        "--seed",
        "4",
        "--threads",
        "2",
        "--augment",
        "crop:2",
        "--validation",
        "500",
        "--ema",
        "0.99",
    ];
    let out = convnet(
        &[&common[..], &["--epochs", "2", "--save"]].concat(),
        &[&whole],
    );
    assert!(out.contains("val acc") && out.contains("ema acc"), "{out}");
    assert!(out.contains("averaged model's test accuracy"), "{out}");
    convnet(
        &[&common[..], &["--epochs", "1", "--save"]].concat(),
        &[&parts],
    );
    // The resumed run continues the average without being told --ema again.
    let resume_args: Vec<&str> = common
        .iter()
        .copied()
        .filter(|a| *a != "--ema" && *a != "0.99")
        .collect();
    let resumed = convnet(
        &[&resume_args[..], &["--epochs", "2", "--resume"]].concat(),
        &[&parts],
    );
    assert!(resumed.contains("ema acc"), "{resumed}");
    let ema = |p: &std::path::Path| {
        p.with_file_name(format!(
            "{}.ema.safetensors",
            p.file_stem().unwrap().to_string_lossy()
        ))
    };
    for (a, b) in [(whole.clone(), parts.clone()), (ema(&whole), ema(&parts))] {
        let (x, y) = (weights(&a), weights(&b));
        assert_eq!(x.len(), y.len());
        for ((name, u), (_, v)) in x.iter().zip(&y) {
            assert_eq!(u, v, "{name} of {} differs after resuming", a.display());
        }
    }
    // The average is not the last weights, and an averaged model is a
    // checkpoint like any other.
    assert_ne!(weights(&whole), weights(&ema(&whole)));
    let eval = convnet(&["eval", "--checkpoint"], &[&ema(&whole)]);
    assert!(eval.contains("accuracy:"), "{eval}");
    // An averaged model from another run is refused, not silently mixed in.
    let other = dir.path().join("other.safetensors");
    convnet(
        &[&common[..], &["--epochs", "1", "--save"]].concat(),
        &[&other],
    );
    std::fs::copy(ema(&other), ema(&parts)).unwrap();
    let error = convnet_fails(
        &[&resume_args[..], &["--epochs", "3", "--resume"]].concat(),
        &[&parts],
    );
    assert!(error.contains("is not the averaged model of"), "{error}");
}

#[test]
fn early_stopping_keeps_the_best_epoch_in_the_checkpoint() {
    let dir = TempDir::new("early-stop");
    let path = dir.path().join("best.safetensors");
    // A high rate makes the validation accuracy wander, so that some
    // epochs are not the best.
    let out = convnet(
        &[
            "train",
            "--model",
            MODEL,
            "--epochs",
            "6",
            "--validation",
            "1000",
            "--early-stop",
            "2",
            "--lr",
            "0.02",
            "--seed",
            "3",
            "--save",
        ],
        &[&path],
    );
    let epochs: Vec<&str> = out.lines().filter(|l| l.starts_with("epoch ")).collect();
    let best_line = epochs
        .iter()
        .rposition(|l| l.contains("%*"))
        .unwrap_or_else(|| panic!("no epoch marked best:\n{out}"));
    let (_, info) = checkpoint::load(&path).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&info.extra["metrics"]).unwrap();
    assert_eq!(
        metrics["epoch"].as_u64(),
        Some(best_line as u64 + 1),
        "the checkpoint must hold the last epoch marked best:\n{out}"
    );
    assert!(
        out.contains(&format!("(epoch {};", best_line + 1)),
        "the final test accuracy is the best epoch's:\n{out}"
    );
    // Stopped early or ran out of epochs: either way, no later epoch is
    // better than the kept one for longer than the patience.
    assert!(epochs.len() - (best_line + 1) <= 2, "{out}");
    let error = convnet_fails(&["train", "--epochs", "1", "--early-stop", "2"], &[]);
    assert!(error.contains("validation"), "{error}");
}

#[test]
fn a_recipe_prints_itself_in_full_and_options_override_it() {
    let dir = TempDir::new("recipe");
    let path = dir.path().join("r.safetensors");
    // --epochs 0 saves the recipe's initial network: its model is the spec.
    let out = convnet(
        &[
            "train",
            "--recipe",
            "fashion-fast",
            "--dataset",
            "mnist-10k",
            "--epochs",
            "0",
            "--save",
        ],
        &[&path],
    );
    let recipe = convnet::train::recipe::find("fashion-fast").unwrap();
    assert!(out.contains(&recipe.command_line()), "{out}");
    assert!(out.contains("recipe fashion-fast:"), "{out}");
    assert!(
        out.contains("overridden on the command line: --epochs\n"),
        "{out}"
    );
    let (_, info) = checkpoint::load(&path).unwrap();
    assert_eq!(info.model, recipe.model);
    let error = convnet_fails(&["train", "--recipe", "nonsense"], &[]);
    assert!(
        error.contains("unknown recipe 'nonsense'") && error.contains("fashion-fast"),
        "{error}"
    );
}

#[test]
fn eval_with_test_time_augmentation() {
    let dir = TempDir::new("tta");
    let path = dir.path().join("n.safetensors");
    convnet(
        &["train", "--model", MODEL, "--epochs", "1", "--save"],
        &[&path],
    );
    let plain = convnet(&["eval", "--checkpoint"], &[&path]);
    let tta = convnet(&["eval", "--tta", "--checkpoint"], &[&path]);
    assert!(tta.contains("averaged with its mirror image"), "{tta}");
    let accuracy = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("accuracy:"))
            .unwrap()
            .to_string()
    };
    // Digits are not mirror-symmetric: averaging with the mirror changes the answers.
    assert_ne!(accuracy(&plain), accuracy(&tta));
}
