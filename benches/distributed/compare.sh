#!/usr/bin/env bash
# Training throughput of 2 MPI ranks × 1 thread against 1 process × 2
# threads (docs/distributed.md), taking turns so that both sides see the
# same machine: ROUNDS rounds (default 3) of one epoch of MODEL (default
# deep) on the embedded digits, the images per second of each run, then the
# medians and their ratio. Also prints each distributed run's cost line
# (bytes sent per step, computing against exchanging).
#
#   cargo build --release --features mpi
#   benches/distributed/compare.sh [MODEL] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:-deep}"
rounds="${2:-3}"
binary="${CONVNET:-target/release/convnet}"
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none
    --mca btl self,tcp --mca btl_tcp_if_include lo)
rate() { sed -n 's/.*epoch  1\/1 .*(\([0-9.]*\) s, \([0-9]*\) img\/s).*/\2/p'; }
alone=()
ranks=()
for round in $(seq "$rounds"); do
    a=$("$binary" train --model "$model" --epochs 1 --threads 2 | rate)
    out=$("${mpirun[@]}" -n 2 "$binary" train --model "$model" --epochs 1 --threads 1)
    r=$(echo "$out" | rate)
    echo "round $round: 1 process x 2 threads $a img/s, 2 ranks x 1 thread $r img/s"
    echo "$out" | grep '^distributed:' || true
    alone+=("$a")
    ranks+=("$r")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ma=$(median "${alone[@]}")
mr=$(median "${ranks[@]}")
echo "median: 1 process x 2 threads $ma img/s, 2 ranks x 1 thread $mr img/s, ratio $(awk -v a="$ma" -v r="$mr" 'BEGIN {printf "%.2f", r / a}')"
