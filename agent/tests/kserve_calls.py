"""Calls a real KServe v2 server (kserve_server.py) directly and through
the agent with the official clients, tritonclient[http,grpc] 2.73.0, and
checks that every answer through the agent equals the direct one. Used by
agent/tests/kserve.rs.

usage: kserve_calls.py REST_ADDR GRPC_ADDR AGENT_ADDR [--only-raw] EXPECTED_JSON

Inferences of the example rows without a missing value (one tensor per
feature: FP32, INT64 `dependents`, FP64 `income`), each with its own
request id: over REST with JSON or binary inputs and JSON or binary
outputs (`rest-json-json`, `rest-json-binary`, `rest-binary-json`,
`rest-binary-binary`), over gRPC with raw contents as tritonclient sends
them (`grpc-raw`) and with typed contents (`grpc-typed`, through the
service stub). Then over gRPC: health, readiness and metadata, and a call
to a model the server does not have (`grpc-error`, one row), whose error
(code and message) must reach the client unchanged, and a method the
server does not serve (`ModelStatistics`). `--only-raw`: the `grpc-raw`
call alone. Prints one JSON line: the variants and the rows sent.
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import client_rows
from client_rows import grpc_raw, inputs, load, same

rest_addr, grpc_addr, agent_addr = sys.argv[1:4]
expected_path = sys.argv[-1]
features, rows = load(expected_path)


def column(j, f):
    return client_rows.column(features, rows, j)


variants = []

# gRPC with raw contents (tritonclient's way).
grpc_raw(grpcclient, grpc_addr, agent_addr, features, rows)
variants.append("grpc-raw")

if "--only-raw" in sys.argv:
    print(json.dumps({"variants": variants, "rows": rows}))
    sys.exit(0)

# REST: JSON and binary tensors, each way.
for binary_in in (False, True):
    for binary_out in (False, True):
        name = "rest-" + ("binary" if binary_in else "json") + "-" + ("binary" if binary_out else "json")
        answers = []
        for addr in (rest_addr, agent_addr):
            client = httpclient.InferenceServerClient(addr)
            outputs = [httpclient.InferRequestedOutput(o, binary_data=binary_out)
                       for o in ("label", "probabilities")]
            headers = {"x-request-id": name}
            if not binary_in:
                headers["Content-Type"] = "application/json"
            tensors = inputs(httpclient, features, rows, binary_in)
            answers.append(client.infer("credit", tensors, outputs=outputs, headers=headers))
        d, a = answers
        same(f"{name}: response JSON", d.get_response(), a.get_response())
        for o in ("label", "probabilities"):
            same(f"{name}: {o}", d.as_numpy(o).tolist(), a.as_numpy(o).tolist())
        variants.append(name)

# gRPC with typed contents, through the service stub.
request = service_pb2.ModelInferRequest(model_name="credit")
for j, f in enumerate(features):
    values, datatype = column(j, f)
    t = request.inputs.add(name=f, datatype=datatype, shape=[len(rows)])
    field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents"}[datatype]
    getattr(t.contents, field).extend(values.tolist())
answers = []
for addr in (grpc_addr, agent_addr):
    with grpc.insecure_channel(addr) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(request, metadata=[("x-request-id", "grpc-typed")])
        answers.append(response)
        if addr == agent_addr:
            got = dict(call.initial_metadata()).get("x-request-id")
            same("grpc-typed: x-request-id in the answer's metadata", "grpc-typed", got)
same("grpc-typed: response", answers[0], answers[1])
variants.append("grpc-typed")

# Health, readiness, metadata over gRPC.
direct = grpcclient.InferenceServerClient(grpc_addr)
agent = grpcclient.InferenceServerClient(agent_addr)
for call in ("is_server_live", "is_server_ready", "get_server_metadata"):
    same(call, getattr(direct, call)(), getattr(agent, call)())
for call in ("is_model_ready", "get_model_metadata"):
    same(call, getattr(direct, call)("credit"), getattr(agent, call)("credit"))
same("is_model_ready", True, agent.is_model_ready("credit"))

# A method the server does not serve: its answer, unchanged.
outcomes = []
for addr in (grpc_addr, agent_addr):
    with grpc.insecure_channel(addr) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            outcomes.append(("ok", stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="credit"))))
        except grpc.RpcError as e:
            outcomes.append((e.code(), e.details()))
same("ModelStatistics", outcomes[0], outcomes[1])

# The server's gRPC error reaches the client unchanged.
errors = []
for client in (direct, agent):
    t = grpcclient.InferInput("age", [1], "FP32")
    t.set_data_from_numpy(np.array([30], dtype=np.float32))
    try:
        client.infer("nope", [t], headers={"x-request-id": "grpc-error"})
        sys.exit("a call to a model the server does not have succeeded")
    except InferenceServerException as e:
        errors.append((e.status(), e.message()))
same("grpc-error", errors[0], errors[1])

print(json.dumps({"variants": variants, "rows": rows, "error": errors[0]}))
