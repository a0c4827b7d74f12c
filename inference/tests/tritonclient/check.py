#!/usr/bin/env python3
"""Drives a KServe V2 server with the official tritonclient (http and grpc), unchanged.

    python check.py --http HOST:PORT --grpc HOST:PORT [--model NAME] [--fake] [--oversize-bytes N]

Generic checks (any server; they build inputs from the model's own metadata):
  health, server and model metadata, model ready; infer with JSON and with binary tensors,
  request id echoed, one requested output only, custom parameters accepted; the repository
  index, unload (then not ready, infer refused) and load (ready again); the error cases
  (unknown model, wrong shape, wrong datatype, wrong input name, an oversized request), each
  of which must raise tritonclient's InferenceServerException whose message names what was
  wrong, after which the server must still answer.

With --fake (the fake backend of examples/fake_kserve_server.rs), also exact values: every
datatype through identity models in JSON and binary (BYTES, FP16 and BF16 included), several
datatypes in one request, parameters echoed, overloaded (429 / RESOURCE_EXHAUSTED) and internal
errors (generic message), a model that must be loaded before use.

Prints one line per check and a last line "N passed, N failed"; exits 1 if any failed.
"""

import argparse
import sys
import traceback

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

RESULTS = {"passed": 0, "failed": 0}


def check(name, fn):
    try:
        fn()
    except Exception:  # noqa: BLE001 - every failure is reported, then the run goes on
        RESULTS["failed"] += 1
        print(f"FAIL {name}")
        traceback.print_exc(limit=4)
    else:
        RESULTS["passed"] += 1
        print(f"ok   {name}")


class Client:
    """One tritonclient module (http or grpc) behind one interface."""

    def __init__(self, kind, url):
        self.kind = kind
        self.mod = httpclient if kind == "http" else grpcclient
        self.c = self.mod.InferenceServerClient(url=url)

    def server_metadata(self):
        if self.kind == "http":
            return self.c.get_server_metadata()
        return self.c.get_server_metadata(as_json=True)

    def model_metadata(self, name, version=""):
        if self.kind == "http":
            m = self.c.get_model_metadata(name, version)
        else:
            m = self.c.get_model_metadata(name, version, as_json=True)
        for t in m.get("inputs", []) + m.get("outputs", []):
            t["shape"] = [int(d) for d in t["shape"]]  # grpc's JSON writes int64 as strings
        return m

    def index(self):
        if self.kind == "http":
            return self.c.get_model_repository_index()
        return self.c.get_model_repository_index(as_json=True).get("models", [])

    def infer(self, model, arrays, binary=True, outputs=None, binary_outputs=True, **kw):
        """`arrays`: [(name, datatype, numpy array)]; `outputs`: names to request (None: all)."""
        inputs = []
        for name, datatype, array in arrays:
            i = self.mod.InferInput(name, list(array.shape), datatype)
            if self.kind == "http":
                i.set_data_from_numpy(array, binary_data=binary)
            else:
                i.set_data_from_numpy(array)
            inputs.append(i)
        requested = None
        if outputs is not None:
            if self.kind == "http":
                requested = [self.mod.InferRequestedOutput(o, binary_data=binary_outputs) for o in outputs]
            else:
                requested = [self.mod.InferRequestedOutput(o) for o in outputs]
        return self.c.infer(model, inputs, outputs=requested, **kw)

    def response(self, result):
        if self.kind == "http":
            return result.get_response()
        return result.get_response(as_json=True)

    def still_answers(self):
        assert self.c.is_server_live(), "the server stopped answering"


def sample(datatype, shape, rng):
    """An array of `datatype` and `shape` with values every type holds."""
    if datatype == "BYTES":
        flat = [f"s{i}-é".encode() for i in range(int(np.prod(shape)))]
        return np.array(flat, dtype=np.object_).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if datatype == "BF16":
        # tritonclient's BF16 array type: ml_dtypes.bfloat16 since r26.06, float32 before.
        return rng.integers(-8, 8, size=shape).astype(np.float32).astype(triton_to_np_dtype("BF16"))
    dtype = triton_to_np_dtype(datatype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 100, size=shape).astype(dtype)
    return (rng.standard_normal(size=shape) * 4).astype(dtype)


def concrete(shape, batch=2):
    """A concrete shape for metadata `shape`: -1 becomes `batch` first, 3 elsewhere."""
    return [(batch if i == 0 else 3) if d < 0 else d for i, d in enumerate(shape)]


