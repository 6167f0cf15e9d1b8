#!/usr/bin/env bash
# Data-parallel training under mpirun (feature `mpi`, tests/distributed.rs):
# 1, 2 and 4 ranks (oversubscribed) against one process, a killed rank, a
# rank with bad input; loopback only. Installs Debian's Open MPI and libclang
# (for rsmpi's bindgen) if missing; only the package installs use the network.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in openmpi-bin libopenmpi-dev libclang-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "-- cargo clippy --all-targets --features mpi -- -D warnings"
cargo clippy --all-targets --features mpi -- -D warnings
echo "-- cargo doc --no-deps --features mpi (no warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --features mpi
echo "-- cargo test --features mpi --test distributed"
cargo test --features mpi --test distributed
