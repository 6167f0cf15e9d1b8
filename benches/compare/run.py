#!/usr/bin/env python3
"""convnet against PyTorch on the same networks, data and machine.

For each network (--models) and each of --rounds rounds it runs, one after
the other so that both sides see the same machine state:

    ours   convnet train --epochs 1 (one training epoch on the data folder)
    torch  torch_models.py train    (the same)
    ours   convnet bench --json     (training step and inference images/s)
    torch  torch_models.py inference (the same)

and prints, per network, the medians and the ratios ours / PyTorch as a
Markdown table, with the machine and versions. Each process's peak RSS is
read from the kernel when it ends (os.wait4), the same way for both sides.

Needs only the Python standard library; PyTorch runs from the virtual
environment benches/compare/.venv, created here (pip install torch numpy)
when it does not exist. See benches/compare/README.md.
"""

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONVNET = ROOT / "target" / "release" / "convnet"
TORCH_SCRIPT = HERE / "torch_models.py"
DATA_CANDIDATES = [ROOT.parent / "shared" / "data" / "fashion-mnist",
                   Path("/usr/share/datasets/fashion-mnist")]
IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def log(message):
    print(message, file=sys.stderr, flush=True)


def run_checked(cmd, **kwargs):
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def capture(cmd):
    """stdout of cmd, or '' when it cannot run."""
    try:
        return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


# ---------------------------------------------------------------- setup

def ensure_venv(venv, torch_index_url):
    """The venv's python, creating the venv with torch and numpy if missing."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    log(f"creating {venv} (torch is a large download: PyPI's default Linux wheel "
        "bundles CUDA; it runs on the CPU all the same)")
    run_checked([sys.executable, "-m", "venv", venv])
    run_checked([python, "-m", "pip", "install", "--upgrade", "pip"])
    run_checked([python, "-m", "pip", "install", "numpy"])
    index = ["--index-url", torch_index_url] if torch_index_url else []
    run_checked([python, "-m", "pip", "install", "torch", *index])
    return python


def find_data(data):
    if data:
        return Path(data).resolve()
    for candidate in DATA_CANDIDATES:
        if (candidate / "train-images-idx3-ubyte.gz").exists() or \
                (candidate / "train-images-idx3-ubyte").exists():
            return candidate.resolve()
    sys.exit("no Fashion-MNIST folder found: pass --data DIR (an MNIST-format IDX folder)")


def read_idx_bytes(folder, name):
    for candidate, opener in ((folder / (name + ".gz"), gzip.open), (folder / name, open)):
        if candidate.exists():
            with opener(candidate, "rb") as f:
                return f.read()
    sys.exit(f"{folder}: no {name}[.gz]")


def subset_folder(data, count, parent):
    """A folder with the first `count` images of each split of `data` (IDX,
    gzipped), so that both sides train on the same, smaller set."""
    out = Path(parent) / f"{data.name}-first-{count}"
    out.mkdir()
    for names in IDX_NAMES.values():
        for name in names:
            raw = read_idx_bytes(data, name)
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
            n = min(count, shape[0])
            per_item = 1
            for d in shape[1:]:
                per_item *= d
            header = raw[:4] + n.to_bytes(4, "big") + raw[8:4 + 4 * dims]
            body = raw[4 + 4 * dims:4 + 4 * dims + n * per_item]
            with gzip.open(out / (name + ".gz"), "wb", compresslevel=1) as f:
                f.write(header + body)
    return out


def machine_info():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = capture(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "unknown"
    if capture(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "rustc": capture(["rustc", "--version"]) or "unknown", "convnet_commit": commit}


# ---------------------------------------------------------------- measuring

def measured(cmd, log_path):
    """Runs cmd with stdout+stderr to log_path; returns (stdout text, peak RSS
    MB of that process alone, from the kernel's rusage of the child)."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = Path(log_path).read_text()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
                 + "\n".join(text.splitlines()[-20:]))
    return text, usage.ru_maxrss * 1024 / 1e6


