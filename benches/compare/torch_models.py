#!/usr/bin/env python3
"""PyTorch twins of convnet's networks, for the side-by-side benchmark.

Each network is built from the same one-line spec that `convnet` uses
(`src/networks/mod.rs`, `src/networks/spec.rs`), with the same
initialisation (N(0, 2/fan_in) for He, N(0, 1/fan_in) for Xavier, biases
zero), the same optimizer (Adam, lr 0.001, betas 0.9/0.999, epsilon 1e-7),
batch size 100, softmax cross-entropy, and the same data (an MNIST-format
IDX folder, pixels byte/255, the training set shuffled every epoch).

Subcommands, each printing one JSON line on stdout:

    summary    the network's layers and parameter count
    train      training epochs on the data folder (time, images/s, test accuracy)
    inference  training-step and inference images/s on random inputs,
               like `convnet bench`
    all        train, then inference, in one process

Every JSON line carries the process's peak RSS so far (`peak_rss_mb`).
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ort import peak_rss_mb, rate  # benches/compare/ort.py, standard library only

# The specs of src/networks/mod.rs (`MODELS`; `simple` is the book's
# SimpleConvNet of src/networks/simple_convnet.rs written as a spec), with the
# init and activation `convnet train` gives each when none is asked for.
MODELS = {
    "simple": {
        "spec": "conv(30,5)-relu-maxpool(2)-affine(100)-relu-affine({classes})",
        "init": "he",  # `convnet train` default for simple (the library's is std 0.01)
        "activation": "relu",
    },
    "lenet5": {
        "spec": "conv(6,5,pad=2)-{act}-avgpool(2)-conv(16,5)-{act}-avgpool(2)"
        "-conv(120,5)-{act}-affine(84)-{act}-affine({classes})",
        "init": "xavier",
        "activation": "sigmoid",
    },
    "deep": {
        "spec": "conv(16,3,pad=1)-{act}-conv(16,3,pad=1)-{act}-maxpool(2)"
        "-conv(32,3,pad=1)-{act}-conv(32,3,pad=2)-{act}-maxpool(2)"
        "-conv(64,3,pad=1)-{act}-conv(64,3,pad=1)-{act}-maxpool(2)"
        "-affine(50)-{act}-dropout(0.5)-affine({classes})-dropout(0.5)",
        "init": "he",
        "activation": "relu",
    },
    "alexnet-small": {
        "spec": "conv(32,3,pad=1)-{act}-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(64,3,pad=1)-{act}"
        "-lrn(5,5e-4,0.75,2)-maxpool(3,2)-conv(96,3,pad=1)-{act}-conv(96,3,pad=1)-{act}"
        "-conv(64,3,pad=1)-{act}-maxpool(3,2)-dropout(0.5)-affine(256)-{act}-dropout(0.5)"
        "-affine(256)-{act}-affine({classes})",
        "init": "he",
        "activation": "relu",
    },
}

# Argument names of each spec token, in positional order, with defaults
# (None: required); as in src/networks/spec.rs.
TOKEN_ARGS = {
    "conv": [("filters", None), ("size", None), ("stride", 1), ("pad", 0)],
    "maxpool": [("size", None), ("stride", None), ("pad", 0)],
    "avgpool": [("size", None), ("stride", None), ("pad", 0)],
    "affine": [("outputs", None)],
    "dropout": [("ratio", 0.5)],
    "lrn": [("size", 5), ("alpha", 1e-4), ("beta", 0.75), ("k", 1.0)],
    "relu": [],
    "sigmoid": [],
    "tanh": [],
    "gap": [],
    "bn": [("momentum", 0.9), ("eps", 1e-6)],
}

ADAM = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-7}  # src/optim/adam.rs, src/optim/mod.rs


def split_spec(spec):
    """Splits a spec at top-level '-' (not inside parentheses)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "-" and depth == 0:
            parts.append(spec[start:i])
            start = i + 1
    parts.append(spec[start:])
    return parts