def expect_error(fn, http_status, grpc_codes, names, kind):
    """Runs `fn`, which must raise InferenceServerException naming every string in `names`."""
    try:
        fn()
    except InferenceServerException as e:
        msg, status = e.message() or "", str(e.status())
        if kind == "http":
            assert status == str(http_status), f"status {status}, wanted {http_status}: {msg}"
        else:
            assert any(c in status for c in grpc_codes), f"status {status}, wanted {grpc_codes}: {msg}"
        for n in names:
            assert n in msg, f"message {msg!r} does not name {n!r}"
        return msg
    raise AssertionError("no InferenceServerException raised")


def generic_checks(c, model, oversize, rng):
    k = c.kind
    meta = {}

    def health():
        assert c.c.is_server_live()
        assert c.c.is_server_ready()
        sm = c.server_metadata()
        assert sm["name"] and "version" in sm, sm
        assert "binary_tensor_data" in sm.get("extensions", []) or k == "grpc", sm

    def metadata():
        m = c.model_metadata(model)
        assert m["name"] == model, m
        assert m["inputs"] and m["outputs"], m
        meta.update(m)
        assert c.c.is_model_ready(model)

    check(f"{k}: health and server metadata", health)
    check(f"{k}: model metadata and ready", metadata)
    if not meta:
        return
    arrays = [(t["name"], t["datatype"], sample(t["datatype"], concrete(t["shape"]), rng)) for t in meta["inputs"]]
    out_names = [t["name"] for t in meta["outputs"]]
    has_bf16 = any(t["datatype"] == "BF16" for t in meta["inputs"])

    def infer_binary():
        r = c.infer(model, arrays, binary=True, request_id="req-42", parameters={"custom": "yes"})
        for o in meta["outputs"]:
            assert r.as_numpy(o["name"]) is not None, f"no output {o['name']}"
        assert c.response(r)["id"] == "req-42"

    def infer_json():
        if k == "grpc" or has_bf16:
            return  # grpc has no JSON; tritonclient sends BF16 only in binary
        r = c.infer(model, arrays, binary=False, outputs=out_names, binary_outputs=False)
        for o in meta["outputs"]:
            assert r.get_output(o["name"]).get("data") is not None, "outputs asked for in JSON come as JSON"
            assert r.as_numpy(o["name"]) is not None

    def requested_output():
        r = c.infer(model, arrays, outputs=[out_names[0]])
        outs = c.response(r)["outputs"]
        assert [o["name"] for o in outs] == [out_names[0]], outs

    check(f"{k}: infer with binary tensors, request id echoed, parameters accepted", infer_binary)
    check(f"{k}: infer with JSON tensors", infer_json)
    check(f"{k}: only the requested output comes back", requested_output)

    first = meta["inputs"][0]
    wrong_dtype = "BYTES" if first["datatype"] != "BYTES" else "FP32"
    bad_shape = concrete(first["shape"]) + [2]
    cases = [
        ("unknown model", lambda: c.infer("no_such_model_xyz", arrays), 404, ["NOT_FOUND"], ["no_such_model_xyz"]),
        ("wrong shape", lambda: c.infer(model, [(first["name"], first["datatype"], sample(first["datatype"], bad_shape, rng))] + arrays[1:]),
         400, ["INVALID_ARGUMENT"], [first["name"]]),
        ("wrong datatype", lambda: c.infer(model, [(first["name"], wrong_dtype, sample(wrong_dtype, concrete(first["shape"]), rng))] + arrays[1:]),
         400, ["INVALID_ARGUMENT"], [first["name"]]),
        ("wrong input name", lambda: c.infer(model, [("NO_SUCH_INPUT", first["datatype"], arrays[0][2])] + arrays[1:]),
         400, ["INVALID_ARGUMENT"], ["NO_SUCH_INPUT"]),
    ]
    for what, fn, status, codes, names in cases:
        check(f"{k}: {what} is refused with a message naming it",
              lambda fn=fn, status=status, codes=codes, names=names: (expect_error(fn, status, codes, names, k), c.still_answers()))

    def oversized():
        dt = first["datatype"] if first["datatype"] not in ("BYTES", "BF16") else "UINT8"
        size = np.dtype(triton_to_np_dtype(dt)).itemsize
        big = np.zeros([oversize // size + 1], dtype=triton_to_np_dtype(dt))
        expect_error(lambda: c.infer(model, [(first["name"], dt, big)]), 413,
                     ["RESOURCE_EXHAUSTED"], [], k)
        c.still_answers()
        c.infer(model, arrays)

    check(f"{k}: an oversized request is refused and the server still serves", oversized)

    def repository():
        rows = {r["name"]: r for r in c.index()}
        assert rows.get(model, {}).get("state") == "READY", rows.get(model)
        c.c.unload_model(model)
        assert not c.c.is_model_ready(model)
        expect_error(lambda: c.infer(model, arrays), 503, ["UNAVAILABLE"], [model], k)
        c.c.load_model(model)
        assert c.c.is_model_ready(model)
        c.infer(model, arrays)

    check(f"{k}: repository index, unload and load", repository)


def fake_checks(c, rng):
    k = c.kind
    datatypes = ["BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
                 "FP16", "BF16", "FP32", "FP64", "BYTES"]

    def add_one():
        x = rng.standard_normal(size=(3, 4)).astype(np.float32)
        r = c.infer("add_one", [("INPUT0", "FP32", x)], parameters={"custom": "yes", "n": 3})
        np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x + 1)
        np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), x)
        params = c.response(r)["parameters"]
        if k == "http":
            assert params == {"custom": "yes", "n": 3}, params
        else:
            assert params["custom"]["string_param"] == "yes" and int(params["n"]["int64_param"]) == 3, params

    check(f"{k}: add_one values and parameters echoed", add_one)

    for dt in datatypes:
        for binary in (True, False):
            if not binary and (k == "grpc" or dt == "BF16"):
                continue

            def identity(dt=dt, binary=binary):
                x = sample(dt, [2, 3], rng)
                r = c.infer(f"identity_{dt.lower()}", [("INPUT0", dt, x)], binary=binary,
                            outputs=["OUTPUT0"], binary_outputs=binary)
                y = r.as_numpy("OUTPUT0")
                if dt == "BYTES" and not binary:
                    y = np.array([s.encode() for s in y.flatten()], dtype=np.object_).reshape(y.shape)
                assert y.shape == x.shape, (y.shape, x.shape)
                np.testing.assert_array_equal(y, x)

            check(f"{k}: {dt} round trip ({'binary' if binary else 'JSON'})", identity)

    def multi():
        a = rng.integers(-5, 5, size=(2, 2)).astype(np.int32)
        b = np.array([b"x", b""], dtype=np.object_)
        cc = rng.standard_normal(size=(2, 2)).astype(np.float16)
        d = np.array([True, False])
        r = c.infer("multi", [("A", "INT32", a), ("B", "BYTES", b), ("C", "FP16", cc), ("D", "BOOL", d)],
                    outputs=["D_OUT", "C_OUT", "B_OUT", "A_OUT"])
        assert [o["name"] for o in c.response(r)["outputs"]] == ["D_OUT", "C_OUT", "B_OUT", "A_OUT"]
        for name, want in (("A_OUT", a), ("B_OUT", b), ("C_OUT", cc), ("D_OUT", d)):
            np.testing.assert_array_equal(r.as_numpy(name), want)

    check(f"{k}: several datatypes in one request, outputs in the requested order", multi)

    x = np.ones((1, 4), dtype=np.float32)

    def busy():
        expect_error(lambda: c.infer("busy", [("INPUT0", "FP32", x)]), 429, ["RESOURCE_EXHAUSTED"], ["overloaded"], k)
        c.still_answers()

    def broken():
        msg = expect_error(lambda: c.infer("broken", [("INPUT0", "FP32", x)]), 500, ["INTERNAL"], [], k)
        assert "secret" not in msg and "GPU" not in msg, msg

    def sleepy():
        assert not c.c.is_model_ready("sleepy")
        expect_error(lambda: c.infer("sleepy", [("INPUT0", "FP32", x)]), 503, ["UNAVAILABLE"], ["sleepy"], k)
        c.c.load_model("sleepy")
        c.infer("sleepy", [("INPUT0", "FP32", x)])
        c.c.unload_model("sleepy", unload_dependents=True)
        assert not c.c.is_model_ready("sleepy")

    def unknown_version():
        expect_error(lambda: c.model_metadata("add_one", "9"), 404, ["NOT_FOUND"], ["9"], k)

    check(f"{k}: overloaded is refused with a retryable status", busy)
    check(f"{k}: an internal error says nothing of its detail", broken)
    check(f"{k}: a model must be loaded before use", sleepy)
    check(f"{k}: an unknown version is not found", unknown_version)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--http", required=True, help="HOST:PORT of the REST endpoint")
    p.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC endpoint")
    p.add_argument("--model", default="add_one", help="the model the generic checks use")
    p.add_argument("--fake", action="store_true", help="also run the fake backend's exact checks")
    p.add_argument("--oversize-bytes", type=int, default=(64 << 20) + (1 << 20),
                   help="bytes of the oversized request: more than the server's body limit")
    args = p.parse_args()
    rng = np.random.default_rng(7)
    for kind, url in (("http", args.http), ("grpc", args.grpc)):
        c = Client(kind, url)
        generic_checks(c, args.model, args.oversize_bytes, rng)
        if args.fake:
            fake_checks(c, rng)
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
