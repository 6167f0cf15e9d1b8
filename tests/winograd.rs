//! The Winograd experiment (`experiments/winograd.rs`, not part of the
//! library) against the book's im2col convolution: its unit tests run here.

#[path = "../experiments/winograd.rs"]
#[allow(dead_code)]
mod winograd;
