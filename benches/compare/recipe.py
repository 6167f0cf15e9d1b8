#!/usr/bin/env python3
"""Time to a target accuracy: a convnet recipe against the same recipe in PyTorch.

    python3 benches/compare/recipe.py                          # fashion-fast, target 94 %
    python3 benches/compare/recipe.py --recipe fashion-fast --target 0.94 --rounds 1
    python3 benches/compare/recipe.py --torch-limit 2.5        # stop PyTorch at 2.5x convnet's time

One round runs `convnet train --recipe NAME` and then this file's PyTorch
twin of it (alternating which goes first from round to round), each as its
own process on the same data. The twin is configured from the command line
that convnet prints for the recipe ("the same as: convnet train ..."), so
both sides run the same network (the spec, through torch_models.py), the
same epochs, batch size, Adam with decoupled weight decay on the weights of
convolutions and affine layers only (torch's AdamW, which shrinks each
weight by lr*lambda before the step, as ours), the same one-cycle schedule
per batch, label smoothing, augmentation (random crop with zero padding,
left-right flips of half the images) and averaged model (the same warm-up
formula) and test-time augmentation (`--tta`). Each side's time to the target is the wall time from its start
(data loading included) to the end of the first epoch whose test accuracy,
of the weights or of the averaged model, reaches the target. Peak RSS of
each process is reported too.

PyTorch runs until it reaches the target, ends its epochs, or has run
`--torch-limit` times convnet's time to the target in that round (then its
time is reported as "more than" that). Uses the same venv as run.py
(benches/compare/.venv or --venv / $CONVNET_COMPARE_VENV).
"""

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# ---------------------------------------------------------------- the PyTorch twin

def parse_recipe_line(line):
    """The options of a printed `convnet train ...` command line, as a dict."""
    words = shlex.split(line)
    options, i = {}, words.index("train") + 1
    while i < len(words):
        key = words[i].lstrip("-")
        if i + 1 < len(words) and not words[i + 1].startswith("--"):
            options[key], i = words[i + 1], i + 2
        else:
            options[key], i = True, i + 1  # a flag such as --tta
    return options


