"""An MLServer runtime that runs an ONNX model with onnxruntime (PyPI has no mlserver-onnx).

Model settings: ``"implementation": "ort_runtime.OnnxRuntime"``, ``"parameters": {"uri": "mlp.onnx"}``.
MLServer's adaptive batching (``max_batch_size`` / ``max_batch_time``) concatenates queued
requests along the first dimension before ``predict`` and splits the answer after it, so the
runtime only ever sees one tensor.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self.settings)
        opts = ort.SessionOptions()
        # One core is the whole budget: no intra- or inter-op thread pools.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        ys = self._session.run(self._outputs, {self._input: x})
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output(name, y) for name, y in zip(self._outputs, ys)],
        )