def parse_token(text):
    """`conv(32,3,pad=2)` -> ("conv", {"filters": 32, "size": 3, "stride": 1, "pad": 2})."""
    text = text.strip()
    name, _, inside = text.partition("(")
    name = name.strip().lower()
    name = {"batchnorm": "bn"}.get(name, name)
    if name not in TOKEN_ARGS:
        raise ValueError(f"layer '{text}': unknown layer '{name}'")
    names = [n for n, _ in TOKEN_ARGS[name]]
    values = {}
    for i, arg in enumerate(a.strip() for a in inside.rstrip(")").split(",") if a.strip()):
        key, eq, value = arg.partition("=")
        key, value = (key.strip(), value) if eq else (names[i], key)
        values[key] = float(value)
    args = {}
    for key, default in TOKEN_ARGS[name]:
        if key == "stride" and name.endswith("pool"):
            default = values.get("size", default)
        value = values.get(key, default)
        if value is None:
            raise ValueError(f"layer '{text}': missing argument {key}")
        args[key] = value
    return name, args


def parse_spec(spec):
    """The list of (token, args) of a spec string."""
    return [parse_token(part) for part in split_spec(spec)]


def make_layer(name, args, in_shape):
    """One torch module for a spec token, given the (C, H, W) or (F,) input shape."""
    whole = {k: int(v) for k, v in args.items()
             if k not in ("ratio", "alpha", "beta", "k", "momentum", "eps")}
    if name == "conv":
        return nn.Conv2d(in_shape[0], whole["filters"], whole["size"],
                         stride=whole["stride"], padding=whole["pad"])
    if name == "maxpool":
        return nn.MaxPool2d(whole["size"], stride=whole["stride"], padding=whole["pad"])
    if name == "avgpool":
        # Ours divides by the whole window, padding included: count_include_pad.
        return nn.AvgPool2d(whole["size"], stride=whole["stride"], padding=whole["pad"],
                            count_include_pad=True)
    if name == "affine":
        inputs = int(np.prod(in_shape))
        linear = nn.Linear(inputs, whole["outputs"])
        return nn.Sequential(nn.Flatten(), linear) if len(in_shape) > 1 else linear
    if name == "dropout":
        return nn.Dropout(args["ratio"])  # inverted dropout, as ours
    if name == "lrn":
        return nn.LocalResponseNorm(whole["size"], alpha=args["alpha"], beta=args["beta"],
                                    k=args["k"])
    if name == "gap":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if name == "bn":
        # Ours: running = momentum * running + (1 - momentum) * batch;
        # PyTorch's momentum is the weight of the batch.
        norm = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
        return norm(in_shape[0], eps=args["eps"], momentum=1.0 - args["momentum"])
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[name]()


