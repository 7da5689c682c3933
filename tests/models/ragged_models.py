"""The ragged-batching test models: a ragged input laid end to end as one 1-D tensor, with a
batch input of every kind (ragged_sum), and an output scattered back with each request's input
shape by batch_output (ragged_scale). `tests/test_ragged.py` computes what they must output."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# target name, kind, Triton type, ONNX type, ONNX shape
BATCH_INPUTS = (
    ("COUNT", "BATCH_ELEMENT_COUNT", "FP32", TensorProto.FLOAT, ["n"]),
    ("ACC", "BATCH_ACCUMULATED_ELEMENT_COUNT", "INT32", TensorProto.INT32, ["n"]),
    ("ACC_ZERO", "BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO", "INT32", TensorProto.INT32, ["n1"]),
    ("MAX_SHAPE", "BATCH_MAX_ELEMENT_COUNT_AS_SHAPE", "FP32", TensorProto.FLOAT, ["m"]),
    ("ITEM_SHAPE", "BATCH_ITEM_SHAPE", "INT32", TensorProto.INT32, ["b", 1]),
    ("ITEM_FLAT", "BATCH_ITEM_SHAPE_FLATTEN", "FP32", TensorProto.FLOAT, ["b"]),
)


def ragged_sum() -> onnx.ModelProto:
    """INPUT: the requests' elements end to end ([total]). Per request (one row each):
    SUM = the sum of its elements (cumulative sums read at ACC_ZERO), and each batch input as the
    request sees it: COUNT_OUT, ACC_OUT, SHAPE_OUT, FLAT_OUT, MAX_OUT (the run's largest count)."""
    c = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("CumSum", ["INPUT", "ZERO_AXIS"], ["cs"]),
        helper.make_node("Concat", ["ZERO_F", "cs"], ["padded"], axis=0),
        helper.make_node("Gather", ["padded", "ACC_ZERO"], ["ends"], axis=0),
        helper.make_node("Slice", ["ends", "ONE", "BIG"], ["hi"]),
        helper.make_node("Slice", ["ends", "ZERO", "MINUS_ONE"], ["lo"]),
        helper.make_node("Sub", ["hi", "lo"], ["sums"]),
        helper.make_node("Unsqueeze", ["sums", "ONE"], ["SUM"]),
        helper.make_node("Unsqueeze", ["COUNT", "ONE"], ["COUNT_OUT"]),
        helper.make_node("Unsqueeze", ["ACC", "ONE"], ["ACC_OUT"]),
        helper.make_node("Identity", ["ITEM_SHAPE"], ["SHAPE_OUT"]),
        helper.make_node("Unsqueeze", ["ITEM_FLAT", "ONE"], ["FLAT_OUT"]),
        helper.make_node("Shape", ["MAX_SHAPE"], ["max1"]),
        helper.make_node("Shape", ["COUNT_OUT"], ["out_shape"]),
        helper.make_node("Expand", ["max1", "out_shape"], ["MAX_OUT"]),
    ]
    inits = [c("ZERO_AXIS", 0), c("ONE", [1]), c("ZERO", [0]), c("MINUS_ONE", [-1]), c("BIG", [1 << 30]),
             numpy_helper.from_array(np.zeros(1, np.float32), "ZERO_F")]
    ins = [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["total"])]
    ins += [helper.make_tensor_value_info(n, e, s) for n, _, _, e, s in BATCH_INPUTS]
    outs = [
        helper.make_tensor_value_info("SUM", TensorProto.FLOAT, ["n", 1]),
        helper.make_tensor_value_info("COUNT_OUT", TensorProto.FLOAT, ["n", 1]),
        helper.make_tensor_value_info("ACC_OUT", TensorProto.INT32, ["n", 1]),
        helper.make_tensor_value_info("SHAPE_OUT", TensorProto.INT32, ["b", 1]),
        helper.make_tensor_value_info("FLAT_OUT", TensorProto.FLOAT, ["b", 1]),
        helper.make_tensor_value_info("MAX_OUT", TensorProto.INT64, ["n", 1]),
    ]
    from make_models import graph_model

    return graph_model(nodes, ins, outs, inits)


def ragged_scale() -> onnx.ModelProto:
    """OUT = INPUT * 2, elementwise over the requests' elements end to end ([total] both)."""
    from make_models import graph_model

    two = numpy_helper.from_array(np.array([2.0], np.float32), "TWO")
    return graph_model(
        [helper.make_node("Mul", ["INPUT", "TWO"], ["OUT"])],
        [helper.make_tensor_value_info("INPUT", TensorProto.FLOAT, ["total"])],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, ["total"])],
        [two],
    )


RAGGED_SCALE_CONFIG = """name: "ragged_scale"
backend: "onnxrs"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ -1 ] } ]
batch_output [ { kind: BATCH_SCATTER_WITH_INPUT_SHAPE target_name: "OUT" source_input: "INPUT" } ]
dynamic_batching { preferred_batch_size: [ 5 ] max_queue_delay_microseconds: 2000000 }
instance_group [ { kind: KIND_CPU count: 1 } ]
"""


def ragged_models() -> dict[str, tuple[dict[int, onnx.ModelProto], str]]:
    """name -> ({version: model}, config.pbtxt), as `make_models.models()`."""
    batch_inputs = ",\n".join(
        f'  {{ kind: {k} target_name: "{n}" data_type: TYPE_{t} source_input: "INPUT" }}'
        for n, k, t, _, _ in BATCH_INPUTS
    )
    outs = [("SUM", "FP32"), ("COUNT_OUT", "FP32"), ("ACC_OUT", "INT32"), ("SHAPE_OUT", "INT32"),
            ("FLAT_OUT", "FP32"), ("MAX_OUT", "INT64")]
    out_text = ",\n".join(f'  {{ name: "{n}" data_type: TYPE_{t} dims: [ 1 ] }}' for n, t in outs)
    cfg = (
        'name: "ragged_sum"\nbackend: "onnxrs"\nmax_batch_size: 8\n'
        'input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ]\n'
        f"batch_input [\n{batch_inputs}\n]\noutput [\n{out_text}\n]\n"
        "dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 1000000 }\n"
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )
    return {"ragged_sum": ({1: ragged_sum()}, cfg), "ragged_scale": ({1: ragged_scale()}, RAGGED_SCALE_CONFIG)}
