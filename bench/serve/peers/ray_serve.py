"""Ray Serve peer: the ONNX MLP behind a minimal KServe V2 REST JSON ``infer`` route.

    python ray_serve.py --model mlp.onnx --port 8100 --batch 8 --wait-ms 1   # @serve.batch
    python ray_serve.py --model mlp.onnx --port 8100 --batch 1               # no batching

One replica (one single-threaded onnxruntime session) on a local Ray started by this process, so
the whole Ray tree (GCS, raylet, proxy, controller, replica workers) descends from its pid. The
handler parses ``inputs[0]`` (flat or nested ``data`` with ``shape``) and answers ``outputs[0]``,
the shape of a V2 response, so the same load generator drives every server.
``max_ongoing_requests`` is raised well past the batch size (Ray's default of 5 would cap a batch
of 8 or 32 before it could form).
"""

import argparse
import os
import signal
import threading

import numpy as np
import onnxruntime as ort
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse


def make_session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def parse_v2(body):
    inp = body["inputs"][0]
    return np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])


def v2_answer(model, y):
    return JSONResponse({
        "model_name": model,
        "outputs": [{"name": "output", "shape": list(y.shape), "datatype": "FP32",
                     "data": y.ravel().tolist()}],
    })


def build(model_path, model_name, batch, wait_s, max_ongoing):
    if batch > 1:
        @serve.deployment(num_replicas=1, max_ongoing_requests=max_ongoing,
                          ray_actor_options={"num_cpus": 0})
        class BatchedMLP:
            def __init__(self):
                self.session = make_session(model_path)

            @serve.batch(max_batch_size=batch, batch_wait_timeout_s=wait_s)
            async def infer(self, xs):
                rows = [x.shape[0] for x in xs]
                y = self.session.run(["output"], {"input": np.concatenate(xs)})[0]
                return np.split(y, np.cumsum(rows)[:-1])

            async def __call__(self, request: Request):
                x = parse_v2(await request.json())
                return v2_answer(model_name, await self.infer(x))

        return BatchedMLP.bind()

    @serve.deployment(num_replicas=1, max_ongoing_requests=max_ongoing,
                      ray_actor_options={"num_cpus": 0})
    class MLP:
        def __init__(self):
            self.session = make_session(model_path)

        async def __call__(self, request: Request):
            x = parse_v2(await request.json())
            return v2_answer(model_name, self.session.run(["output"], {"input": x})[0])

    return MLP.bind()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", default="mlp")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--batch", type=int, default=1, help="max_batch_size (1: no @serve.batch)")
    ap.add_argument("--wait-ms", type=float, default=1.0, help="batch_wait_timeout_s, in ms")
    ap.add_argument("--max-ongoing", type=int, default=100)
    args = ap.parse_args()
    max_ongoing = max(args.max_ongoing, 2 * args.batch)

    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=128 * 1024 * 1024,
             log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(build(os.path.abspath(args.model), args.name, args.batch, args.wait_ms / 1000.0,
                    max_ongoing), name=args.name, route_prefix="/")
    print(f"ray serve ready on 127.0.0.1:{args.port} (batch {args.batch}, "
          f"wait {args.wait_ms} ms, max_ongoing_requests {max_ongoing})", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
