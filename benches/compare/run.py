#!/usr/bin/env python3
"""convnet against PyTorch and ONNX Runtime on the same networks, data and machine.

For each network (--models) it first exports convnet's initial weights to
ONNX (`convnet train --epochs 0 --save`, then `convnet export`; the weights
do not change the speed). Then, for each of --rounds rounds and each network,
it runs these processes one after the other, so that all three sides see the
same machine state:

    ours   convnet train --epochs 1            (one training epoch on the data folder)
    torch  torch_models.py train               (the same)
    ours   convnet bench --json                (training step and inference images/s)
    torch  torch_models.py inference           (the same)
    ORT    ort.py ort-worker --intra-op 1, 2   (inference of the exported model)

in that order of sides in odd rounds and in the reverse order (ORT, PyTorch,
ours) in even ones. Of ORT's intra-op settings (--intra-op) the better one
counts, per round and batch size, as in ort.py. It prints, per network, the
medians and the ratios ours / PyTorch and ours / ORT as one Markdown table,
with the goals against ORT (batch 1 >= 1.5x, batch 1,000 >= 1.0x, peak RSS
<= ORT's), the machine and the versions. Each process's peak RSS is read
from the kernel when it ends (os.wait4), the same way for every side.
--no-ort leaves ONNX Runtime out.

Needs only the Python standard library; the ORT side is ort.py's code,
imported. PyTorch runs from the virtual environment benches/compare/.venv
(pip install torch numpy), ONNX Runtime from benches/compare/.venv-ort (pip
install onnxruntime numpy), each created here when it does not exist. See
benches/compare/README.md.
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

import ort  # benches/compare/ort.py: the ONNX Runtime side and the shared helpers
from ort import capture, last_json, log, measured, run_checked

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CONVNET = ROOT / "target" / "release" / "convnet"  # the default; --convnet another
TORCH_SCRIPT = HERE / "torch_models.py"
DATA_CANDIDATES = [ROOT.parent / "shared" / "data" / "fashion-mnist",
                   Path("/usr/share/datasets/fashion-mnist")]
IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "t10k": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


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


# ---------------------------------------------------------------- measuring

def ours_train(model, args, data, work, tag):
    metrics = work / f"{tag}.metrics.jsonl"
    cmd = [args.convnet, "train", "--model", model, "--data", data, "--epochs", 1,
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
    """(figures, the input shape convnet's network takes)."""
    cmd = [args.convnet, "bench", "--model", model, "--json", "--batch-size", 100,
           "--inference-batches", args.inference_batches, "--threads", args.threads,
           "--seconds", args.seconds]
    text, rss = measured(cmd, work / f"{tag}.log")
    result = last_json(text, "inference")
    return bench_figures(result, rss), result["input_shape"]


def torch_bench(model, args, python, work, tag):
    cmd = [python, TORCH_SCRIPT, "inference", "--model", model, "--batch-size", 100,
           "--inference-batches", args.inference_batches, "--threads", args.threads,
           "--seconds", args.seconds]
    text, rss = measured(cmd, work / f"{tag}.log")
    result = last_json(text, "inference")
    return bench_figures(result, rss), result["torch"]


def ort_bench(model, args, python, onnx, work, tag):
    """ORT's figures of one round: one ort.py worker per --intra-op setting;
    returns ({intra-op: figures}, the model's input shape, the last worker's
    JSON line (versions))."""
    by_threads = {}
    for threads in args.intra_ops:
        got, result = ort.ort_bench(python, onnx, threads, args, work, f"{tag}{threads}")
        by_threads[threads] = got
    return by_threads, result["input_shape"], result


def param_counts(models, convnet, python):
    """{model: (ours, torch)} parameter counts."""
    counts = {}
    for model in models:
        text = capture([convnet, "summary", "--model", model])
        match = re.search(r"total parameters:\s*([\d,]+)", text)
        ours = int(match.group(1).replace(",", "")) if match else None
        theirs = json.loads(capture([python, TORCH_SCRIPT, "summary", "--model", model]))
        counts[model] = (ours, theirs["params"])
    return counts


# ---------------------------------------------------------------- report

def rows(inference_batches, train_images):
    """(key, label, format, compared with ORT too)."""
    epoch = "epoch" if train_images is None else f"pass over {train_images:,} images"
    table = [("train_s", f"training, seconds per {epoch}", "{:.2f}", False),
             ("train_ips", "training, images/s (data folder, shuffled)", "{:,.0f}", False),
             ("step_ips", "training step, images/s (one random batch of 100)", "{:,.0f}", False)]
    for batch in inference_batches.split(","):
        table.append((f"inf{int(batch)}", f"inference batch {int(batch):,}, images/s",
                      "{:,.0f}", True))
    table += [("train_rss", "peak RSS, training process (MB)", "{:,.0f}", False),
              ("bench_rss", "peak RSS, bench/inference process (MB)", "{:,.0f}", True),
              ("test_acc", "test accuracy after the epoch (%, sanity check)", "{:.2f}", False)]
    return table


def ort_goal(key, ratio):
    """'≥ 1.5, met' and the like: ort.py's goals for ours / ORT."""
    if key == "bench_rss":
        _, verdict = ort.fmt_ratio(ratio, 1.0, lower_is_better=True)
        return f"≤ 1, {verdict}"
    goal = ort.GOALS.get(key, 1.0)
    _, verdict = ort.fmt_ratio(ratio, goal)
    return f"≥ {goal:g}, {verdict}"


def report(results, counts, info, args):
    versions = f"versions: convnet {info['convnet_commit']} ({info['convnet']}), " \
               f"{info['rustc']}, torch {info['torch']}"
    settings = f"settings: {args.threads} threads (convnet --threads, torch.set_num_threads)"
    if args.ort:
        versions += f", onnxruntime {info.get('onnxruntime', '?')} (CPUExecutionProvider), " \
                    f"numpy {info.get('numpy', '?')}"
        settings += f"; ORT intra-op {args.intra_op} (the better counts), inter-op 1, " \
                    "ORT_ENABLE_ALL, sequential"
    lines = [
        ort.machine_line(info),
        versions,
        settings + f"; batch 100, Adam lr 0.001, data {info['data']}; medians of "
        f"{args.rounds} round(s), the sides alternated (odd rounds ours first, even "
        f"rounds ours last); {args.seconds:g} s per bench figure after a warm-up call",
        "ratio = ours / PyTorch" + (", ours / ORT" if args.ort else "")
        + " (above 1: ours is higher - better for images/s and accuracy, worse for seconds "
        "and RSS)" + ("; ORT's peak RSS: the smaller of its processes; goals against "
                      "ORT as in ort.py" if args.ort else ""),
        "",
        "parameters: " + ", ".join(
            f"{m} ours {o:,} / PyTorch {t:,} {'(equal)' if o == t else '(DIFFERENT)'}"
            for m, (o, t) in counts.items()),
    ]
    if args.ort:
        header = ["| measure | ours | PyTorch | ORT | ours / PyTorch | ours / ORT | goal vs ORT |",
                  "|---|---:|---:|---:|---:|---:|---|"]
    else:
        header = ["| measure | ours | PyTorch | ours / PyTorch |", "|---|---:|---:|---:|"]
    for model, sides in results.items():
        lines += ["", f"### {model}", ""] + header
        for key, label, fmt, with_ort in rows(args.inference_batches, args.train_images):
            ours = sides["ours"].get(key, [])
            theirs = sides["torch"].get(key, [])
            if not ours or not theirs:
                continue
            a, b = statistics.median(ours), statistics.median(theirs)
            cells = [label, fmt.format(a), fmt.format(b)]
            ratio = f"{a / b:.2f}" if b else "-"
            if not args.ort:
                lines.append("| " + " | ".join(cells + [ratio]) + " |")
                continue
            ort_values = sides["ort"].get(key, [])
            if with_ort and ort_values:
                c = statistics.median(ort_values)
                won = sides["ort"].get(key + "_threads")
                cells.append(fmt.format(c) + (" ({} thr.)".format(
                    "/".join(map(str, sorted(set(won))))) if won else ""))
                cells += [ratio, f"{a / c:.2f}" if c else "-", ort_goal(key, a / c) if c else ""]
            else:
                cells += ["—", ratio, "—", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="simple,deep,lenet5",
                        help="comma-separated: simple, deep, lenet5 (default all three)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2,
                        help="convnet's --threads and PyTorch's set_num_threads (default 2)")
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
    parser.add_argument("--ort", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure ONNX Runtime's inference (default on; --no-ort "
                        "leaves it out)")
    parser.add_argument("--intra-op", default="1,2",
                        help="ORT intra-op thread counts to try, one process each; the "
                        "better counts (default 1,2)")
    parser.add_argument("--ort-venv", default=os.environ.get("CONVNET_ORT_VENV",
                                                             HERE / ".venv-ort"), type=Path,
                        help="ONNX Runtime's virtual environment (default "
                        "benches/compare/.venv-ort or $CONVNET_ORT_VENV); created when missing")
    parser.add_argument("--convnet", type=Path,
                        help="measure this convnet binary (not built; default "
                        "target/release/convnet, built first unless --no-build)")
    parser.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    parser.add_argument("--json-out", type=Path, help="also write every round's figures here")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs and the ONNX files (their folder is "
                        "printed)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"simple", "deep", "lenet5"}
    args.intra_ops = [int(t) for t in args.intra_op.split(",") if t.strip()]
    if unknown or args.rounds < 1 or args.threads < 1 or not args.intra_ops \
            or min(args.intra_ops) < 1:
        parser.error(f"bad --models/--rounds/--threads/--intra-op ({', '.join(sorted(unknown))})")
    keys = [f"inf{int(b)}" for b in args.inference_batches.split(",")]

    meter = ort.CpuMeter()  # others' use of the machine from here to the report
    python = ensure_venv(args.venv, args.torch_index_url)
    ort_python = ort.ensure_venv(args.ort_venv) if args.ort else None
    if args.convnet is None:
        args.convnet = CONVNET
        if not args.no_build:
            run_checked(["cargo", "build", "--release"], cwd=ROOT)
    args.convnet = args.convnet.resolve()
    if not args.convnet.exists():
        sys.exit(f"{args.convnet}: no such binary (cargo build --release, or pass --convnet)")
    work = Path(tempfile.mkdtemp(prefix="convnet-compare-"))
    data = find_data(args.data)
    if args.train_images:
        data = subset_folder(data, args.train_images, work)
    info = ort.machine_info(args.convnet)
    info["rustc"] = capture(["rustc", "--version"]) or "unknown"
    info["data"] = str(data)
    counts = param_counts(models, args.convnet, python)
    for model, (ours, theirs) in counts.items():
        log(f"{model}: parameters ours {ours} / PyTorch {theirs}")

    results = {m: {"ours": {}, "torch": {}, "ort": {}} for m in models}
    raw = []
    try:
        onnx = ort.export_models(args.convnet, models, work) if args.ort else {}
        for r in range(1, args.rounds + 1):
            # odd rounds: ours, PyTorch, ORT; even rounds: ORT, PyTorch, ours
            order = ["ours", "torch", "ort"] if r % 2 else ["ort", "torch", "ours"]
            if not args.ort:
                order.remove("ort")
            for model in models:
                tag = f"{model}-{r}"
                train = {
                    "ours": lambda: ours_train(model, args, data, work, f"{tag}-ours-train"),
                    "torch": lambda: torch_train(model, args, python, data, work,
                                                 f"{tag}-torch-train"),
                }
                bench = {
                    "ours": lambda: ours_bench(model, args, work, f"{tag}-ours-bench"),
                    "torch": lambda: torch_bench(model, args, python, work,
                                                 f"{tag}-torch-bench"),
                    "ort": lambda: ort_bench(model, args, ort_python, onnx.get(model), work,
                                             f"{tag}-ort-intra"),
                }
                steps = [(side, "train", train[side]) for side in order if side in train]
                steps += [(side, "bench", bench[side]) for side in order]
                shapes = {}
                for side, what, step in steps:
                    start = time.monotonic()
                    load_before = os.getloadavg()[0]
                    figures = step()
                    if side == "ours" and what == "bench":
                        figures, shapes["ours"] = figures
                    elif side == "torch" and what == "bench":
                        figures, info["torch"] = figures
                    elif side == "ort":
                        by_threads, shapes["ort"], result = figures
                        info["onnxruntime"], info["numpy"] = result["onnxruntime"], result["numpy"]
                        for threads, got in by_threads.items():
                            log(f"round {r} {model} ort intra-op {threads}: "
                                + ", ".join(f"{k} {v:.4g}" for k, v in got.items()))
                            raw.append({"round": r, "model": model, "side": "ort",
                                        "what": "bench", "intra_op": threads,
                                        "bench_rss": got["rss"],
                                        **{k: v for k, v in got.items() if k != "rss"}})
                        # ort.py's rule: the better images/s per batch size, the smaller RSS
                        best = ort.best_of(by_threads, keys, min)
                        figures = {"bench_rss": best.pop("rss"), **best}
                        what = "best of intra-op " + args.intra_op
                    log(f"round {r} {model} {side} {what}: "
                        + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
                        + f" (load {load_before:.2f}, {time.monotonic() - start:.0f} s)")
                    for key, value in figures.items():
                        results[model][side].setdefault(key, []).append(value)
                    raw.append({"round": r, "model": model, "side": side, "what": what,
                                "load_before": load_before, **figures})
                if args.ort and list(shapes["ours"]) != list(shapes["ort"]):
                    sys.exit(f"{model}: input shapes differ: convnet {shapes['ours']}, "
                             f"ONNX {shapes['ort']}")
    finally:
        if args.keep_logs:
            log(f"logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    info["cpu_usage"] = meter.finish(info["cores"])
    info.setdefault("torch", "unknown")
    print(report(results, counts, info, args))
    if args.json_out:
        args.json_out.write_text(json.dumps({"info": info, "params": counts, "rounds": raw},
                                            indent=1, default=str))


if __name__ == "__main__":
    main()
