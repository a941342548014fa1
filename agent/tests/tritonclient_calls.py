"""Calls a KServe v2 server directly and through the agent with the
official client, tritonclient[http] (installed in .cache/testenv by
./scripts/test), and checks that every answer through the agent equals
the direct one. Used by agent/tests/tritonclient.rs.

usage: tritonclient_calls.py CHAMPION_ADDR CHAMPION_GRPC_ADDR AGENT_ADDR EXPECTED_JSON

Inferences: the example rows without a missing value, as one tensor per
feature (FP32, INT64 for `dependents`, FP64 for `income`), in four
variants: JSON or binary inputs, JSON or binary outputs (request ids
`json-json`, `json-binary`, `binary-json`, `binary-binary`), and one
naming no outputs (all binary: `binary-default`), and over gRPC with raw
tensors (`grpc-raw`, through the agent's same listener), and gzip-compressed
(`grpc-gzip`: the champion answers compressed too). Then health,
readiness and metadata over REST, and the server's liveness over gRPC. Prints one JSON line: the variants and the rows sent.
"""

import json
import sys

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from client_rows import grpc_raw, inputs, load, same

champion_addr, grpc_addr, agent_addr, expected_path = sys.argv[1:5]
features, rows = load(expected_path)

direct = httpclient.InferenceServerClient(champion_addr)
agent = httpclient.InferenceServerClient(agent_addr)

variants = []
for binary_in in (False, True):
    for binary_out in (False, True, None):
        if binary_out is None and not binary_in:
            continue
        name = ("binary" if binary_in else "json") + "-" + {False: "json", True: "binary", None: "default"}[binary_out]
        outputs = None if binary_out is None else [
            httpclient.InferRequestedOutput(o, binary_data=binary_out) for o in ("label", "probabilities")
        ]
        answers = []
        for client in (direct, agent):
            tensors = inputs(httpclient, features, rows, binary_in)
            answers.append(client.infer("credit", tensors, outputs=outputs, headers={"x-request-id": name}))
        d, a = answers
        same(f"{name}: response JSON", d.get_response(), a.get_response())
        for o in ("label", "probabilities"):
            same(f"{name}: {o}", d.as_numpy(o).tolist(), a.as_numpy(o).tolist())
        variants.append(name)

grpc_raw(grpcclient, grpc_addr, agent_addr, features, rows)
variants.append("grpc-raw")
answers = [
    grpcclient.InferenceServerClient(addr).infer(
        "credit", inputs(grpcclient, features, rows), headers={"x-request-id": "grpc-gzip"},
        compression_algorithm="gzip")
    for addr in (grpc_addr, agent_addr)
]
same("grpc-gzip: response", answers[0].get_response(), answers[1].get_response())
variants.append("grpc-gzip")
same("grpc is_server_live", True, grpcclient.InferenceServerClient(agent_addr).is_server_live())

for call in ("is_server_live", "is_server_ready", "get_server_metadata"):
    same(call, getattr(direct, call)(), getattr(agent, call)())
for call in ("is_model_ready", "get_model_metadata"):
    same(call, getattr(direct, call)("credit"), getattr(agent, call)("credit"))
same("is_model_ready", True, agent.is_model_ready("credit"))

print(json.dumps({"variants": variants, "rows": rows}))
