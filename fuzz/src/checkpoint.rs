//! AFL++ target: a safetensors checkpoint and its metadata, loaded with a
//! memory limit of 16 MiB; one that loads must classify an image.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = convnet::checkpoint::read_info(data, "afl");
        let _ = convnet::checkpoint::parse_optimizer_state(data, "afl");
        if let Ok((mut net, info)) = convnet::checkpoint::load_from_bytes(data, "afl", 16 << 20) {
            let [c, h, w] = info.input_shape;
            let x = convnet::Tensor::<f32>::zeros(&[1, c, h, w]);
            net.predict(&x, false).expect("a loaded network runs");
        }
    });
}
