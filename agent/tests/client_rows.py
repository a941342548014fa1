"""What the client scripts of the agent's tests share (tritonclient_calls.py,
kserve_calls.py): the example rows without a missing value, one tensor
per feature (FP32, INT64 `dependents`, FP64 `income`), and the check that
an answer through the agent equals the direct one."""

import json
import sys

import numpy as np

TYPES = {"dependents": (np.int64, "INT64"), "income": (np.float64, "FP64")}


def load(expected_path):
    """The features and the rows without a missing value."""
    expected = json.load(open(expected_path))
    rows = [r for r in expected["rows"] if all(x is not None and x == x for x in r)]
    return expected["features"], rows


def column(features, rows, j):
    """Feature j's values and datatype."""
    dtype, datatype = TYPES.get(features[j], (np.float32, "FP32"))
    return np.array([r[j] for r in rows], dtype=dtype), datatype


def inputs(client_module, features, rows, binary=True):
    """One tensor per feature, for tritonclient's http or grpc module
    (binary data or JSON over http; gRPC sends raw contents)."""
    out = []
    for j, f in enumerate(features):
        values, datatype = column(features, rows, j)
        t = client_module.InferInput(f, [len(rows)], datatype)
        if client_module.__name__.endswith(".http"):
            t.set_data_from_numpy(values, binary_data=binary)
        else:
            t.set_data_from_numpy(values)
        out.append(t)
    return out


def same(what, direct, through):
    """Exits naming `what` unless the two answers are equal."""
    if direct != through:
        sys.exit(f"{what}: through the agent {through!r}, directly {direct!r}")


def grpc_raw(grpcclient, direct_addr, agent_addr, features, rows):
    """`ModelInfer` with raw tensors (tritonclient's way, request id
    `grpc-raw`) directly and through the agent: the answers must be equal."""
    answers = []
    for addr in (direct_addr, agent_addr):
        client = grpcclient.InferenceServerClient(addr)
        tensors = inputs(grpcclient, features, rows)
        answers.append(client.infer("credit", tensors, headers={"x-request-id": "grpc-raw"}))
    d, a = answers
    same("grpc-raw: response", d.get_response(), a.get_response())
    for o in ("label", "probabilities"):
        same(f"grpc-raw: {o}", d.as_numpy(o).tolist(), a.as_numpy(o).tolist())
