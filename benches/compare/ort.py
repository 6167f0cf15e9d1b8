#!/usr/bin/env python3
"""convnet's inference against ONNX Runtime on the same networks and machine.

For each network (--models) it writes a checkpoint of initial weights
(`convnet train --epochs 0 --save`; the weights do not change the speed) and
exports it to ONNX (`convnet export`, opset 13, NCHW float32, dynamic batch).
Then, for each of --rounds rounds and each network, it runs one process per
side, one after the other so that both see the same machine state:

    ours  convnet bench --json --inference-batches 1,1000 --threads N
    ORT   ort.py ort-worker --intra-op 1   (the exported model, random inputs)
    ORT   ort.py ort-worker --intra-op 2   (the same, two intra-op threads)

(odd rounds in that order, even rounds ORT first). ONNX Runtime runs on the
CPU execution provider with graph optimisation ORT_ENABLE_ALL, sequential
execution, one inter-op thread and denormals flushed to zero (as convnet
does); of its intra-op settings (--intra-op, default 1,2) the better one
counts, per round and batch size. --threads 1,2 does the same for convnet
(one bench process per thread count, the better counts; default 2 only). Each figure is images/s over about --seconds after one warm-up
call, like `convnet bench`. Each process's peak RSS is read from the kernel
when it ends (os.wait4), the same way for both sides.

It prints the medians as a Markdown table (images/s at batch 1 and 1,000,
ratio ours / ORT, peak RSS) with the goals (batch 1 >= 1.5x ORT, batch 1,000
>= 1.0x ORT, peak RSS <= ORT's), then every round's figures.

`ort.py ort-profile --onnx M.onnx --batch B`, run with the ORT venv's
python, prints ONNX Runtime's per-node profile of one model instead (the
counterpart of `convnet bench --layers`).

The runner needs only the Python standard library; ONNX Runtime runs from
the virtual environment benches/compare/.venv-ort, created here (pip install
onnxruntime numpy) when it does not exist. See benches/compare/README.md.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MODELS = ("simple", "lenet5", "deep")
GOALS = {"inf1": 1.5, "inf1000": 1.0}  # minimum ratio ours / ORT, images/s


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


# ---------------------------------------------------------------- the ORT side

def rate(seconds, step):
    """Calls per second of step() over about `seconds` (one warm-up call, at
    least 3 timed calls), like `rate` in src/bin/convnet/bench.rs. Also the
    PyTorch side's (torch_models.py imports it)."""
    step()
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - start)


def peak_rss_mb():
    """This process's peak resident memory in MB (ru_maxrss is KiB on Linux)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def session_options(ort, intra_op):
    """ORT's settings on both of its sides here: `intra_op` threads, one
    inter-op thread, sequential, every graph optimisation, denormals
    flushed to zero (as convnet does)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def ort_worker(args):
    """Runs in the ORT venv: one session on --onnx, images/s at each batch
    size on random inputs; prints one JSON line."""
    import numpy as np
    import onnxruntime as ort

    options = session_options(ort, args.intra_op)
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = [int(d) for d in model_input.shape[1:]]
    rng = np.random.default_rng(1)
    results = []
    for batch in args.inference_batches:
        x = rng.random((batch, *shape), dtype=np.float32)
        calls = rate(args.seconds, lambda: session.run(None, {model_input.name: x}))
        results.append({"batch": batch, "images_per_s": calls * batch})
    print(json.dumps({"onnxruntime": ort.__version__, "numpy": np.__version__,
                      "providers": session.get_providers(), "intra_op": args.intra_op,
                      "input_shape": shape, "inference": results,
                      "peak_rss_mb": peak_rss_mb()}), flush=True)


