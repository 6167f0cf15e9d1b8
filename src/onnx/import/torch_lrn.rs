//! PyTorch's `nn.LocalResponseNorm` as `torch.onnx.export` (the default,
//! torch.export-based exporter) writes it: not an `LRN` node but
//! `F.local_response_norm` taken apart, nine nodes that read the input
//! twice:
//!
//! ```text
//! x ─┬─ Mul(x, x) ─ Reshape (−1, 1, C, H, W) ─ Pad (n/2 channels before, (n−1)/2 after)
//!    │    ─ AveragePool (n, 1, 1) ─ Squeeze (axis 1) ─ Mul α ─ Add k ─ Pow β ─┐
//!    └──────────────────────────────────────────────────────────── Div(x, ·) ┘
//! ```
//!
//! that is `x / (k + α/n · Σ x²)^β` over the window of `n` channels from
//! `c − ⌊n/2⌋` to `c + ⌊(n−1)/2⌋`: convnet's `lrn(n, α, β, k)`, PyTorch's
//! convention, for odd and even `n`. The pattern is matched exactly, each
//! constant checked; a graph that starts like it (x read by a `Mul(x, x)`
//! and a `Div(x, ·)`) and then differs is refused with one line naming the
//! node that differs.

use super::{lift, node_label, spec_float, Attributes, Reader, Shape};
use crate::error::{Error, Result};
use crate::layers::LrnConfig;
use crate::onnx::proto::NodeProto;
use std::collections::HashMap;

/// The nodes the pattern was made of, its layer and its output.
pub(super) struct Lrn<'g> {
    pub config: LrnConfig,
    pub nodes: Vec<usize>,
    pub output: &'g str,
}

/// One node of the pattern, with what checking it needs.
struct Step<'g> {
    index: usize,
    node: &'g NodeProto,
    label: String,
}

struct Matcher<'r, 'g> {
    reader: &'r Reader<'g>,
    nodes: &'g [NodeProto],
    readers: &'r HashMap<&'g str, Vec<usize>>,
    output_name: &'r str,
    source: &'r str,
}

const PATTERN: &str = "Mul, Reshape, Pad, AveragePool, Squeeze, Mul, Add, Pow, Div";

