"""Calls a real KServe v2 server (kserve_server.py) directly and through
the agent with the official clients, tritonclient[http,grpc] 2.73.0, and
checks that every answer through the agent equals the direct one. Used by
agent/tests/kserve.rs.

usage: kserve_calls.py REST_ADDR GRPC_ADDR AGENT_ADDR [--only-raw]
       [--tls AGENT_TLS_ADDR CA_FILE] [--mirror MIRROR_AGENT_ADDR] EXPECTED_JSON

Inferences of the example rows without a missing value (one tensor per
feature: FP32, INT64 `dependents`, FP64 `income`), each with its own
request id: over REST with JSON or binary inputs and JSON or binary
outputs (`rest-json-json`, `rest-json-binary`, `rest-binary-json`,
`rest-binary-binary`), over gRPC with raw contents as tritonclient sends
them (`grpc-raw`) and with typed contents (`grpc-typed`, through the
service stub), compressed with gzip and deflate (`grpc-gzip`,
`grpc-deflate`); with `--tls`, over TLS to an agent serving HTTPS
(`grpc-tls`, trusting CA_FILE); with `--mirror`, as Envoy mirrors a call
to an agent in mirror mode, whose empty answer is dropped, then the
server's answer posted to it as a framed gRPC message (`grpc-mirror`),
and a copy of a liveness call. Then over gRPC: health, readiness and metadata, and a call
to a model the server does not have (`grpc-error`, one row), whose error
(code and message) must reach the client unchanged, and a method the
server does not serve (`ModelStatistics`). `--only-raw`: the `grpc-raw`
call alone. Prints one JSON line: the variants and the rows sent.
"""

import argparse
import json
import sys
import urllib.request

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

import client_rows
from client_rows import grpc_raw, inputs, load, same

parser = argparse.ArgumentParser()
parser.add_argument("rest_addr")
parser.add_argument("grpc_addr")
parser.add_argument("agent_addr")
parser.add_argument("expected_path")
parser.add_argument("--only-raw", action="store_true")
parser.add_argument("--tls", nargs=2, metavar=("AGENT_TLS_ADDR", "CA_FILE"))
parser.add_argument("--mirror", metavar="MIRROR_AGENT_ADDR")
args = parser.parse_intermixed_args()
rest_addr, grpc_addr, agent_addr = args.rest_addr, args.grpc_addr, args.agent_addr
features, rows = load(args.expected_path)


def column(j, f):
    return client_rows.column(features, rows, j)


variants = []

# gRPC with raw contents (tritonclient's way).
grpc_raw(grpcclient, grpc_addr, agent_addr, features, rows)
variants.append("grpc-raw")

if args.only_raw:
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

# gRPC messages compressed, as tritonclient sends them when asked to.
for algorithm in ("gzip", "deflate"):
    name = f"grpc-{algorithm}"
    answers = []
    for addr in (grpc_addr, agent_addr):
        client = grpcclient.InferenceServerClient(addr)
        answers.append(client.infer("credit", inputs(grpcclient, features, rows),
                                    headers={"x-request-id": name}, compression_algorithm=algorithm))
    same(f"{name}: response", answers[0].get_response(), answers[1].get_response())
    variants.append(name)

# gRPC over TLS (the client offers HTTP/2 alone).
if args.tls:
    tls_addr, ca_file = args.tls
    direct_answer = grpcclient.InferenceServerClient(grpc_addr).infer(
        "credit", inputs(grpcclient, features, rows), headers={"x-request-id": "grpc-tls"})
    client = grpcclient.InferenceServerClient(tls_addr, ssl=True, root_certificates=ca_file)
    answer = client.infer("credit", inputs(grpcclient, features, rows),
                          headers={"x-request-id": "grpc-tls"})
    same("grpc-tls: response", direct_answer.get_response(), answer.get_response())
    same("grpc-tls: is_server_live", True, client.is_server_live())
    variants.append("grpc-tls")

# A mirrored call (Envoy sends a copy and drops its answer), then the
# server's answer posted as its framed message.
if args.mirror:
    tensors = inputs(grpcclient, features, rows)
    grpcclient.InferenceServerClient(args.mirror).infer(
        "credit", tensors, headers={"x-request-id": "grpc-mirror"})
    direct_answer = grpcclient.InferenceServerClient(grpc_addr).infer(
        "credit", tensors, headers={"x-request-id": "grpc-mirror"})
    message = direct_answer.get_response().SerializeToString()
    framed = b"\0" + len(message).to_bytes(4, "big") + message
    post = urllib.request.Request(
        f"http://{args.mirror}/_driftwatch/responses/credit", data=framed, method="POST",
        headers={"content-type": "application/grpc", "x-request-id": "grpc-mirror"})
    with urllib.request.urlopen(post) as r:
        same("grpc-mirror: the posted answer's status", 202, r.status)
    grpcclient.InferenceServerClient(args.mirror).is_server_live()
    variants.append("grpc-mirror")

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
