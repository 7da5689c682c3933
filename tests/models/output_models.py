"""Models for the two ways outputs reach a response (`tests/test_outputs.py`) and for instances
sharing one session (`tests/test_sharing.py`).

- identity_fixed: OUT_<T> = IN_<T> for every type, with a shape the graph fixes ([batch, 3]):
  a run of one request has ONNX Runtime write the fixed-size outputs straight into the response;
  STRING stays on the copying path; a run of several requests copies them all.
- nonzero: Y = NonZero(X) ([1, k], k data-dependent): the copying path.
- mlp_shared / mlp_unshared: the test MLP with 4 CPU instances, with and without
  share_session_between_instances."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from make_models import CPU1, DTYPES, config, graph_model, io, mlp, vi

WIDTH = 3


def identity_fixed() -> onnx.ModelProto:
    nodes, ins, outs = [], [], []
    for t, elem, _ in DTYPES:
        ins.append(vi(f"IN_{t}", elem, ["batch", WIDTH]))
        outs.append(vi(f"OUT_{t}", elem, ["batch", WIDTH]))
        nodes.append(helper.make_node("Identity", [f"IN_{t}"], [f"mid_{t}"]))
        nodes.append(helper.make_node("Identity", [f"mid_{t}"], [f"OUT_{t}"]))
    return graph_model(nodes, ins, outs)


def nonzero() -> onnx.ModelProto:
    return graph_model(
        [helper.make_node("NonZero", ["X"], ["Y"])],
        [vi("X", TensorProto.INT32, [6])],
        [vi("Y", TensorProto.INT64, [1, "k"])],
    )


def output_models() -> dict[str, tuple[dict[int, onnx.ModelProto], str]]:
    m = {}
    # The queue delay gathers requests sent together into one execute, so they share a run.
    m["identity_fixed"] = (
        {1: identity_fixed()},
        config(
            "identity_fixed",
            [io(f"IN_{t}", t, [WIDTH]) for t, _, _ in DTYPES],
            [io(f"OUT_{t}", t, [WIDTH]) for t, _, _ in DTYPES],
            8,
            "dynamic_batching { max_queue_delay_microseconds: 300000 }\n" + CPU1,
        ),
    )
    m["nonzero"] = (
        {1: nonzero()},
        config("nonzero", [io("X", "INT32", [6])], [io("Y", "INT64", [1, -1])], 0, CPU1),
    )
    for name, share in (("mlp_shared", "true"), ("mlp_unshared", "false")):
        m[name] = (
            {1: mlp()},
            config(
                name,
                [io("X", "FP32", [16])],
                [io("Y", "FP32", [4])],
                8,
                "instance_group [ { kind: KIND_CPU count: 4 } ]\n"
                f'parameters {{ key: "share_session_between_instances" value: {{ string_value: "{share}" }} }}\n',
            ),
        )
    return m
