#!/usr/bin/env python3
"""How convnet's training epoch scales with threads and batch size.

Runs `target/release/convnet train --epochs 1` on Fashion-MNIST (60,000
training images) for each configuration, alternating the configurations
round after round so that they see the same machine state, and prints a
Markdown table of the median seconds per epoch (training only, from the
`--metrics` line), images/s, the speed-up of 2 threads over 1 and the test
accuracy after the epoch.

    python3 benches/scaling.py [--model simple] [--rounds 3] [--data DIR]

Standard library only; needs `cargo build --release` first. Not part of CI.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONVNET = os.path.join(ROOT, "target", "release", "convnet")
# The PyTorch comparison's runner knows where Fashion-MNIST lives.
sys.path.insert(0, os.path.join(ROOT, "benches", "compare"))
from run import find_data  # noqa: E402
# (threads, batch size)
CONFIGS = [(1, 100), (2, 100), (2, 32), (2, 256), (1, 32), (1, 256)]


def epoch(model, data, threads, batch, metrics):
    """One training epoch; returns its metrics line."""
    subprocess.run(
        [CONVNET, "train", "--model", model, "--data", data, "--epochs", "1",
         "--threads", str(threads), "--batch-size", str(batch), "--metrics", metrics],
        check=True, capture_output=True,
    )
    with open(metrics) as f:
        return json.loads(f.readline())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simple")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", help="an MNIST-format IDX folder (default: Fashion-MNIST)")
    args = parser.parse_args()
    args.data = str(find_data(args.data))
    if not os.path.exists(CONVNET):
        sys.exit("build first: cargo build --release")
    seconds = {c: [] for c in CONFIGS}
    images = 0
    accuracy = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "metrics.jsonl")
        for r in range(args.rounds):
            for threads, batch in CONFIGS:
                m = epoch(args.model, args.data, threads, batch, metrics)
                seconds[(threads, batch)].append(m["seconds"])
                # Training images per epoch, from the line itself.
                images = round(m["seconds"] * m["images_per_second"])
                accuracy[(threads, batch)].append(100 * m["test_acc"])
                print(f"round {r + 1}: {threads} thread(s), batch {batch}: {m['seconds']:.2f} s", file=sys.stderr)
    print(f"\n{args.model}, one epoch of {images:,} images, median of {args.rounds} rounds "
          f"(load average at the end {os.getloadavg()[0]:.2f})\n")
    print("| threads | batch | s/epoch | images/s | 1→2 threads | test acc % |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threads, batch in sorted(CONFIGS):
        s = statistics.median(seconds[(threads, batch)])
        speedup = ""
        if threads == 2 and (1, batch) in seconds:
            speedup = f"{statistics.median(seconds[(1, batch)]) / s:.2f}×"
        print(f"| {threads} | {batch} | {s:.2f} | {images / s:,.0f} | {speedup} | "
              f"{statistics.median(accuracy[(threads, batch)]):.2f} |")


if __name__ == "__main__":
    main()
