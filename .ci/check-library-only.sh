#!/usr/bin/env bash
# CI: a crate that depends on convnet with `default-features = false` (the
# library alone: no clap, image, plotters, ureq) builds. A throwaway crate
# in a temporary folder, with the repository's Cargo.lock so that it gets
# the same versions, built into its own target folder under target/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/convnet-library-only.XXXXXX")"
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<TOML
[package]
name = "uses-convnet"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
convnet = { path = "$repo", default-features = false }

[profile.dev.package.convnet]
opt-level = 3
TOML
cat > "$work/src/main.rs" <<'RUST'
use convnet::networks::{build_model, ModelOptions};
use convnet::train::TrainConfig;
use convnet::Rng;

fn main() -> convnet::Result<()> {
    let mut net = build_model::<f32>("simple", &ModelOptions::default(), [1, 28, 28], 10, &mut Rng::new(1))?;
    println!("{} ({} parameters), {:?}", net.to_spec()?, net.num_params(), TrainConfig::default());
    Ok(())
}
RUST
cp "$repo/Cargo.lock" "$work/Cargo.lock"

export CARGO_TARGET_DIR="$repo/target/library-only"
cd "$work"
cargo build
# The command-line tool's dependencies stay out.
tree="$(cargo tree --edges normal --prefix none)"
for unwanted in clap indicatif anyhow image plotters ureq; do
    if grep -q "^$unwanted v" <<<"$tree"; then
        echo "convnet with default-features = false still depends on $unwanted" >&2
        exit 1
    fi
done
cargo run --quiet
