//! `--max-memory`, shared by every command that builds a network: a model
//! whose layers need more (see `convnet::networks::plan`) is refused before
//! anything is allocated.

use clap::Args;
use convnet::limits::{default_max_memory, parse_bytes};

#[derive(Args, Clone, Debug)]
pub struct MemoryArgs {
    /// Refuse, before building it, a network that would need more memory
    /// than this for its weights, gradients, optimizer state and one batch
    /// of activations: bytes, or with a unit (512M, 8G, 1.5GiB). Default:
    /// half of the machine's memory (MemTotal in /proc/meminfo), else 8G.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub max_memory: Option<u64>,
}

impl MemoryArgs {
    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.max_memory.unwrap_or_else(default_max_memory)
    }
}

fn parse_memory(text: &str) -> Result<u64, String> {
    parse_bytes(text).map_err(|e| e.to_string())
}