def last_json(text, key):
    """The last line of text that is a JSON object holding `key`."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if key in obj:
                return obj
    sys.exit(f"no JSON line with '{key}' in:\n{text[-2000:]}")


def ours_train(model, args, data, work, tag):
    metrics = work / f"{tag}.metrics.jsonl"
    cmd = [CONVNET, "train", "--model", model, "--data", data, "--epochs", 1,
           "--batch-size", 100, "--threads", args.threads, "--metrics", metrics]
    _, rss = measured(cmd, work / f"{tag}.log")
    epoch = json.loads(metrics.read_text().splitlines()[-1])
    return {"train_s": epoch["seconds"], "train_ips": epoch["images_per_second"],
            "test_acc": 100 * epoch["test_acc"], "train_rss": rss}


def torch_train(model, args, python, data, work, tag):
    cmd = [python, TORCH_SCRIPT, "train", "--model", model, "--data", data, "--epochs", 1,
           "--batch-size", 100, "--threads", args.threads]
    text, rss = measured(cmd, work / f"{tag}.log")
    epoch = last_json(text, "epochs")["epochs"][-1]
    return {"train_s": epoch["seconds"], "train_ips": epoch["images_per_second"],
            "test_acc": 100 * epoch["test_acc"], "train_rss": rss}


def bench_figures(result, rss):
    figures = {"step_ips": result["train"]["images_per_s"], "bench_rss": rss}
    for item in result["inference"]:
        figures[f"inf{item['batch']}"] = item["images_per_s"]
    return figures


def ours_bench(model, args, work, tag):
    cmd = [CONVNET, "bench", "--model", model, "--json", "--batch-size", 100,
           "--inference-batches", args.inference_batches, "--threads", args.threads,
           "--seconds", args.seconds]
    text, rss = measured(cmd, work / f"{tag}.log")
    return bench_figures(last_json(text, "inference"), rss)


def torch_bench(model, args, python, work, tag):
    cmd = [python, TORCH_SCRIPT, "inference", "--model", model, "--batch-size", 100,
           "--inference-batches", args.inference_batches, "--threads", args.threads,
           "--seconds", args.seconds]
    text, rss = measured(cmd, work / f"{tag}.log")
    result = last_json(text, "inference")
    return bench_figures(result, rss), result["torch"]


def param_counts(models, python):
    """{model: (ours, torch)} parameter counts."""
    counts = {}
    for model in models:
        text = capture([CONVNET, "summary", "--model", model])
        match = re.search(r"total parameters:\s*([\d,]+)", text)
        ours = int(match.group(1).replace(",", "")) if match else None
        theirs = json.loads(capture([python, TORCH_SCRIPT, "summary", "--model", model]))
        counts[model] = (ours, theirs["params"])
    return counts


# ---------------------------------------------------------------- report

def rows(inference_batches, train_images):
    epoch = "epoch" if train_images is None else f"pass over {train_images:,} images"
    table = [("train_s", f"training, seconds per {epoch}", "{:.2f}"),
             ("train_ips", "training, images/s (data folder, shuffled)", "{:,.0f}"),
             ("step_ips", "training step, images/s (one random batch of 100)", "{:,.0f}")]
    for batch in inference_batches.split(","):
        table.append((f"inf{int(batch)}", f"inference batch {int(batch):,}, images/s", "{:,.0f}"))
    table += [("train_rss", "peak RSS, training process (MB)", "{:,.0f}"),
              ("bench_rss", "peak RSS, bench/inference process (MB)", "{:,.0f}"),
              ("test_acc", "test accuracy after the epoch (%, sanity check)", "{:.2f}")]
    return table


def report(results, counts, info, args):
    lines = [
        f"machine: {info['cpu']}, {info['cores']} cores ({info['os']}); 1-minute load "
        f"average {info['load']:.2f} at the start"
        + (" - THE MACHINE WAS BUSY: these figures are not trustworthy"
           if info["load"] > 0.5 * (info["cores"] or 1) else ""),
        f"versions: convnet {info['convnet_commit']}, {info['rustc']}, torch {info['torch']}",
        f"settings: {args.threads} threads, batch 100, Adam lr 0.001, data {info['data']}, "
        f"medians of {args.rounds} round(s) run alternately (ours, PyTorch, ...), "
        f"{args.seconds:g} s per bench figure",
        "ratio = ours / PyTorch (above 1: ours is higher - better for images/s and accuracy, "
        "worse for seconds and RSS)",
        "",
        "parameters: " + ", ".join(
            f"{m} ours {o:,} / PyTorch {t:,} {'(equal)' if o == t else '(DIFFERENT)'}"
            for m, (o, t) in counts.items()),
    ]
    for model, sides in results.items():
        lines += ["", f"### {model}", "",
                  "| measure | ours | PyTorch | ratio |", "|---|---:|---:|---:|"]
        for key, label, fmt in rows(args.inference_batches, args.train_images):
            ours = sides["ours"].get(key, [])
            theirs = sides["torch"].get(key, [])
            if not ours or not theirs:
                continue
            a, b = statistics.median(ours), statistics.median(theirs)
            ratio = f"{a / b:.2f}" if b else "-"
            lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="simple,deep,lenet5",
                        help="comma-separated: simple, deep, lenet5 (default all three)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", help="MNIST-format IDX folder (default: Fashion-MNIST "
                        "in ../shared/data/fashion-mnist or /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per bench figure, after a warm-up (default 3)")
    parser.add_argument("--inference-batches", default="1,1000")
    parser.add_argument("--train-images", type=int, metavar="N",
                        help="quick runs: both sides train (and test) on the first N images "
                        "of each split, from a temporary copy of the data folder")
    parser.add_argument("--venv", default=os.environ.get("CONVNET_COMPARE_VENV",
                                                         HERE / ".venv"), type=Path,
                        help="PyTorch's virtual environment (default benches/compare/.venv "
                        "or $CONVNET_COMPARE_VENV); created when missing")
    parser.add_argument("--torch-index-url", help="pip index for torch when creating the "
                        "venv, e.g. https://download.pytorch.org/whl/cpu (a smaller CPU-only "
                        "wheel)")
    parser.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    parser.add_argument("--json-out", type=Path, help="also write every round's figures here")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs (their folder is printed)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"simple", "deep", "lenet5"}
    if unknown or args.rounds < 1 or args.threads < 1:
        parser.error(f"bad --models/--rounds/--threads ({', '.join(sorted(unknown))})")

    load = os.getloadavg()[0]  # before our own build and runs add to it
    python = ensure_venv(args.venv, args.torch_index_url)
    if not args.no_build:
        run_checked(["cargo", "build", "--release"], cwd=ROOT)
    work = Path(tempfile.mkdtemp(prefix="convnet-compare-"))
    data = find_data(args.data)
    if args.train_images:
        data = subset_folder(data, args.train_images, work)
    info = machine_info()
    info["load"] = load
    info["data"] = str(data)
    counts = param_counts(models, python)
    for model, (ours, theirs) in counts.items():
        log(f"{model}: parameters ours {ours} / PyTorch {theirs}")

    results = {m: {"ours": {}, "torch": {}} for m in models}
    raw = []
    try:
        for r in range(1, args.rounds + 1):
            for model in models:
                steps = [
                    ("ours", "train", lambda: ours_train(model, args, data, work, f"{model}-{r}-ours-train")),
                    ("torch", "train", lambda: torch_train(model, args, python, data, work, f"{model}-{r}-torch-train")),
                    ("ours", "bench", lambda: ours_bench(model, args, work, f"{model}-{r}-ours-bench")),
                    ("torch", "bench", lambda: torch_bench(model, args, python, work, f"{model}-{r}-torch-bench")),
                ]
                for side, what, step in steps:
                    start = time.monotonic()
                    figures = step()
                    if side == "torch" and what == "bench":
                        figures, info["torch"] = figures
                    log(f"round {r} {model} {side} {what}: "
                        + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
                        + f" ({time.monotonic() - start:.0f} s)")
                    for key, value in figures.items():
                        results[model][side].setdefault(key, []).append(value)
                    raw.append({"round": r, "model": model, "side": side, "what": what,
                                **figures})
    finally:
        if args.keep_logs:
            log(f"logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    info.setdefault("torch", "unknown")
    print(report(results, counts, info, args))
    if args.json_out:
        args.json_out.write_text(json.dumps({"info": info, "params": counts, "rounds": raw},
                                            indent=1))


if __name__ == "__main__":
    main()