def torch_twin(args):
    """Trains the PyTorch twin of the recipe; prints one JSON line per epoch."""
    import numpy as np  # noqa: F401  (torch_models needs it)
    import torch
    import torch.nn.functional as F
    from torch import nn

    sys.path.insert(0, HERE)
    import torch_models as tm

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    o = json.loads(args.options)

    # The network: torch_models' layers, plus batch norm (ours: momentum 0.9
    # of the running statistics, i.e. torch's 0.1; eps 1e-6).
    layers, shape = [], (1, 28, 28)
    for token in tm.split_spec(o["model"]):
        name = token.split("(")[0].strip().lower()
        if name in ("bn", "batchnorm"):
            layer = (nn.BatchNorm2d(shape[0], eps=1e-6, momentum=0.1) if len(shape) == 3
                     else nn.BatchNorm1d(shape[0], eps=1e-6, momentum=0.1))
        else:
            layer = tm.make_layer(*tm.parse_token(token), shape)
        layers.append(layer)
        with torch.no_grad():
            shape = tuple(layer.eval()(torch.zeros(2, *shape)).shape[1:])
    model = nn.Sequential(*layers)
    tm.init_weights(model, "he")

    x_train, t_train = tm.load_split(args.data, "train")
    x_test, t_test = tm.load_split(args.data, "t10k")
    epochs, batch = int(o["epochs"]), int(o["batch-size"])
    base_lr, decay = float(o["lr"]), float(o.get("weight-decay", 0))
    smoothing = float(o.get("label-smoothing", 0))
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    others = [p for p in model.parameters() if all(p is not w for w in weights)]
    optimizer = torch.optim.AdamW([{"params": weights, "weight_decay": decay},
                                   {"params": others, "weight_decay": 0.0}],
                                  lr=base_lr, betas=(0.9, 0.999), eps=1e-7)
    steps_per_epoch = math.ceil(len(x_train) / batch)
    total = epochs * steps_per_epoch
    schedule = o.get("schedule", "constant")
    warmup = float(schedule.split(":")[1]) if schedule.startswith("onecycle") else None

    def lr_at(step):  # src/train/schedule.rs
        if warmup is None:
            return base_lr
        n = max(1, round(warmup * total))
        if step < n:
            return base_lr * (step + 1) / n
        return base_lr * 0.5 * (1 + math.cos(math.pi * (step - n) / (total - n)))

    shift, flip = 0, False
    for item in o.get("augment", "none").split(","):
        if item.startswith("crop:"):
            shift = int(item.split(":")[1])
        flip |= item == "flip"

    def augment(x):
        n = len(x)
        if flip:
            mirror = torch.rand(n) < 0.5
            x = torch.where(mirror[:, None, None, None], x.flip(3), x)
        if shift:
            padded = F.pad(x, (shift, shift, shift, shift))
            dy = torch.randint(0, 2 * shift + 1, (n,))
            dx = torch.randint(0, 2 * shift + 1, (n,))
            out = torch.empty_like(x)
            h, w = x.shape[2], x.shape[3]
            for oy in range(2 * shift + 1):
                for ox in range(2 * shift + 1):
                    chosen = ((dy == oy) & (dx == ox)).nonzero(as_tuple=True)[0]
                    if len(chosen):
                        out[chosen] = padded[chosen, :, oy:oy + h, ox:ox + w]
            x = out
        return x

    ema_decay = float(o["ema"]) if "ema" in o else None
    ema_state = ({k: v.detach().clone() for k, v in model.state_dict().items()
                  if v.dtype.is_floating_point} if ema_decay else None)

    def evaluate(state=None):
        saved = None
        if state is not None:
            saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
            model.load_state_dict({**saved, **state})
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x_test), batch):
                x = x_test[i:i + batch]
                p = F.softmax(model(x), 1)
                if o.get("tta"):  # averaged with the mirror image's, as `--tta`
                    p = 0.5 * (p + F.softmax(model(x.flip(3)), 1))
                correct += (p.argmax(1) == t_test[i:i + batch]).sum().item()
        if saved is not None:
            model.load_state_dict(saved)
        return correct / len(x_test)

    step = 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), batch):
            index = order[i:i + batch]
            x, t = augment(x_train[index]), t_train[index]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x), t, label_smoothing=smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if ema_state is not None:
                d = min(ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for k, v in model.state_dict().items():
                        if k in ema_state:
                            ema_state[k].mul_(d).add_(v, alpha=1 - d)
        line = {"epoch": epoch + 1, "test_acc": evaluate(),
                "ema_test_acc": evaluate(ema_state) if ema_state is not None else None,
                "elapsed": time.perf_counter() - start, "peak_rss_mb": tm.peak_rss_mb()}
        print(json.dumps(line), flush=True)


# ---------------------------------------------------------------- the runner

def default_data():
    for d in (os.path.join(ROOT, "..", "shared", "data", "fashion-mnist"),
              "/usr/share/datasets/fashion-mnist"):
        if os.path.isdir(d):
            return os.path.abspath(d)
    sys.exit("no Fashion-MNIST folder found: give --data DIR")


def peak_rss_of(pid_rusage):
    return pid_rusage.ru_maxrss / 1024  # KiB -> MiB


def run_side(command, parse, target, limit=None):
    """Runs `command`, reading its lines as they come; returns (time to the
    target or None, the lines' accuracies, peak RSS in MB, stopped early)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
    reached, curve, stopped = None, [], False
    for line in process.stdout:
        accuracies = parse(line)
        if accuracies is None:
            continue
        elapsed = time.perf_counter() - start
        curve.append((round(elapsed, 1), accuracies))
        if reached is None and max(a for a in accuracies if a is not None) >= target:
            reached = elapsed
        if limit is not None and reached is None and elapsed > limit:
            process.kill()
            stopped = True
            break
    _, status, usage = os.wait4(process.pid, 0)
    if not stopped and status != 0:
        sys.exit(f"{' '.join(command)} failed with status {status}")
    return reached, curve, peak_rss_of(usage), stopped


def convnet_accuracies(line):
    m = re.match(r"epoch\s+\d+/\d+ .*test acc\s+([\d.]+)%(?:\s+ema acc\s+([\d.]+)%)?", line)
    if not m:
        return None
    return [float(m.group(1)) / 100] + ([float(m.group(2)) / 100] if m.group(2) else [])


def torch_accuracies(line):
    try:
        m = json.loads(line)
    except ValueError:
        return None
    return [m["test_acc"], m.get("ema_test_acc")]


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="fashion-fast")
    parser.add_argument("--target", type=float, default=0.94)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=None)
    parser.add_argument("--torch-limit", type=float, default=2.5,
                        help="stop PyTorch after this many times convnet's time to the target")
    parser.add_argument("--venv", default=os.environ.get("CONVNET_COMPARE_VENV",
                                                         os.path.join(HERE, ".venv")))
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--twin", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.twin:
        return torch_twin(args)

    data = args.data or default_data()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "convnet")
    python = os.path.join(args.venv, "bin", "python3")
    ours = [binary, "train", "--recipe", args.recipe, "--data", data,
            "--threads", str(args.threads), "--seed", str(args.seed)]
    # The recipe as convnet prints it configures the twin.
    printed = subprocess.run(ours[:4] + ["--epochs", "0", "--dataset", "mnist-10k"],
                             capture_output=True, text=True, check=False).stdout
    same_as = next(l for l in printed.splitlines() if "the same as:" in l)
    options = parse_recipe_line(same_as.split("the same as:", 1)[1])
    print(f"recipe {args.recipe}: {same_as.split('the same as:', 1)[1].strip()}")
    theirs = [python, __file__, "--twin", "--data", data, "--threads", str(args.threads),
              "--seed", str(args.seed), "--options", json.dumps(options)]
    results = []
    for round_index in range(args.rounds):
        order = ["convnet", "pytorch"] if round_index % 2 == 0 else ["pytorch", "convnet"]
        got = {}
        for side in order:
            if side == "convnet":
                got[side] = run_side(ours, convnet_accuracies, args.target)
            else:
                limit = None
                if "convnet" in got and got["convnet"][0] is not None:
                    limit = args.torch_limit * got["convnet"][0]
                got[side] = run_side(theirs, torch_accuracies, args.target, limit)
            reached, curve, rss, stopped = got[side]
            print(f"round {round_index + 1} {side}: time to {100 * args.target:.1f} %: "
                  f"{'%.1f s' % reached if reached else ('more than %.1f s' % curve[-1][0] if stopped else 'not reached')}, "
                  f"peak RSS {rss:.0f} MB, curve {curve}", flush=True)
        results.append(got)
    for got in results:
        ours_t, theirs_t = got["convnet"][0], got["pytorch"][0]
        if ours_t and theirs_t:
            print(f"convnet / PyTorch time to target: {ours_t / theirs_t:.2f}")
        elif ours_t and got["pytorch"][3]:
            print(f"convnet / PyTorch time to target: < {ours_t / got['pytorch'][1][-1][0]:.2f} "
                  f"(PyTorch stopped at {args.torch_limit}x convnet's time)")


if __name__ == "__main__":
    main()
