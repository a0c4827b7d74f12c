#!/usr/bin/env python3
"""A stand-in for `cumulus serve`, for checking the harness's Cumulus path before the gateway
exists. It is NOT a peer and is never benchmarked:

    bench/serve/run.sh --systems cumulus ...   # needs the real binary
    .venv/mlserver/bin/python bench.py --systems cumulus --cumulus-bin peers/cumulus_stand_in.py \\
        --loadgen L --rates 20 --duration 2 --out-dir out/stand-in --results out/stand-in/results

It takes `cumulus serve`'s arguments (`serve --models DIR --http ADDR --grpc ADDR --config FILE`),
reads every model folder under DIR exactly as Cumulus would have to (config.json, and
model.safetensors with `layers.{i}.weight` [out, in] and `layers.{i}.bias`), and answers
`GET /v2/health/ready` and V2 REST JSON `POST /v2/models/{m}/infer` with numpy. Since bench.py
compares every server's answers with make_model.py's reference outputs, a run through it also
checks that the Cumulus folder holds the same model as the ONNX file.
"""

import json
import os
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

try:
    import numpy as np
except ImportError:  # Re-run under the benchmark's venv, which has numpy.
    venv = Path(__file__).resolve().parent.parent / ".venv" / "mlserver" / "bin" / "python"
    os.execv(str(venv), [str(venv), __file__] + sys.argv[1:])


def load_folder(folder):
    cfg = json.loads((folder / "config.json").read_text())["model"]
    raw = (folder / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    tensors = {}
    for name, h in header.items():
        assert h["dtype"] == "F32", name
        a, b = h["data_offsets"]
        tensors[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(h["shape"])
    layers = [(tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"])
              for i in range(len(cfg["hidden"]) + 1)]
    return layers


def forward(layers, x):
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def main():
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))  # argv[1] is "serve"
    models = {d.name: load_folder(d) for d in Path(args["--models"]).iterdir() if d.is_dir()}
    host, port = args.get("--http", "127.0.0.1:8000").rsplit(":", 1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v2/health/ready":
                self.reply(200, {"ready": True})
            else:
                self.reply(404, {"error": f"no route {self.path}"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            parts = self.path.strip("/").split("/")
            if len(parts) != 4 or parts[:2] != ["v2", "models"] or parts[3] != "infer" \
                    or parts[2] not in models:
                return self.reply(404, {"error": f"no model route {self.path}"})
            inp = json.loads(body)["inputs"][0]
            x = np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])
            y = forward(models[parts[2]], x)
            self.reply(200, {"model_name": parts[2], "outputs": [
                {"name": "output", "shape": list(y.shape), "datatype": "FP32",
                 "data": y.ravel().tolist()}]})

        def log_message(self, *_):
            pass

    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
