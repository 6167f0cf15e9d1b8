//! SimpleConvNet (book §7.5, `ch07/simple_convnet.py`).
//!
//! ```text
//! x: (N, 1, 28, 28)
//! conv1  Convolution 30 filters 5×5, stride 1, pad 0   → (N, 30, 24, 24)
//! relu1  ReLU
//! pool1  MaxPooling 2×2, stride 2                      → (N, 30, 12, 12)
//! fc1    Affine 4320 → 100
//! relu2  ReLU
//! fc2    Affine 100 → 10                               → (N, 10)
//! loss   SoftmaxWithLoss
//! ```
//!
//! Every size is a field of [`SimpleConvNetConfig`]; the defaults are the
//! book's, including `weight_init_std = 0.01`.
//!
//! ```
//! use convnet::networks::{simple_convnet, SimpleConvNetConfig};
//! use convnet::Rng;
//! let mut net = simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut Rng::new(0)).unwrap();
//! // 30·25 + 30 + 4320·100 + 100 + 100·10 + 10
//! assert_eq!(net.num_params(), 433_890);
//! ```

use super::spec::{build_from_spec, LayerSpec};
use super::Network;
use crate::error::Result;
use crate::init::Init;
use crate::layers::PoolingConfig;
use crate::rng::Rng;
use crate::tensor::Float;

/// The sizes of a [`simple_convnet`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimpleConvNetConfig {
    /// One input image: (C, H, W).
    pub input_shape: [usize; 3],
    /// Number of filters (FN): conv1's output channels.
    pub filters: usize,
    /// Filter size FH = FW.
    pub filter_size: usize,
    /// conv1's padding P.
    pub pad: usize,
    /// conv1's stride S.
    pub stride: usize,
    /// Outputs of the hidden affine layer `fc1`.
    pub hidden_size: usize,
    /// Outputs of `fc2`: the number of classes.
    pub output_size: usize,
    /// How the weights are drawn (the book's `weight_init_std = 0.01`).
    pub init: Init,
}

impl Default for SimpleConvNetConfig {
    fn default() -> Self {
        SimpleConvNetConfig {
            input_shape: [1, 28, 28],
            filters: 30,
            filter_size: 5,
            pad: 0,
            stride: 1,
            hidden_size: 100,
            output_size: 10,
            init: Init::Std(0.01),
        }
    }
}

/// SimpleConvNet as a [spec](super::spec):
/// `conv(F,K,stride=S,pad=P)-relu-maxpool(2)-affine(H)-relu-affine(classes)`.
pub fn simple_convnet_layers(config: &SimpleConvNetConfig) -> Vec<LayerSpec> {
    vec![
        LayerSpec::Conv {
            filters: config.filters,
            size: config.filter_size,
            stride: config.stride,
            pad: config.pad,
        },
        LayerSpec::Relu,
        LayerSpec::MaxPool(PoolingConfig::default()),
        LayerSpec::Affine {
            outputs: config.hidden_size,
        },
        LayerSpec::Relu,
        LayerSpec::Affine {
            outputs: config.output_size,
        },
    ]
}

/// Builds the book's SimpleConvNet with weights drawn from `rng`
/// (conv1, relu1, pool1, fc1, relu2, fc2); its sizes are checked first, as
/// [`build_from_spec`] does.
pub fn simple_convnet<T: Float>(config: &SimpleConvNetConfig, rng: &mut Rng) -> Result<Network<T>> {
    let layers = simple_convnet_layers(config);
    build_from_spec(
        &layers,
        config.input_shape,
        config.output_size,
        config.init,
        rng,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::check_network;
    use crate::tensor::Tensor;

    #[test]
    fn shapes_follow_the_book() {
        let net = simple_convnet::<f32>(&SimpleConvNetConfig::default(), &mut Rng::new(0)).unwrap();
        let shapes = net.shapes(100).unwrap();
        assert_eq!(shapes[1], [100, 30, 24, 24]);
        assert_eq!(shapes[3], [100, 30, 12, 12]);
        assert_eq!(shapes[4], [100, 100]);
        assert_eq!(shapes[6], [100, 10]);
    }

    #[test]
    fn impossible_geometry_is_an_error() {
        let config = SimpleConvNetConfig {
            filter_size: 30,
            ..Default::default()
        };
        assert!(simple_convnet::<f32>(&config, &mut Rng::new(0)).is_err());
    }

    #[test]
    fn whole_network_gradient_matches_numerical() {
        // A small SimpleConvNet (1×10×10 input, 3 filters 3×3, pad 1, hidden 8)
        // with He init so that gradients are not tiny.
        let config = SimpleConvNetConfig {
            input_shape: [1, 10, 10],
            filters: 3,
            filter_size: 3,
            pad: 1,
            hidden_size: 8,
            output_size: 4,
            init: Init::He,
            ..Default::default()
        };
        let mut rng = Rng::new(3);
        let mut net = simple_convnet::<f64>(&config, &mut rng).unwrap();
        let x =
            Tensor::from_vec(&[3, 1, 10, 10], (0..300).map(|_| rng.normal()).collect()).unwrap();
        let report = check_network(&mut net, &x, &[0, 3, 1]).unwrap();
        assert_eq!(report.len(), 6);
        for (name, err) in report {
            assert!(err <= 1e-6, "{name}: {err}");
        }
    }
}
