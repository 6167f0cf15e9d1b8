//! AFL++ target: a model spec. The first three bytes choose the input
//! (channels 1-3, side 1-16) and the classes (1-8); the rest is the spec,
//! parsed, planned and built within 4 MiB; a network that builds must train
//! a step on two images.

use convnet::init::Init;
use convnet::networks::{build_from_spec_within, parse_spec};
use convnet::optim::{build, OptimizerKind};
use convnet::{Rng, Tensor};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let [a, b, k, rest @ ..] = data else {
            return;
        };
        let (c, side, classes) = (
            1 + *a as usize % 3,
            1 + *b as usize % 16,
            1 + *k as usize % 8,
        );
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(layers) = parse_spec(text) else {
            return;
        };
        let built = build_from_spec_within::<f32>(
            &layers,
            [c, side, side],
            classes,
            Init::He,
            &mut Rng::new(0),
            4 << 20,
        );
        let Ok(mut net) = built else {
            return;
        };
        let n = 2 * c * side * side;
        let x = Tensor::from_vec(
            &[2, c, side, side],
            (0..n).map(|i| (i % 7) as f32 / 7.0).collect(),
        )
        .unwrap();
        net.gradient(&x, &[0, classes - 1])
            .expect("a built network trains");
        build::<f32>(OptimizerKind::Adam, None).step(&mut net.params());
    });
}
