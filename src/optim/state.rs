//! Per-parameter state buffers, shared by the optimizers that keep them
//! (the book's `self.v`, `self.h`, `self.m` dictionaries).
//!
//! The book keys its state by parameter name (`self.v[key]`); here the
//! network always passes its parameters in the same order, so the state is a
//! `Vec` with one buffer per *position* in that list. A buffer is created,
//! filled with zeros, on the first [`step`](super::Optimizer::step), exactly
//! like the book's `if self.v is None:` branch, and reused on every later step.
//!
//! For checkpoints, each buffer is written as a `("<prefix>.<index>", data)`
//! entry, e.g. `("v.0", ..)`, `("v.1", ..)`.
//!
//! ```
//! use convnet::layers::Param;
//! use convnet::optim::{Momentum, MomentumConfig, Optimizer};
//! use convnet::Tensor;
//! let mut w = Tensor::from_vec(&[2], vec![1.0f64, -2.0]).unwrap();
//! let mut dw = Tensor::from_vec(&[2], vec![0.5, 0.25]).unwrap();
//! let mut opt = Momentum::new(MomentumConfig::default());
//! assert!(opt.state().is_empty()); // nothing until the first step
//! opt.step(&mut [Param { name: "weight", value: &mut w, grad: &mut dw }]);
//! let state = opt.state();
//! assert_eq!(state.len(), 1);
//! assert_eq!(state[0].0, "v.0");
//! ```

use crate::error::{Error, Result};
use crate::layers::Param;
use crate::tensor::Float;

