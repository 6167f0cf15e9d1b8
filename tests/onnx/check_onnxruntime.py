#!/usr/bin/env python3
"""ONNX Runtime conformance for convnet's ONNX export and import.

    check_onnxruntime.py DIR            # check DIR/*.onnx (written by the Rust test
                                        # `conformance_fixtures`) and write
                                        # "PyTorch-style" models to DIR/foreign
    check_onnxruntime.py --fixture DIR  # write the committed fixtures
                                        # (tests/fixtures/onnx)
    check_onnxruntime.py DIR --bench    # also: ONNX Runtime images/s for simple

For each convnet export X.onnx, X.json holds test digits and convnet's
probabilities; ONNX Runtime's softmax(logits) must match them to 1e-5, for
the whole batch and for one image (the batch dimension is dynamic).

The foreign models are built with the `onnx` package's helper the way
torch.onnx.export writes them (initializers, Constant, Identity, Flatten,
Gemm with transB=1, Reshape, MatMul + Add, BatchNormalization with
eps=1e-5, a final Softmax, opset 17); each X.json holds the input and ONNX
Runtime's output, which the Rust test `foreign_models_match_onnxruntime`
compares with convnet's after `import`.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

TOLERANCE = 1e-5


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_exports(folder):
    failures = 0
    models = sorted(folder.glob("*.onnx"))
    if not models:
        sys.exit(f"no .onnx files in {folder}")
    for path in models:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        data = json.loads(path.with_suffix(".json").read_text())
        x = np.array(data["input"], dtype=np.float32).reshape(data["input_shape"])
        expected = np.array(data["probabilities"], dtype=np.float32)
        sess = session(path)
        assert [i.name for i in sess.get_inputs()] == ["input"], sess.get_inputs()
        assert [o.name for o in sess.get_outputs()] == ["logits"], sess.get_outputs()
        logits = sess.run(None, {"input": x})[0]
        got = softmax(logits.astype(np.float64))
        error = float(np.abs(got - expected).max())
        one = softmax(sess.run(None, {"input": x[:1]})[0].astype(np.float64))
        error_one = float(np.abs(one - expected[:1]).max())
        ok = error <= TOLERANCE and error_one <= TOLERANCE
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {path.name}: max |ORT - convnet| = {error:.2e} (batch {len(x)}), {error_one:.2e} (batch 1)")
    return failures


def tensor(rng, name, *shape, scale=0.5):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def pytorch_style_a(rng):
    """Conv-BN-ReLU-MaxPool-Identity-Flatten-Gemm-ReLU-Reshape-MatMul-Add-Softmax on 1x8x8."""
    inits = [
        tensor(rng, "conv.weight", 4, 1, 3, 3),
        tensor(rng, "conv.bias", 4),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn.weight"),
        tensor(rng, "bn.bias", 4),
        tensor(rng, "bn.running_mean", 4),
        numpy_helper.from_array(rng.uniform(0.2, 2.0, 4).astype(np.float32), "bn.running_var"),
        tensor(rng, "fc1.weight", 16, 64),
        tensor(rng, "fc1.bias", 16),
        tensor(rng, "onnx::MatMul_20", 16, 10),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "conv.weight", "conv.bias"], ["/conv/Conv_output_0"], name="/conv/Conv",
                         dilations=[1, 1], group=1, kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["/conv/Conv_output_0", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                         ["/bn/BatchNormalization_output_0"], name="/bn/BatchNormalization", epsilon=1e-5, momentum=0.9),
        helper.make_node("Relu", ["/bn/BatchNormalization_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        helper.make_node("MaxPool", ["/relu/Relu_output_0"], ["/pool/MaxPool_output_0"], name="/pool/MaxPool",
                         ceil_mode=0, dilations=[1, 1], kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2]),
        helper.make_node("Identity", ["/pool/MaxPool_output_0"], ["/Identity_output_0"], name="/Identity"),
        helper.make_node("Flatten", ["/Identity_output_0"], ["/flatten/Flatten_output_0"], name="/flatten/Flatten", axis=1),
        helper.make_node("Gemm", ["/flatten/Flatten_output_0", "fc1.weight", "fc1.bias"], ["/fc1/Gemm_output_0"], name="/fc1/Gemm",
                         alpha=1.0, beta=1.0, transB=1),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu_1/Relu_output_0"], name="/relu_1/Relu"),
        helper.make_node("Constant", [], ["/Constant_output_0"], name="/Constant",
                         value=numpy_helper.from_array(np.array([0, -1], dtype=np.int64))),
        helper.make_node("Reshape", ["/relu_1/Relu_output_0", "/Constant_output_0"], ["/Reshape_output_0"], name="/Reshape"),
        helper.make_node("MatMul", ["/Reshape_output_0", "onnx::MatMul_20"], ["/fc2/MatMul_output_0"], name="/fc2/MatMul"),
        helper.make_node("Constant", [], ["fc2.bias"], name="/fc2/Constant",
                         value=numpy_helper.from_array((rng.standard_normal(10) * 0.5).astype(np.float32))),
        helper.make_node("Add", ["/fc2/MatMul_output_0", "fc2.bias"], ["/fc2/Add_output_0"], name="/fc2/Add"),
        helper.make_node("Softmax", ["/fc2/Add_output_0"], ["output"], name="/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch_size", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 10])],
        inits)
    return graph, (1, 8, 8), True


def pytorch_style_b(rng):
    """AvgPool (padding counted), Sigmoid, LRN, Tanh, GAP, Flatten, Gemm (transB=0) on 3x9x9."""
    inits = [
        tensor(rng, "conv.weight", 6, 3, 3, 3),
        tensor(rng, "conv.bias", 6),
        tensor(rng, "conv2.weight", 8, 6, 1, 1),
        tensor(rng, "fc.weight", 8, 5),
        tensor(rng, "fc.bias", 5),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c1"], name="conv", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"], name="sigmoid"),
        helper.make_node("AveragePool", ["s1"], ["p1"], name="avgpool", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("LRN", ["p1"], ["n1"], name="lrn", size=3, alpha=1e-2, beta=0.75, bias=2.0),
        helper.make_node("Conv", ["n1", "conv2.weight"], ["c2"], name="conv2", kernel_shape=[1, 1]),
        helper.make_node("Tanh", ["c2"], ["t1"], name="tanh"),
        helper.make_node("GlobalAveragePool", ["t1"], ["g1"], name="gap"),
        helper.make_node("Flatten", ["g1"], ["f1"], name="flatten"),
        helper.make_node("Gemm", ["f1", "fc.weight", "fc.bias"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "b",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits)
    return graph, (3, 9, 9), False


def write_foreign(folder, batch=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, build in [("pytorch-style-a", pytorch_style_a), ("pytorch-style-b", pytorch_style_b)]:
        graph, shape, ends_in_softmax = build(rng)
        model = helper.make_model(graph, producer_name="pytorch-style test", opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        path = folder / f"{name}.onnx"
        onnx.save(model, str(path))
        x = rng.uniform(0, 1, (batch, *shape)).astype(np.float32)
        sess = session(path)
        y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        path.with_suffix(".json").write_text(json.dumps({
            "input_shape": list(x.shape),
            "input": [float(v) for v in x.ravel()],
            "output": [float(v) for v in y.ravel()],
            "softmax": ends_in_softmax,
        }))
        print(f"wrote {path}")


def bench(folder):
    path = folder / "simple.onnx"
    options = ort.SessionOptions()
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for batch in (1, 1000):
        x = np.random.default_rng(0).uniform(0, 1, (batch, 1, 28, 28)).astype(np.float32)
        sess.run(None, {"input": x})
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < 2.0:
            sess.run(None, {"input": x})
            runs += 1
        rate = runs * batch / (time.perf_counter() - start)
        print(f"ONNX Runtime {ort.__version__}, simple, batch {batch}: {rate:,.0f} images/s (default threads)")


def main(argv):
    if argv[:1] == ["--fixture"] and len(argv) == 2:
        write_foreign(Path(argv[1]), batch=2)
        return 0
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    folder = Path(argv[0])
    failures = check_exports(folder)
    write_foreign(folder / "foreign")
    if "--bench" in argv:
        bench(folder)
    if failures:
        print(f"{failures} model(s) differ from convnet")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