impl<'g> Matcher<'_, 'g> {
    fn error(&self, label: &str, what: String) -> Error {
        Error::Data(format!(
            "{}: {label}: {what} (read as part of PyTorch's local response normalization: {PATTERN})",
            self.source
        ))
    }

    fn attributes(&self, step: &Step<'g>, known: &[&str]) -> Result<Attributes<'g>> {
        let attrs = Attributes {
            node: step.label.clone(),
            map: step
                .node
                .attribute
                .iter()
                .map(|a| (a.name.as_deref().unwrap_or(""), a))
                .collect(),
        };
        match attrs.map.keys().find(|k| !known.contains(k)) {
            Some(k) => Err(self.error(&step.label, format!("attribute '{k}' is not supported"))),
            None => Ok(attrs),
        }
    }

    /// The node after `from` (whose only output is `tensor`): the only
    /// reader of `tensor`, of operator `op`, with one output, reading
    /// `tensor` first (or second, for `Mul` and `Add`) and otherwise only
    /// constants.
    fn next(&self, from: &Step<'g>, op: &str) -> Result<Step<'g>> {
        self.next_reading(from, op, None)
    }

    /// [`Self::next`], for the final `Div(x, tensor)`: reads `x` first.
    fn next_reading(&self, from: &Step<'g>, op: &str, x: Option<&str>) -> Result<Step<'g>> {
        let tensor = self.output(from)?;
        let index = match self.readers.get(tensor).map(Vec::as_slice) {
            Some(&[one]) if tensor != self.output_name => one,
            _ => {
                return Err(self.error(
                    &from.label,
                    format!("its output '{tensor}' must be read by the next node alone"),
                ))
            }
        };
        let node = &self.nodes[index];
        let step = Step {
            index,
            node,
            label: node_label(node, index),
        };
        if node.op_type() != op {
            return Err(self.error(&step.label, format!("expected {op} here")));
        }
        let at = |i: usize| node.input.get(i).map(String::as_str);
        let reads = match x {
            Some(x) => at(0) == Some(x) && at(1) == Some(tensor),
            None => at(0) == Some(tensor) || (matches!(op, "Mul" | "Add") && at(1) == Some(tensor)),
        };
        if !reads {
            return Err(self.error(&step.label, format!("does not read '{tensor}' as its data")));
        }
        if let Some(other) = node.input.iter().find(|i| {
            !i.is_empty()
                && *i != tensor
                && Some(i.as_str()) != x
                && !self.reader.constants.contains_key(i.as_str())
        }) {
            return Err(self.error(
                &step.label,
                format!("input '{other}' is neither '{tensor}' nor an initializer or constant"),
            ));
        }
        self.output(&step)?;
        Ok(step)
    }

    /// The node's one output.
    fn output(&self, step: &Step<'g>) -> Result<&'g str> {
        match &step.node.output[..] {
            [one] if !one.is_empty() => Ok(one.as_str()),
            _ => Err(self.error(&step.label, "needs exactly one output".into())),
        }
    }

    /// The constant input that is not the data (`tensor`): one number.
    fn scalar(&self, step: &Step<'g>, tensor: &str, what: &str) -> Result<f32> {
        let Some(name) = step.node.input.iter().find(|i| i.as_str() != tensor) else {
            return Err(self.error(&step.label, format!("has no {what}")));
        };
        if step.node.input.len() != 2 {
            return Err(self.error(&step.label, "needs two inputs".into()));
        }
        let (_, values) = self.reader.floats(name, &step.label)?;
        match values[..] {
            [v] if v.is_finite() => Ok(v),
            _ => Err(self.error(
                &step.label,
                format!("{what} '{name}' is not one finite number"),
            )),
        }
    }

    fn ints(&self, step: &Step<'g>, i: usize, what: &str) -> Result<Vec<i64>> {
        match step.node.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => Ok(self.reader.ints(name, &step.label)?.1),
            None => Err(self.error(&step.label, format!("has no {what} input"))),
        }
    }
}

/// If `x`, of shape `shape`, is read by the `Mul(x, x)` and the `Div(x, ·)`
/// that start and end PyTorch's local response normalization (`readers`:
/// the nodes that read it, a node once per input), the LRN layer it is;
/// `None` when the readers are something else; an error when they start
/// the pattern and something in it differs.
pub(super) fn recognise<'g>(
    reader: &Reader<'g>,
    nodes: &'g [NodeProto],
    readers: &HashMap<&'g str, Vec<usize>>,
    x: &str,
    shape: Shape,
    output_name: &str,
) -> Result<Option<Lrn<'g>>> {
    let mut distinct = readers.get(x).cloned().unwrap_or_default();
    distinct.sort_unstable();
    distinct.dedup();
    let [a, b] = distinct[..] else {
        return Ok(None);
    };
    let square = |i: usize| nodes[i].op_type() == "Mul" && nodes[i].input == [x, x];
    let divide = |i: usize| {
        nodes[i].op_type() == "Div" && nodes[i].input.first().map(String::as_str) == Some(x)
    };
    let (mul, div) = match (a, b) {
        (a, b) if square(a) && divide(b) => (a, b),
        (a, b) if square(b) && divide(a) => (b, a),
        _ => return Ok(None),
    };
    let m = Matcher {
        reader,
        nodes,
        readers,
        output_name,
        source: reader.source,
    };
    let first = Step {
        index: mul,
        node: &nodes[mul],
        label: node_label(&nodes[mul], mul),
    };
    m.attributes(&first, &[])?;
    m.output(&first)?;
    let Shape::Image { c, h, w } = shape else {
        return Err(m.error(&first.label, "needs (N, C, H, W) input".into()));
    };
    let (c, h, w) = (c as i64, h as i64, w as i64);

    // Reshape to (N, 1, C, H, W).
    let reshape = m.next(&first, "Reshape")?;
    let attrs = m.attributes(&reshape, &["allowzero"])?;
    let copy = lift(m.source, attrs.int("allowzero", 0))? == 0;
    let target = m.ints(&reshape, 1, "shape")?;
    let ok = match target[..] {
        [-1, 1, tc, th, tw] => (tc, th, tw) == (c, h, w),
        [0, 1, tc, th, tw] => copy && (tc, th) == (c, h) && (tw == w || tw == -1),
        _ => false,
    };
    if !ok || reshape.node.input.len() != 2 {
        return Err(m.error(
            &reshape.label,
            format!("shape {target:?} is not (-1, 1, {c}, {h}, {w})"),
        ));
    }

    // Pad the channels: before first, after second.
    let pad = m.next(&reshape, "Pad")?;
    let attrs = m.attributes(&pad, &["mode"])?;
    if !matches!(
        lift(m.source, attrs.string("mode"))?,
        None | Some(b"constant")
    ) {
        return Err(m.error(&pad.label, "mode must be constant".into()));
    }
    let pads = m.ints(&pad, 1, "pads")?;
    let (before, after) = match pads[..] {
        [0, 0, b, 0, 0, 0, 0, a, 0, 0] if b >= 0 && a >= 0 => (b, a),
        _ => {
            return Err(m.error(
                &pad.label,
                format!("pads {pads:?} do not pad the channels alone"),
            ))
        }
    };
    if let Some(value) = pad.node.input.get(2).filter(|s| !s.is_empty()) {
        let (_, v) = m.reader.floats(value, &pad.label)?;
        if v[..] != [0.0] {
            return Err(m.error(&pad.label, format!("pads with {v:?}, not 0")));
        }
    }
    if pad.node.input.iter().skip(3).any(|s| !s.is_empty()) {
        return Err(m.error(&pad.label, "an axes input is not supported".into()));
    }

    // The mean over n channels: (n, 1, 1), stride 1, no padding of its own.
    let pool = m.next(&pad, "AveragePool")?;
    let attrs = m.attributes(
        &pool,
        &[
            "kernel_shape",
            "strides",
            "pads",
            "ceil_mode",
            "count_include_pad",
            "auto_pad",
            "dilations",
        ],
    )?;
    let all = |name: &str, value: i64| -> Result<bool> {
        Ok(lift(m.source, attrs.ints(name))?.is_none_or(|v| v.iter().all(|&x| x == value)))
    };
    let kernel = lift(m.source, attrs.ints("kernel_shape"))?.unwrap_or(&[]);
    let size = match kernel {
        &[n, 1, 1] if n >= 1 && n <= u32::MAX as i64 => n,
        _ => {
            return Err(m.error(
                &pool.label,
                format!("kernel_shape {kernel:?} is not (n, 1, 1)"),
            ))
        }
    };
    if !all("strides", 1)?
        || !all("pads", 0)?
        || !all("dilations", 1)?
        || lift(m.source, attrs.int("ceil_mode", 0))? != 0
        || !matches!(
            lift(m.source, attrs.string("auto_pad"))?,
            None | Some(b"NOTSET") | Some(b"")
        )
        || pool.node.input.len() != 1
    {
        return Err(m.error(
            &pool.label,
            "only strides 1, no padding, no dilation, ceil_mode 0".into(),
        ));
    }
    if (before, after) != (size / 2, (size - 1) / 2) {
        return Err(m.error(
            &pad.label,
            format!(
                "a window of {size} channels from {before} below to {after} above is not PyTorch's ({} below, {} above)",
                size / 2,
                (size - 1) / 2
            ),
        ));
    }

    // Back to (N, C, H, W).
    let squeeze = m.next(&pool, "Squeeze")?;
    let attrs = m.attributes(&squeeze, &["axes"])?;
    let axes = match (
        squeeze.node.input.len(),
        lift(m.source, attrs.ints("axes"))?,
    ) {
        (2, None) => m.ints(&squeeze, 1, "axes")?,
        (1, Some(axes)) => axes.to_vec(),
        _ => return Err(m.error(&squeeze.label, "needs its axes".into())),
    };
    if axes != [1] {
        return Err(m.error(&squeeze.label, format!("axes {axes:?} are not [1]")));
    }

    // · α + k, ^β.
    let scale = m.next(&squeeze, "Mul")?;
    m.attributes(&scale, &[])?;
    let alpha = m.scalar(&scale, m.output(&squeeze)?, "alpha")?;
    let add = m.next(&scale, "Add")?;
    m.attributes(&add, &[])?;
    let k = m.scalar(&add, m.output(&scale)?, "k")?;
    let pow = m.next(&add, "Pow")?;
    m.attributes(&pow, &[])?;
    if pow.node.input.first().map(String::as_str) != Some(m.output(&add)?) {
        return Err(m.error(&pow.label, "the base must be its first input".into()));
    }
    let beta = m.scalar(&pow, m.output(&add)?, "beta")?;
    if !(k > 0.0 && alpha >= 0.0) {
        return Err(m.error(
            &add.label,
            format!("k {k} and alpha {alpha}: convnet needs k > 0 and alpha ≥ 0"),
        ));
    }

    // x divided by it.
    let last = m.next_reading(&pow, "Div", Some(x))?;
    if last.index != div || last.node.input.len() != 2 {
        return Err(m.error(
            &last.label,
            format!("does not divide '{x}' by '{}'", m.output(&pow)?),
        ));
    }
    m.attributes(&last, &[])?;
    Ok(Some(Lrn {
        config: LrnConfig {
            size: size as usize,
            alpha: spec_float(alpha),
            beta: spec_float(beta),
            k: spec_float(k),
        },
        nodes: vec![
            mul,
            reshape.index,
            pad.index,
            pool.index,
            squeeze.index,
            scale.index,
            add.index,
            pow.index,
            last.index,
        ],
        output: m.output(&last)?,
    }))
}
