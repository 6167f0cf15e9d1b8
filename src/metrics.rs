//! The metrics file that `convnet train --metrics FILE` writes and `convnet
//! plot` reads: one JSON object per epoch (JSON lines), e.g.
//!
//! ```text
//! {"epoch":1,"train_loss":0.31,"train_acc":0.91,"test_loss":0.12,"test_acc":0.96,"seconds":4.2,"images_per_second":1900}
//! ```
//!
//! [`parse_metrics`] reads it back strictly: every line (blank lines aside)
//! must be a JSON object with a whole `epoch` and finite `train_loss`,
//! `test_loss`, `train_acc` and `test_acc`; anything else is an
//! [`Error::Data`] naming the file and the line.
//!
//! ```
//! use convnet::metrics::parse_metrics;
//! let text = r#"{"epoch":1,"train_loss":0.5,"train_acc":0.8,"test_loss":0.4,"test_acc":0.85}"#;
//! let points = parse_metrics(text, "m.jsonl").unwrap();
//! assert_eq!((points[0].epoch, points[0].test_acc), (1, 0.85));
//! assert!(parse_metrics("{\"epoch\":1}", "m.jsonl").is_err());
//! ```

use crate::error::{Error, Result};
use serde_json::Value;

/// The most lines a metrics file may have (one per epoch).
pub const MAX_EPOCHS: usize = 1_000_000;

/// One line of a metrics file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochPoint {
    /// The epoch (1-based).
    pub epoch: u32,
    /// The mean training loss over the epoch's mini-batches.
    pub train_loss: f64,
    /// The loss on the test set after the epoch.
    pub test_loss: f64,
    /// The training accuracy (a fraction in [0, 1]).
    pub train_acc: f64,
    /// The test accuracy (a fraction in [0, 1]).
    pub test_acc: f64,
}

/// Parses a metrics file's text; an error names `source` and the line at
/// fault. A file with no epochs is an error too.
pub fn parse_metrics(text: &str, source: &str) -> Result<Vec<EpochPoint>> {
    let mut points = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{source} line {}", index + 1);
        if points.len() == MAX_EPOCHS {
            return Err(Error::Data(format!(
                "{}: more than {MAX_EPOCHS} epochs",
                at()
            )));
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Error::Data(format!("{}: not JSON: {e}", at())))?;
        let number = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
                .ok_or_else(|| Error::Data(format!("{}: no number '{key}'", at())))
        };
        let epoch = value
            .get("epoch")
            .and_then(Value::as_u64)
            .and_then(|e| u32::try_from(e).ok())
            .ok_or_else(|| Error::Data(format!("{}: no whole number 'epoch'", at())))?;
        points.push(EpochPoint {
            epoch,
            train_loss: number("train_loss")?,
            test_loss: number("test_loss")?,
            train_acc: number("train_acc")?,
            test_acc: number("test_acc")?,
        });
    }
    if points.is_empty() {
        return Err(Error::Data(format!("{source} holds no epochs")));
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_lines_train_writes_and_names_a_bad_one() {
        let good = r#"{"epoch":1,"train_loss":0.5,"train_acc":0.8,"test_loss":0.4,"test_acc":0.85,"seconds":1.0}"#;
        let text = format!("{good}\n\n{}\n", good.replace("\"epoch\":1", "\"epoch\":2"));
        let points = parse_metrics(&text, "m.jsonl").unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].epoch, 2);
        assert_eq!(points[0].test_acc, 0.85);
        let bad = format!("{good}\n{{\"epoch\":2}}\n");
        let e = parse_metrics(&bad, "m.jsonl").unwrap_err();
        assert_eq!(e.to_string(), "m.jsonl line 2: no number 'train_loss'");
        let e = parse_metrics("", "m.jsonl").unwrap_err();
        assert_eq!(e.to_string(), "m.jsonl holds no epochs");
        let e = parse_metrics("[1,", "m.jsonl").unwrap_err().to_string();
        assert!(e.starts_with("m.jsonl line 1: not JSON: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
