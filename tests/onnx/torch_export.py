#!/usr/bin/env python3
"""PyTorch's own `torch.onnx.export` of convnet's networks, as golden fixtures.

Regenerate (from the repository root; PyTorch 2.15 CPU, onnx and onnxscript
in the benchmark's venv, see benches/compare/README.md; with torch 2.15.0,
onnx 1.23.2 and onnxscript 0.7.2 the files come out byte for byte the same):

    benches/compare/.venv/bin/pip install onnx onnxscript
    benches/compare/.venv/bin/python tests/onnx/torch_export.py tests/fixtures/onnx

For each network (simple, lenet5, deep, alexnet-small and `all-ops`, a
spec with every operator convnet has), this builds the PyTorch twin with
benches/compare/torch_models.py, gives it seeded random weights (biases and
batch-norm statistics too, so that no tensor is 0 or 1), puts it in eval
mode and exports it with torch.onnx.export's defaults as a user calls it:

    torch.onnx.export(model, (x,), "torch-NAME.onnx", input_names=["input"],
                      output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("N")},))

that is the torch.export-based ("dynamo") exporter, the default since
PyTorch 2.9, its default opset, and the weights in an external data file
beside the model (`torch-NAME.onnx.data`), also the default. `legacy-all-ops`
(all-ops without LRN) is exported with the legacy TorchScript-based exporter
(`dynamo=False`, `dynamic_axes={"input": {0: "N"}, ...}`, weights inline),
which still has users. It then writes
`torch-NAME.json`: 4 images of the model's input shape (random bytes / 255,
as convnet scales pixels), PyTorch's outputs for them (float32, the logits;
the all-ops models end in a softmax, so theirs are probabilities), the torch
version, the exporter and the opset. The ONNX file itself is checked
against PyTorch's outputs with the `onnx` package's reference evaluator.
The Rust test `torch_onnx_export_models_match_pytorch` (tests/onnx.rs)
imports each model and compares convnet's outputs with PyTorch's to 1e-5.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "benches" / "compare"))
import torch_models as tm  # noqa: E402

# Every operator convnet imports from PyTorch: conv with stride and padding
# (followed by a batch norm, which the exporter folds into the conv), max
# pooling with padding, batch norm on images (convnet's eps 1e-6), LRN
# (odd size), sigmoid, average pooling with padding (count_include_pad, as
# convnet's), tanh, global average pooling, batch norm on features, dropout,
# affine, relu, batch norm on features with PyTorch's eps 1e-5.
ALL_OPS = ("conv(8,3,stride=2,pad=1)-bn-relu-maxpool(3,stride=2,pad=1)-bn-lrn(3,1e-3,0.75,2)"
           "-conv(8,3,pad=1)-sigmoid-avgpool(2,stride=2,pad=1)-conv(16,3,pad=1)-tanh-gap-bn"
           "-dropout(0.25)-affine(32)-relu-bn(eps=1e-5)-affine(10)")

# The same without LRN, for the legacy TorchScript-based exporter
# (dynamo=False), which writes LRN with Shape, Gather, If, ... nodes that
# convnet does not import.
ALL_OPS_BUT_LRN = ALL_OPS.replace("-lrn(3,1e-3,0.75,2)", "")

# name: (spec, init, exporter); every model's input is convnet's (1, 28, 28),
# 10 classes.
NETWORKS = {
    "simple": (tm.model_spec("simple"), "he", "dynamo"),
    "lenet5": (tm.model_spec("lenet5"), "xavier", "dynamo"),
    "deep": (tm.model_spec("deep"), "he", "dynamo"),
    "alexnet-small": (tm.model_spec("alexnet-small"), "he", "dynamo"),
    "all-ops": (ALL_OPS, "he", "dynamo"),
    "legacy-all-ops": (ALL_OPS_BUT_LRN, "he", "legacy"),
}
EXPORTERS = {
    "dynamo": "torch.onnx.export, dynamo=True (the default), external data (the default)",
    "legacy": "torch.onnx.export, dynamo=False (the legacy TorchScript-based exporter)",
}
INPUT_SHAPE = (1, 28, 28)
IMAGES = 4
SEED = 2024
TOLERANCE = 1e-5


def randomise(model, init, generator):
    """convnet's initialisation for the weights, then random biases and
    batch-norm parameters and running statistics."""
    tm.init_weights(model, init)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.uniform_(-0.1, 0.1, generator=generator)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.2, 2.0, generator=generator)


def build(name):
    spec, init, _ = NETWORKS[name]
    torch.manual_seed(SEED)  # init_weights draws from the global generator
    generator = torch.Generator().manual_seed(SEED)
    model = tm.build_spec(spec, INPUT_SHAPE)
    randomise(model, init, generator)
    softmax = name.endswith("all-ops")
    if softmax:
        model.append(nn.Softmax(dim=1))
    x = torch.randint(0, 256, (IMAGES, *INPUT_SHAPE), generator=generator).float() / 255
    return spec, model.eval(), x, softmax


def export(name, folder):
    spec, model, x, softmax = build(name)
    with torch.no_grad():
        expected = model(x)
    path = folder / f"torch-{name}.onnx"
    for old in (path, path.with_name(path.name + ".data")):
        old.unlink(missing_ok=True)
    output = "probabilities" if softmax else "logits"
    exporter = NETWORKS[name][2]
    if exporter == "dynamo":
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=[output],
                          dynamic_shapes=({0: torch.export.Dim("N")},))
    else:
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=[output],
                          dynamo=False, dynamic_axes={"input": {0: "N"}, output: {0: "N"}})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    # The file itself gives PyTorch's outputs (onnx's reference evaluator).
    (got,) = onnx.reference.ReferenceEvaluator(proto).run(None, {"input": x.numpy()})
    reference_error = float(np.abs(got - expected.numpy()).max())
    if reference_error > TOLERANCE:
        sys.exit(f"{path}: the ONNX file differs from PyTorch by {reference_error:.2e}")
    record = {
        "model": name,
        "spec": spec,
        "torch": torch.__version__,
        "exporter": EXPORTERS[exporter],
        "opset": opset,
        "seed": SEED,
        "softmax": softmax,
        "input_shape": list(x.shape),
        "input": x.flatten().double().tolist(),
        "output": expected.flatten().double().tolist(),
    }
    (folder / f"torch-{name}.json").write_text(json.dumps(record) + "\n")
    sizes = [p.stat().st_size for p in folder.glob(f"torch-{name}.*")]
    print(f"torch-{name}: opset {opset}, {sum(sizes) / 1e6:.2f} MB, "
          f"ONNX reference vs PyTorch {reference_error:.1e}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export",
                            category=DeprecationWarning)
    for name in NETWORKS:
        export(name, folder)


if __name__ == "__main__":
    main()
