//! Networks: a sequential container and the book's models.

pub mod sequential;
pub mod simple_convnet;

pub use sequential::{NamedLayer, Network};
pub use simple_convnet::{simple_convnet, SimpleConvNetConfig};

use crate::error::{Error, Result};
use crate::init::Init;
use crate::rng::Rng;
use crate::tensor::Float;

/// The names `--model` accepts.
pub const MODEL_NAMES: [&str; 1] = ["simple"];

/// Builds a model by name for images of `input_shape` (C, H, W) and
/// `num_classes` classes. `init` overrides the model's own initialisation.
///
/// ```
/// use convnet::networks::build_model;
/// use convnet::Rng;
/// let net = build_model::<f32>("simple", [1, 28, 28], 10, None, &mut Rng::new(0)).unwrap();
/// assert_eq!(net.layers.len(), 6);
/// assert!(build_model::<f32>("resnet", [1, 28, 28], 10, None, &mut Rng::new(0)).is_err());
/// ```
pub fn build_model<T: Float>(
    name: &str,
    input_shape: [usize; 3],
    num_classes: usize,
    init: Option<Init>,
    rng: &mut Rng,
) -> Result<Network<T>> {
    match name {
        "simple" => {
            let defaults = SimpleConvNetConfig::default();
            simple_convnet(
                &SimpleConvNetConfig {
                    input_shape,
                    output_size: num_classes,
                    init: init.unwrap_or(defaults.init),
                    ..defaults
                },
                rng,
            )
        }
        other => Err(Error::Config(format!(
            "unknown model '{other}' (expected one of: {})",
            MODEL_NAMES.join(", ")
        ))),
    }
}
