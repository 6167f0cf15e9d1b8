#!/usr/bin/env python3
"""Projects the speed-up of data-parallel training on 8, 32 and 128 machines
(docs/distributed.md) from measured per-image training times and parameter
counts, under a stated network model:

- all-reduce of the gradient (4 bytes per parameter) by a ring: each machine
  sends and receives 2(N-1)/N of the gradient, in 2(N-1) messages; or by
  recursive doubling as convnet does today: log2(N) whole gradients, in
  log2(N) messages;
- links of 10 or 100 Gbit/s, full duplex, 10 microseconds per message;
- no overlap of the exchange with the backward pass;
- strong scaling: the global batch B stays the same, each machine computes
  ceil(B/N) images; weak scaling: each machine keeps b images, the global
  batch grows with N.

Usage: python3 benches/distributed/project.py
"""
import math

# name: (parameters, seconds of training per image on one machine, batch)
# Parameters: `convnet summary --model NAME`. Seconds per image: the
# training step of `convnet bench --model NAME --threads 2` (simple, deep:
# README, batch 100) and `--threads 1 --batch-size 16` halved (alexnet).
NETWORKS = {
    "simple": (433_890, 1 / 38_679, 100),
    "deep": (123_552, 1 / 5_322, 100),
    "alexnet 227x227": (62_378_344, 0.313 / 2, 128),
}
LATENCY = 10e-6


def exchange_seconds(params, machines, gbit, ring):
    if machines == 1:
        return 0.0
    size = 4 * params
    bandwidth = gbit * 1e9 / 8
    if ring:
        return 2 * (machines - 1) / machines * size / bandwidth + 2 * (machines - 1) * LATENCY
    steps = math.ceil(math.log2(machines))
    return steps * (size / bandwidth + LATENCY)


def main():
    for name, (params, per_image, batch) in NETWORKS.items():
        print(f"{name}: {params:,} parameters ({4 * params / 1e6:.2f} MB of gradient), "
              f"{per_image * 1e3:.3f} ms per image, global batch {batch}")
        for gbit in (10, 100):
            for ring in (True, False):
                label = "ring" if ring else "recursive doubling"
                cells = []
                for machines in (8, 32, 128):
                    one = batch * per_image
                    strong = math.ceil(batch / machines) * per_image + exchange_seconds(
                        params, machines, gbit, ring)
                    weak = batch * per_image + exchange_seconds(params, machines, gbit, ring)
                    cells.append(f"N={machines}: strong {one / strong:5.1f}x, weak {machines * one / weak:6.1f}x")
                print(f"  {gbit:>3} Gbit/s, {label:<18} " + " | ".join(cells))


if __name__ == "__main__":
    main()
