#!/usr/bin/env python3
"""The served model of the serving benchmark: an MLP 784-512-512-10 with ReLU, weights from a
fixed seed, written twice with the same numbers:

- ``OUT/mlp.onnx`` for the peers (MLServer and Ray Serve run it with onnxruntime): input ``input``
  FP32 [N, 784], output ``output`` FP32 [N, 10], three Gemm (transB=1) with Relu between;
- ``OUT/cumulus/mlp/`` as a Cumulus model folder (``cumulus serve --models OUT/cumulus``):
  ``config.json`` (the ``FolderConfig`` of models/src/folder.rs: the ``mlp`` ``ModelConfig`` plus the
  V2 tensor specs) and ``model.safetensors`` with ``layers.{0,1,2}.weight`` [out, in] and
  ``layers.{0,1,2}.bias`` [out], F32, the names and layouts of models/src/zoo/mlp.rs (candle's
  Linear computes x W^T + b);
- ``OUT/reference.json``: a few seeded inputs and the outputs every server must return for them.

It checks onnxruntime against a numpy reference of the same math before writing anything.

    python make_model.py --out bench/serve/out/model
"""

import argparse
import json
import struct
from pathlib import Path

import numpy as np

SEED = 20250101
DIMS = [784, 512, 512, 10]


def weights(seed=SEED):
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from one seeded stream."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(DIMS[:-1], DIMS[1:]):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
        layers.append((w, b))
    return layers


def reference_forward(layers, x):
    """x W^T + b, ReLU after every layer but the last, in float64 for a tight reference."""
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64).T + b.astype(np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


def onnx_model(layers):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    prev = "input"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"layers.{i}.weight"),
                  numpy_helper.from_array(b, f"layers.{i}.bias")]
        last = i == len(layers) - 1
        out = "output" if last else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"layers.{i}.weight", f"layers.{i}.bias"],
                                      [out], transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"]))
            prev = f"relu{i}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", DIMS[0]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", DIMS[-1]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="cumulus-bench-serve")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def safetensors_bytes(tensors):
    """The safetensors format: u64 LE header length, JSON header (8-byte aligned), raw data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def folder_config():
    return {
        "model": {"arch": "mlp", "input_dim": DIMS[0], "hidden": DIMS[1:-1],
                  "n_outputs": DIMS[-1], "activation": "relu", "dropout": 0.0},
        "inputs": [{"name": "input", "shape": [-1, DIMS[0]], "datatype": "FP32"}],
        "outputs": [{"name": "output", "shape": [-1, DIMS[-1]], "datatype": "FP32"}],
    }


def reference_inputs(n=4, seed=7):
    # Same kind of values as the load generator's payloads: uniform in [0, 1), like pixels.
    return np.random.default_rng(seed).random((n, DIMS[0]), dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import onnxruntime as ort

    layers = weights()
    model = onnx_model(layers)
    x = reference_inputs()
    expected = reference_forward(layers, x)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["output"], {"input": x})[0]
    worst = float(np.max(np.abs(got - expected)))
    scale = float(np.max(np.abs(expected)))
    # Row by row at batch 1 too, as the servers see most requests.
    worst_single = max(float(np.max(np.abs(sess.run(["output"], {"input": x[i:i + 1]})[0]
                                            - expected[i:i + 1]))) for i in range(len(x)))
    if max(worst, worst_single) > 1e-4 * max(scale, 1.0):
        raise SystemExit(f"onnxruntime disagrees with the numpy reference: {worst} / {worst_single}")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mlp.onnx").write_bytes(model.SerializeToString())
    folder = args.out / "cumulus" / "mlp"
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, (w, b) in enumerate(layers):
        tensors[f"layers.{i}.weight"] = w
        tensors[f"layers.{i}.bias"] = b
    (folder / "model.safetensors").write_bytes(safetensors_bytes(tensors))
    (folder / "config.json").write_text(json.dumps(folder_config(), indent=2) + "\n")
    (args.out / "reference.json").write_text(json.dumps({
        "seed": SEED,
        "inputs": x.tolist(),
        "outputs": expected.astype(np.float32).tolist(),
        "onnxruntime_max_abs_error": max(worst, worst_single),
    }) + "\n")
    params = sum(w.size + b.size for w, b in layers)
    print(f"mlp {'-'.join(map(str, DIMS))}: {params} params; onnxruntime vs numpy max |diff| "
          f"{max(worst, worst_single):.2e} (outputs up to {scale:.3f}); written to {args.out}")


if __name__ == "__main__":
    main()
