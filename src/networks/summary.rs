//! A table of a network's layers, like torchinfo's `summary`: each layer's
//! output shape, parameter count and forward FLOPs (a multiply-add counts 2),
//! with totals.
//!
//! ```
//! use convnet::networks::{build_model, summary::summarize, ModelOptions};
//! use convnet::Rng;
//! let mut net = build_model::<f32>("simple", &ModelOptions::default(), [1, 28, 28], 10, &mut Rng::new(0)).unwrap();
//! let table = summarize(&mut net).unwrap();
//! assert_eq!(table.rows[0].output_shape, [1, 30, 24, 24]);
//! assert_eq!(table.total_params, 433_890);
//! ```

use super::Network;
use crate::error::Result;
use crate::tensor::Float;
use std::fmt;

/// One layer's line.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// The layer's name (`conv1`, ...).
    pub name: String,
    /// The layer's type (`"Convolution"`, ...).
    pub kind: &'static str,
    /// For one image (batch 1).
    pub output_shape: Vec<usize>,
    /// Its number of learnable parameters.
    pub params: usize,
    /// Forward FLOPs for one image.
    pub flops: u64,
}

/// The whole table.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// One input image: (C, H, W).
    pub input_shape: [usize; 3],
    /// One row per layer, in order.
    pub rows: Vec<SummaryRow>,
    /// The network's learnable parameters.
    pub total_params: usize,
    /// The network's forward FLOPs for one image.
    pub total_flops: u64,
}

/// Shapes, parameters and FLOPs of every layer for one image.
pub fn summarize<T: Float>(net: &mut Network<T>) -> Result<Summary> {
    let shapes = net.shapes(1)?;
    let mut rows = Vec::new();
    for (i, named) in net.layers.iter_mut().enumerate() {
        let params = named.layer.params().iter().map(|p| p.value.len()).sum();
        rows.push(SummaryRow {
            name: named.name.clone(),
            kind: named.layer.kind(),
            output_shape: shapes[i + 1].clone(),
            params,
            flops: named.layer.flops(&shapes[i]),
        });
    }
    Ok(Summary {
        input_shape: net.input_shape,
        total_params: rows.iter().map(|r| r.params).sum(),
        total_flops: rows.iter().map(|r| r.flops).sum(),
        rows,
    })
}

/// `1234567` → `1,234,567`.
pub fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shape = |s: &[usize]| format!("{s:?}");
        writeln!(
            f,
            "{:<12} {:<18} {:<20} {:>14} {:>18}",
            "layer", "type", "output shape", "parameters", "FLOPs"
        )?;
        writeln!(f, "{}", "-".repeat(86))?;
        let [c, h, w] = self.input_shape;
        writeln!(f, "{:<12} {:<18} {:<20}", "input", "", shape(&[1, c, h, w]))?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<12} {:<18} {:<20} {:>14} {:>18}",
                r.name,
                r.kind,
                shape(&r.output_shape),
                with_commas(r.params as u64),
                with_commas(r.flops)
            )?;
        }
        writeln!(f, "{}", "-".repeat(86))?;
        writeln!(
            f,
            "total parameters: {}",
            with_commas(self.total_params as u64)
        )?;
        write!(
            f,
            "forward FLOPs per image: {}",
            with_commas(self.total_flops)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas() {
        assert_eq!(with_commas(0), "0");
        assert_eq!(with_commas(999), "999");
        assert_eq!(with_commas(62_378_344), "62,378,344");
    }
}
