"""A real KServe v2 model server for the agent's tests: KServe's Python
ModelServer (kserve 0.21, installed in .cache/testenv by ./scripts/test),
REST and gRPC, serving `credit`: a fixed logistic score of the example's
features (label INT64 [N], probabilities FP32 [N, 2]), in the form the
request asks for (KServe decides: binary where asked over REST, raw over
gRPC when the inputs were raw).

usage: kserve_server.py HTTP_PORT GRPC_PORT
"""

import sys

import numpy as np
from kserve import InferOutput, InferResponse, Model, ModelServer


class Credit(Model):
    def __init__(self, name):
        super().__init__(name)
        self.ready = True

    def predict(self, payload, headers=None):
        cols = {i.name: i.as_numpy().astype(np.float64).reshape(-1) for i in payload.inputs}
        n = len(next(iter(cols.values())))
        zero = np.zeros(n)
        z = (cols.get("age", zero) - 40) / 10 + (cols.get("income", zero) - 40000) / 20000
        score = 1 / (1 + np.exp(-z))
        proba = np.stack([1 - score, score], axis=1).astype(np.float32)
        label = (score > 0.5).astype(np.int64)
        outputs = [InferOutput("label", [n], "INT64"), InferOutput("probabilities", [n, 2], "FP32")]
        outputs[0].set_data_from_numpy(label, binary_data=False)
        outputs[1].set_data_from_numpy(proba, binary_data=False)
        # KServe picks the answer's form from the request's (binary_data,
        # binary_data_output; raw over gRPC when the inputs were raw).
        return InferResponse(
            model_name=self.name,
            infer_outputs=outputs,
            response_id=payload.id or "",
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


if __name__ == "__main__":
    http_port, grpc_port = int(sys.argv[1]), int(sys.argv[2])
    ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start([Credit("credit")])