def init_weights(model, init):
    """Weights ~ N(0, sigma^2) with sigma from fan_in (src/init.rs); biases zero."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            std = {"he": (2.0 / fan_in) ** 0.5, "xavier": (1.0 / fan_in) ** 0.5}.get(init)
            if std is None:
                std = float(init.split(":", 1)[1]) if init.startswith("std:") else 0.01
            with torch.no_grad():
                module.weight.normal_(0.0, std)
                module.bias.zero_()


def model_spec(name, classes=10, activation=None):
    """The spec of a named network, with its activation and classes filled in."""
    info = MODELS[name]
    spec = info["spec"].replace("{act}", activation or info["activation"])
    return spec.replace("{classes}", str(classes))


def build_spec(spec, input_shape=(1, 28, 28)):
    """A spec's layers as an nn.Sequential (PyTorch's default initialisation)."""
    layers, shape = [], tuple(input_shape)
    for token, args in parse_spec(spec):
        layer = make_layer(token, args, shape)
        layers.append(layer)
        with torch.no_grad():
            shape = tuple(layer.eval()(torch.zeros(1, *shape)).shape[1:])
    return nn.Sequential(*layers)


def build_model(name, input_shape=(1, 28, 28), classes=10, activation=None, init=None):
    """The named network as an nn.Sequential, initialised as convnet does."""
    model = build_spec(model_spec(name, classes, activation), input_shape)
    init_weights(model, init or MODELS[name]["init"])
    return model


def num_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- data

def read_idx(path):
    """An IDX file (gzipped or raw) as a uint8 numpy array of its shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find_idx(folder, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{folder}: no {name}[.gz]")


def load_split(folder, prefix):
    """(images as float32 (N, 1, H, W) in [0, 1], labels as int64) of one split."""
    images = read_idx(find_idx(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find_idx(folder, f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- measurements

def evaluate(model, x, t, batch_size):
    """Test accuracy in eval mode, with the training batch size (as ours)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            correct += (model(x[i:i + batch_size]).argmax(1) == t[i:i + batch_size]).sum().item()
    return correct / max(len(x), 1)


def train(model, args):
    """Trains for args.epochs on args.data; per-epoch metrics (training time only)."""
    x_train, t_train = load_split(args.data, "train")
    x_test, t_test = load_split(args.data, "t10k")
    optimizer = torch.optim.Adam(model.parameters(), **ADAM)
    n = len(x_train)
    epochs = []
    for epoch in range(args.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(n)
        loss_sum, correct = 0.0, 0
        for i in range(0, n, args.batch_size):
            index = order[i:i + args.batch_size]
            x, t = x_train[index], t_train[index]
            scores = model(x)
            loss = F.cross_entropy(scores, t)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Ours keeps the epoch's training loss and accuracy too.
            loss_sum += loss.item() * len(index)
            correct += (scores.argmax(1) == t).sum().item()
        seconds = time.perf_counter() - start
        epochs.append({
            "epoch": epoch + 1,
            "seconds": seconds,
            "images_per_second": n / seconds,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "test_acc": evaluate(model, x_test, t_test, args.batch_size),
        })
        print(f"epoch {epoch + 1}: {seconds:.2f} s, {n / seconds:.0f} img/s, "
              f"test acc {100 * epochs[-1]['test_acc']:.2f}%", file=sys.stderr)
    return {"train_images": n, "batch_size": args.batch_size, "epochs": epochs,
            "train_peak_rss_mb": peak_rss_mb()}


def inference(model, args, input_shape=(1, 28, 28), classes=10):
    """Training-step images/s on one random batch (as `convnet bench`), then
    inference images/s at each batch size on random inputs."""
    optimizer = torch.optim.Adam(model.parameters(), **ADAM)
    x = torch.rand(args.batch_size, *input_shape)
    t = torch.randint(0, classes, (args.batch_size,))
    model.train()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), t).backward()
        optimizer.step()

    train_rate = rate(args.seconds, train_step) * args.batch_size
    model.eval()
    results = []
    with torch.no_grad():
        for batch in args.inference_batches:
            xb = torch.rand(batch, *input_shape)
            calls = rate(args.seconds, lambda: model(xb))
            results.append({"batch": batch, "images_per_s": calls * batch})
    return {"train": {"batch": args.batch_size, "images_per_s": train_rate},
            "inference": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["summary", "train", "inference", "all"])
    parser.add_argument("--model", choices=sorted(MODELS), default="simple")
    parser.add_argument("--data", help="MNIST-format IDX folder (train, all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per inference figure, after a warm-up")
    parser.add_argument("--inference-batches", default="1,1000",
                        type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command in ("train", "all") and not args.data:
        parser.error(f"{args.command} needs --data")

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.set_flush_denormal(True)  # ours flushes denormals too (src/cpu.rs)
    torch.manual_seed(args.seed)
    model = build_model(args.model)
    result = {
        "model": args.model,
        "params": num_params(model),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.command == "summary":
        result["layers"] = [str(m) for m in model]
    if args.command in ("train", "all"):
        result.update(train(model, args))
    if args.command in ("inference", "all"):
        result.update(inference(model, args))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
