#!/usr/bin/env python3
"""Checks the README's snippet that loads a convnet checkpoint into PyTorch.

It takes the Python block that follows the marker
`<!-- checked by benches/compare/check_checkpoint.py -->` in README.md, runs
it against a checkpoint of `convnet train --save` (SimpleConvNet), and
compares PyTorch's answers with convnet's own on the embedded test digits
(data/mnist-10k):

- every test image: PyTorch's accuracy equals `convnet eval --checkpoint`'s;
- the first 20 test images, written as PNGs: the class probabilities of
  `convnet predict --json --no-invert` equal PyTorch's softmax (to 1e-5)
  and the top classes agree.

Needs torch and safetensors (the venv of run.py); not part of CI.

    benches/compare/.venv/bin/python benches/compare/check_checkpoint.py [--checkpoint FILE]

Without --checkpoint it trains one (`convnet train --epochs 2 --save ...`) in
a temporary folder. Exits non-zero on any mismatch.
"""

import argparse
import gzip
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONVNET = os.path.join(ROOT, "target", "release", "convnet")
MARKER = "<!-- checked by benches/compare/check_checkpoint.py -->"


def readme_snippet():
    """The ```python block right after the marker in README.md."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    after = text.split(MARKER, 1)
    if len(after) != 2:
        sys.exit(f"README.md has no '{MARKER}'")
    match = re.search(r"```python\n(.*?)```", after[1], re.S)
    if not match:
        sys.exit("no ```python block after the marker")
    return match.group(1)


def read_idx(path):
    """An IDX file (gzip) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_png(path, pixels):
    """A grey-scale 8-bit PNG, written with zlib alone."""
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def run(*args):
    return subprocess.run([CONVNET, *args], check=True, capture_output=True, text=True).stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a SimpleConvNet checkpoint (default: train one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = os.path.join(tmp, "model.safetensors")
            run("train", "--epochs", "2", "--save", checkpoint)

        # The README's snippet loads "model.safetensors" from the current folder.
        os.symlink(os.path.abspath(checkpoint), os.path.join(tmp, "snippet.safetensors"))
        cwd = os.getcwd()
        os.chdir(tmp)
        scope = {}
        exec(readme_snippet().replace('"model.safetensors"', '"snippet.safetensors"'), scope)
        os.chdir(cwd)
        net = scope["net"]

        data = os.path.join(ROOT, "data", "mnist-10k")
        images = read_idx(os.path.join(data, "t10k-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(data, "t10k-labels-idx1-ubyte.gz"))
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        with torch.no_grad():
            probabilities = torch.softmax(net(x), dim=1).numpy()
        torch_accuracy = 100.0 * float((probabilities.argmax(1) == labels).mean())
        ours = float(re.search(r"accuracy: ([0-9.]+)%", run("eval", "--checkpoint", checkpoint)).group(1))
        print(f"test accuracy: convnet eval {ours:.2f} %, PyTorch {torch_accuracy:.2f} %")
        failures = []
        if abs(ours - torch_accuracy) > 0.005:
            failures.append("accuracies differ")

        files = []
        for i in range(20):
            files.append(os.path.join(tmp, f"digit-{i:02}.png"))
            write_png(files[-1], images[i])
        worst = 0.0
        for i, line in enumerate(run("predict", "--checkpoint", checkpoint, "--json", "--no-invert", "--top-k", "10", *files).splitlines()):
            predictions = json.loads(line)["predictions"]
            for p in predictions:
                worst = max(worst, abs(p["probability"] - probabilities[i][p["index"]]))
            if predictions[0]["index"] != int(probabilities[i].argmax()):
                failures.append(f"image {i}: top class differs")
        print(f"20 PNGs: largest probability difference {worst:.2e}")
        if worst > 1e-5:
            failures.append("probabilities differ by more than 1e-5")
    if failures:
        sys.exit("MISMATCH: " + "; ".join(failures))
    print("ok: the README snippet gives convnet's predictions")


if __name__ == "__main__":
    main()