def ort_profile(args):
    """Runs in the ORT venv: ORT's own per-node profile (enable_profiling) of
    --calls runs at one batch size; prints microseconds per image per node."""
    import collections
    import numpy as np
    import onnxruntime as ort

    options = session_options(ort, args.intra_op)
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "convnet-ort-profile")
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    x = np.random.default_rng(1).random(
        (args.batch, *[int(d) for d in model_input.shape[1:]]), dtype=np.float32)
    session.run(None, {model_input.name: x})  # warm-up, profiled too: counted below
    for _ in range(args.calls):
        session.run(None, {model_input.name: x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    total, ops = collections.defaultdict(float), {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            node = event["name"][:-len("_kernel_time")]
            total[node] += event["dur"]
            ops[node] = event["args"].get("op_name", "?")
    per_image = 1 / ((args.calls + 1) * args.batch)
    whole = sum(total.values())
    print(f"onnxruntime {ort.__version__}, intra-op {args.intra_op}, batch {args.batch}, "
          f"{args.calls} calls + 1 warm-up: {whole * per_image:.1f} us per image in the nodes")
    for node, us in sorted(total.items(), key=lambda kv: -kv[1]):
        print(f"  {node:32} {ops[node]:16} {us * per_image:8.2f} us per image "
              f"{100 * us / whole:5.1f} %")


# ---------------------------------------------------------------- setup

def ensure_venv(venv):
    """The venv's python, creating the venv with onnxruntime and numpy if missing."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    log(f"creating {venv} (pip install onnxruntime numpy)")
    run_checked([sys.executable, "-m", "venv", venv])
    run_checked([python, "-m", "pip", "install", "onnxruntime", "numpy"])
    return python


def export_models(convnet, models, work):
    """{model: path of its ONNX file}: initial weights, exported."""
    paths = {}
    for model in models:
        checkpoint = work / f"{model}.safetensors"
        onnx = work / f"{model}.onnx"
        run_checked([convnet, "train", "--model", model, "--epochs", 0, "--save", checkpoint],
                    stdout=subprocess.DEVNULL)
        run_checked([convnet, "export", "--checkpoint", checkpoint, "--onnx", onnx],
                    stdout=subprocess.DEVNULL)
        paths[model] = onnx
    return paths


class CpuMeter:
    """How much of the machine others used while the comparison ran.

    The load average cannot tell: it counts the comparison's own processes.
    This takes the CPU time the kernel counted as busy on all cores
    (/proc/stat: user, nice, system, irq, softirq) and as stolen by the
    hypervisor (steal), between `CpuMeter()` and `finish()`, less the CPU
    time of this process and of its waited-for children (getrusage): what
    is left is other processes' work. Linux only; elsewhere `finish()`
    gives None."""

    BUSY_SHARE = 0.25  # of one core, on average: above this the run was shared
    STEAL_SHARE = 0.05  # of all cores' time

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(f) for f in fields] + [0] * 10
        user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
        hz = os.sysconf("SC_CLK_TCK")
        own = sum(getattr(resource.getrusage(who), f) for who in
                  (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        return {"busy": (user + nice + system + irq + softirq) / hz, "steal": steal / hz,
                "own": own, "wall": time.monotonic()}

    def finish(self, cores):
        """{"others": average cores used by other processes, "steal": share of
        all cores' time stolen, "busy": whether either is above its limit}."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        delta = {k: end[k] - self.start[k] for k in end}
        wall = max(delta["wall"], 1e-9)
        others = max(0.0, delta["busy"] - delta["own"]) / wall
        steal = delta["steal"] / (wall * (cores or 1))
        return {"others": others, "steal": steal,
                "busy": others > self.BUSY_SHARE or steal > self.STEAL_SHARE}


def machine_line(info):
    """The report's first line: the machine, and whether others used it."""
    line = f"machine: {info['cpu']}, {info['cores']} cores ({info['os']})"
    usage = info.get("cpu_usage")
    if usage is None:
        return line + "; other processes' CPU use not measured (no /proc/stat)"
    line += (f"; other processes used {100 * usage['others']:.0f} % of a core on average "
             f"during the run, the hypervisor stole {100 * usage['steal']:.1f} % of the "
             "cores' time")
    if usage["busy"]:
        line += (f" - THE MACHINE WAS SHARED (above {100 * CpuMeter.BUSY_SHARE:.0f} % "
                 f"or {100 * CpuMeter.STEAL_SHARE:.0f} %): these figures are not trustworthy")
    return line


def machine_info(convnet):
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # the checkout the binary lies in (this one for target/release/convnet)
    tree = capture(["git", "-C", Path(convnet).parent, "rev-parse", "--show-toplevel"])
    commit = capture(["git", "-C", tree, "rev-parse", "--short", "HEAD"]) if tree else ""
    if not commit:
        commit = "unknown (the binary is outside a git checkout)"
    elif capture(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"]):
        commit += " (with uncommitted changes)"
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "convnet": str(convnet), "convnet_commit": commit}


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


def figures(result, rss):
    out = {"rss": rss}
    for item in result["inference"]:
        out[f"inf{item['batch']}"] = item["images_per_s"]
    return out


def ours_bench(convnet, model, threads, args, work, tag):
    cmd = [convnet, "bench", "--model", model, "--json",
           "--inference-batches", args.inference_batches, "--threads", threads,
           "--seconds", args.seconds]
    text, rss = measured(cmd, work / f"{tag}.log")
    result = last_json(text, "inference")
    return figures(result, rss), result["input_shape"]


def ort_bench(python, onnx, intra_op, args, work, tag):
    cmd = [python, Path(__file__).resolve(), "ort-worker", "--onnx", onnx,
           "--intra-op", intra_op, "--inference-batches", args.inference_batches,
           "--seconds", args.seconds]
    text, rss = measured(cmd, work / f"{tag}.log")
    result = last_json(text, "onnxruntime")
    return figures(result, rss), result


# ---------------------------------------------------------------- report

def best_of(by_threads, keys, rss):
    """One round's figures of one side: the higher images/s of its thread
    settings per batch size (and which won); of the peak RSS, rss(...) (max
    for ours, min for ORT: the comparison that is harder for ours)."""
    best = {}
    for key in keys:
        threads, value = max(((t, f[key]) for t, f in by_threads.items()),
                             key=lambda tv: tv[1])
        best[key], best[key + "_threads"] = value, threads
    best["rss"] = rss(f["rss"] for f in by_threads.values())
    return best


def fmt_ratio(ratio, goal, lower_is_better=False):
    met = ratio <= goal if lower_is_better else ratio >= goal
    return f"{ratio:.2f}", ("met" if met else "**not met**")


def report(rounds, info, args, keys):
    lines = [
        machine_line(info),
        f"versions: convnet {info['convnet_commit']} ({info['convnet']}), onnxruntime "
        f"{info.get('onnxruntime', '?')} (CPUExecutionProvider), numpy {info.get('numpy', '?')}",
        f"settings: convnet --threads {args.threads}; ORT intra-op {args.intra_op} (the better "
        f"counts), inter-op 1, ORT_ENABLE_ALL, sequential; medians of {args.rounds} "
        f"alternated round(s), {args.seconds:g} s per figure after a warm-up call",
        "ratio = ours / ORT; peak RSS: the larger of ours' processes, the smaller of ORT's",
        "",
        "| network | measure | ours | ORT | ratio | goal | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for model in rounds[0]:
        ours = {k: statistics.median(r[model]["ours"][k] for r in rounds) for k in keys + ["rss"]}
        ort = {k: statistics.median(r[model]["ort"][k] for r in rounds) for k in keys + ["rss"]}
        for key in keys:
            batch = int(key[3:])
            won = {side: "/".join(map(str, sorted({r[model][side][key + "_threads"]
                                                    for r in rounds})))
                   for side in ("ours", "ort")}
            ratio, verdict = fmt_ratio(ours[key] / ort[key], GOALS.get(key, 1.0))
            lines.append(f"| {model} | batch {batch:,}, images/s | {ours[key]:,.0f} "
                         f"({won['ours']} thr.) | {ort[key]:,.0f} ({won['ort']} thr.) | "
                         f"{ratio} | ≥ {GOALS.get(key, 1.0):g} | {verdict} |")
        ratio, verdict = fmt_ratio(ours["rss"] / ort["rss"], 1.0, lower_is_better=True)
        lines.append(f"| {model} | peak RSS, MB | {ours['rss']:,.0f} | {ort['rss']:,.0f} | "
                     f"{ratio} | ≤ 1 | {verdict} |")
    header = ["round", "network"]
    for key in keys:
        batch = int(key[3:])
        header += [f"ours b{batch} ({args.threads.replace(',', ' / ')} thr.)",
                   f"ORT b{batch} ({args.intra_op.replace(',', ' / ')} thr.)", f"ratio b{batch}"]
    header += [f"RSS ours ({args.threads.replace(',', ' / ')} thr.)",
               f"RSS ORT ({args.intra_op.replace(',', ' / ')} thr.)"]
    lines += ["", "Every round (images/s per thread setting; ratio of the better ones; "
              "peak RSS MB per process):", "",
              "| " + " | ".join(header) + " |", "|---:|---|" + "---:|" * (len(header) - 2)]
    for number, r in enumerate(rounds, 1):
        for model, sides in r.items():
            o, b = sides["ours"], sides["ort"]
            to, tb = sides["ours_by_threads"], sides["ort_by_threads"]
            cells = [str(number), model]
            for key in keys:
                cells += [" / ".join(f"{to[n][key]:,.0f}" for n in sorted(to)),
                          " / ".join(f"{tb[n][key]:,.0f}" for n in sorted(tb)),
                          f"{o[key] / b[key]:.2f}"]
            cells += [" / ".join(f"{to[n]['rss']:,.0f}" for n in sorted(to)),
                      " / ".join(f"{tb[n]['rss']:,.0f}" for n in sorted(tb))]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "ort-profile":
        parser = argparse.ArgumentParser(prog="ort.py ort-profile",
                                         description="ORT's per-node profile of one model "
                                         "(run with the ORT venv's python)")
        parser.add_argument("ort_profile")
        parser.add_argument("--onnx", required=True)
        parser.add_argument("--intra-op", type=int, default=1)
        parser.add_argument("--batch", type=int, default=1000)
        parser.add_argument("--calls", type=int, default=20)
        ort_profile(parser.parse_args())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "ort-worker":
        parser = argparse.ArgumentParser(prog="ort.py ort-worker")
        parser.add_argument("ort_worker")
        parser.add_argument("--onnx", required=True)
        parser.add_argument("--intra-op", type=int, default=1)
        parser.add_argument("--inference-batches", default="1,1000",
                            type=lambda s: [int(b) for b in s.split(",")])
        parser.add_argument("--seconds", type=float, default=3.0)
        ort_worker(parser.parse_args())
        return

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated: simple, lenet5, deep (default all three)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", default="2",
                        help="convnet's --threads; a list such as 1,2 runs one bench per "
                        "count and the better counts (default 2)")
    parser.add_argument("--intra-op", default="1,2",
                        help="ORT intra-op thread counts to try (the better counts)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="seconds per figure, after a warm-up call (default 3)")
    parser.add_argument("--inference-batches", default="1,1000")
    parser.add_argument("--convnet", type=Path, default=ROOT / "target" / "release" / "convnet",
                        help="the convnet binary (default target/release/convnet; not built here)")
    parser.add_argument("--venv", default=os.environ.get("CONVNET_ORT_VENV", HERE / ".venv-ort"),
                        type=Path, help="ONNX Runtime's virtual environment (default "
                        "benches/compare/.venv-ort or $CONVNET_ORT_VENV); created when missing")
    parser.add_argument("--json-out", type=Path, help="also write every round's figures here")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the processes' logs and the ONNX files (their folder is printed)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    intra_ops = [int(t) for t in args.intra_op.split(",")]
    our_threads = [int(t) for t in args.threads.split(",")]
    unknown = set(models) - set(MODELS)
    if unknown or args.rounds < 1 or min(our_threads) < 1 or min(intra_ops) < 1:
        parser.error(f"bad --models/--rounds/--threads/--intra-op ({', '.join(sorted(unknown))})")
    convnet = args.convnet.resolve()
    if not convnet.exists():
        sys.exit(f"{convnet}: no such binary (cargo build --release, or pass --convnet)")
    keys = [f"inf{int(b)}" for b in args.inference_batches.split(",")]

    info = machine_info(convnet)
    meter = CpuMeter()
    python = ensure_venv(args.venv)
    work = Path(tempfile.mkdtemp(prefix="convnet-ort-"))
    rounds, raw = [], []
    try:
        onnx = export_models(convnet, models, work)
        for r in range(1, args.rounds + 1):
            this_round = {}
            for model in models:
                ours_steps = [("ours", t) for t in our_threads]
                ort_steps = [("ort", t) for t in intra_ops]
                # odd rounds: ours first; even rounds: ORT first
                steps = ours_steps + ort_steps if r % 2 else ort_steps + ours_steps
                by_threads = {"ours": {}, "ort": {}}
                for side, threads in steps:
                    load = os.getloadavg()[0]
                    start = time.monotonic()
                    tag = f"{model}-{r}-{side}{threads}"
                    if side == "ours":
                        got, shape = ours_bench(convnet, model, threads, args, work, tag)
                    else:
                        got, result = ort_bench(python, onnx[model], threads, args, work, tag)
                        info["onnxruntime"], info["numpy"] = result["onnxruntime"], result["numpy"]
                        ort_shape = result["input_shape"]
                    by_threads[side][threads] = got
                    log(f"round {r} {model} {side} {threads} thr.: "
                        + ", ".join(f"{k} {v:.4g}" for k, v in got.items())
                        + f" (load {load:.2f}, {time.monotonic() - start:.0f} s)")
                    raw.append({"round": r, "model": model, "side": side,
                                "intra_op": threads, "load_before": load, **got})
                if list(shape) != list(ort_shape):
                    sys.exit(f"{model}: input shapes differ: convnet {shape}, ONNX {ort_shape}")
                this_round[model] = {"ours": best_of(by_threads["ours"], keys, max),
                                     "ort": best_of(by_threads["ort"], keys, min),
                                     "ours_by_threads": by_threads["ours"],
                                     "ort_by_threads": by_threads["ort"]}
            rounds.append(this_round)
    finally:
        if args.keep_logs:
            log(f"logs and ONNX files in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    info["cpu_usage"] = meter.finish(info["cores"])
    print(report(rounds, info, args, keys))
    if args.json_out:
        args.json_out.write_text(json.dumps({"info": info, "rounds": raw}, indent=1))


if __name__ == "__main__":
    main()
