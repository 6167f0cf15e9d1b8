//! Networks: a sequential container and the book's models.

pub mod sequential;
pub mod simple_convnet;

pub use sequential::{NamedLayer, Network};
pub use simple_convnet::{simple_convnet, SimpleConvNetConfig};