/// Makes `slots` hold one buffer per parameter: zeros on the first call,
/// then the existing buffers, checked against the parameters.
///
/// # Panics
/// If the parameter list is not the one the state was made for (another
/// length, or a parameter whose size changed), or a gradient's size differs
/// from its parameter's: both are programming errors in the caller.
pub(super) fn ensure_slots<T: Float>(
    optimizer: &str,
    slots: &mut Vec<Vec<T>>,
    params: &[Param<'_, T>],
) {
    if slots.is_empty() {
        slots.extend(params.iter().map(|p| vec![T::zero(); p.value.len()]));
    }
    assert_eq!(
        slots.len(),
        params.len(),
        "{optimizer}: step got {} parameters but its state was made for {}; \
         pass the same parameter list, in the same order, on every step",
        params.len(),
        slots.len(),
    );
    for (i, (slot, p)) in slots.iter().zip(params).enumerate() {
        assert_eq!(
            slot.len(),
            p.value.len(),
            "{optimizer}: parameter {i} ('{}') has {} elements but its state has {}; \
             parameters must keep their size between steps",
            p.name,
            p.value.len(),
            slot.len(),
        );
        check_grad(optimizer, i, p);
    }
}

/// Checks that a parameter and its gradient have the same number of elements.
///
/// # Panics
/// If they differ (a layer bug).
pub(super) fn check_grad<T: Float>(optimizer: &str, i: usize, p: &Param<'_, T>) {
    assert_eq!(
        p.grad.len(),
        p.value.len(),
        "{optimizer}: parameter {i} ('{}') has {} elements but its gradient has {}",
        p.name,
        p.value.len(),
        p.grad.len(),
    );
}

/// Appends one `("<prefix>.<i>", buffer)` entry per buffer to `out`.
pub(super) fn push_slots<T: Float>(
    out: &mut Vec<(String, Vec<T>)>,
    prefix: &str,
    slots: &[Vec<T>],
) {
    for (i, slot) in slots.iter().enumerate() {
        out.push((format!("{prefix}.{i}"), slot.clone()));
    }
}

/// Reads the buffers written by [`push_slots`] for each prefix in turn
/// (all `prefixes[0]` entries, then all `prefixes[1]` entries, ...).
///
/// Checks the entry names, that the buffers of one parameter all have the
/// same length, that every value is finite, and that the buffers of the
/// prefixes in `non_negative` (sums and averages of squares) hold no
/// negative value; returns the buffers of each prefix. With no prefixes (an
/// optimizer without state), `state` must be empty.
pub(super) fn read_slots<T: Float, const K: usize>(
    optimizer: &str,
    state: &[(String, Vec<T>)],
    prefixes: [&str; K],
    non_negative: &[&str],
) -> Result<[Vec<Vec<T>>; K]> {
    let mut out: [Vec<Vec<T>>; K] = std::array::from_fn(|_| Vec::new());
    if K == 0 {
        if state.is_empty() {
            return Ok(out);
        }
        return Err(Error::Config(format!(
            "{optimizer} keeps no state, but {} state entries were given",
            state.len()
        )));
    }
    if !state.len().is_multiple_of(K) {
        return Err(Error::Config(format!(
            "{optimizer} state: {} entries is not a multiple of {K} ({})",
            state.len(),
            prefixes.join(", ")
        )));
    }
    let n = state.len() / K;
    for (j, (prefix, slots)) in prefixes.iter().zip(out.iter_mut()).enumerate() {
        for i in 0..n {
            let (name, data) = &state[j * n + i];
            let expected = format!("{prefix}.{i}");
            if *name != expected {
                return Err(Error::Config(format!(
                    "{optimizer} state: entry {} should be '{expected}', found '{name}'",
                    j * n + i
                )));
            }
            if let Some(k) = data.iter().position(|v| !v.as_f64().is_finite()) {
                return Err(Error::Config(format!(
                    "{optimizer} state: '{name}' holds a non-finite value ({}) at index {k}",
                    data[k].as_f64()
                )));
            }
            if non_negative.contains(prefix) {
                if let Some(k) = data.iter().position(|v| v.as_f64() < 0.0) {
                    return Err(Error::Config(format!(
                        "{optimizer} state: '{name}' holds a negative value ({}) at index {k}; it sums squares and cannot be negative",
                        data[k].as_f64()
                    )));
                }
            }
            slots.push(data.clone());
        }
    }
    for i in 0..n {
        let len = out[0][i].len();
        for (prefix, slots) in prefixes.iter().zip(&out) {
            let other = slots[i].len();
            if other != len {
                return Err(Error::Config(format!(
                    "{optimizer} state: '{}.{i}' has {len} elements but '{prefix}.{i}' has {other}",
                    prefixes[0]
                )));
            }
        }
    }
    Ok(out)
}

/// Checks an optimizer's saved state (see
/// [`Optimizer::state`](super::Optimizer::state)) against the parameters it
/// is to update, given as `(name, number of values)` in the network's order:
/// every `<prefix>.<i>` entry must belong to a parameter `i` and have its
/// size, and every prefix must cover all the parameters (or the state must
/// hold none, as before the first step). Anything else — a state file from
/// another network — is an [`Error::Config`] naming the entry and the
/// parameter, instead of a panic on the next step.
///
/// ```
/// use convnet::optim::check_state_fits;
/// let params = [("fc1.weight".to_string(), 6), ("fc1.bias".to_string(), 2)];
/// let good = [("v.0".to_string(), vec![0.0f32; 6]), ("v.1".to_string(), vec![0.0; 2])];
/// check_state_fits(&good, &params).unwrap();
/// let other = [("v.0".to_string(), vec![0.0f32; 5]), ("v.1".to_string(), vec![0.0; 2])];
/// let e = check_state_fits(&other, &params).unwrap_err().to_string();
/// assert!(e.contains("'v.0' has 5 values but parameter 0 (fc1.weight) has 6"), "{e}");
/// ```
pub fn check_state_fits<T: Float>(
    state: &[(String, Vec<T>)],
    params: &[(String, usize)],
) -> Result<()> {
    let mut per_prefix: Vec<(&str, usize)> = Vec::new();
    for (name, data) in state {
        if name == "iter" {
            continue;
        }
        let parsed = name
            .rsplit_once('.')
            .and_then(|(prefix, i)| Some((prefix, i.parse::<usize>().ok()?)));
        let Some((prefix, i)) = parsed else {
            return Err(Error::Config(format!(
                "optimizer state entry '{name}' is not named <buffer>.<parameter index>"
            )));
        };
        let Some((param, len)) = params.get(i) else {
            return Err(Error::Config(format!(
                "optimizer state entry '{name}' is for parameter {i}, but the network has {} parameters (the state is from another network)",
                params.len()
            )));
        };
        if data.len() != *len {
            return Err(Error::Config(format!(
                "optimizer state entry '{name}' has {} values but parameter {i} ({param}) has {len} (the state is from another network)",
                data.len()
            )));
        }
        match per_prefix.iter_mut().find(|(p, _)| *p == prefix) {
            Some((_, count)) => *count += 1,
            None => per_prefix.push((prefix, 1)),
        }
    }
    for (prefix, count) in per_prefix {
        if count != params.len() {
            return Err(Error::Config(format!(
                "optimizer state holds {count} '{prefix}' entries, but the network has {} parameters (the state is from another network)",
                params.len()
            )));
        }
    }
    Ok(())
}
