"""The stateful test models (sequence_batching): control-input echoes, implicit-state
accumulators (fixed and variable-shaped state) and their configs. `make_models.models()`
includes them; `tests/test_sequence.py` computes what they must output."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Control-input tensors as the configs below declare them: START int32, END fp32, READY bool.
CONTROLS = (
    ("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]", TensorProto.INT32),
    ("END", "CONTROL_SEQUENCE_END", "fp32_false_true: [ 0, 1 ]", TensorProto.FLOAT),
    ("READY", "CONTROL_SEQUENCE_READY", "bool_false_true: [ false, true ]", TensorProto.BOOL),
)
# Triton type of CONTROL_SEQUENCE_CORRID -> ONNX element type.
CORRID_TYPES = {
    "UINT64": TensorProto.UINT64,
    "INT64": TensorProto.INT64,
    "UINT32": TensorProto.UINT32,
    "INT32": TensorProto.INT32,
    "STRING": TensorProto.STRING,
}
# The accumulator adds ACC_TABLE[IDX] at each step; an IDX outside 0..3 makes ONNX Runtime fail
# the run (Gather out of bounds): a bad input that passes Triton's checks.
ACC_TABLE = np.array([[1, 2], [10, 20], [100, 200], [1000, 2000]], dtype=np.float32)

# `oldest` with a delay and a preferred batch of 4: steps of four sequences sent together
# reach one execute and run as one ONNX Runtime call.
# A sequence idle for max_sequence_idle_microseconds (1 s by default) loses its slot: far more
# than any test waits.
OLDEST = (
    "oldest { max_candidate_sequences: 4 preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 500000 }\n"
    "max_sequence_idle_microseconds: 60000000"
)
IDLE = "max_sequence_idle_microseconds: 60000000"
CPU1 = "instance_group [ { kind: KIND_CPU count: 1 } ]\n"


def _graph(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    # make_models imports this module: its helpers are fetched when first used.
    from make_models import graph_model

    return graph_model(nodes, inputs, outputs, initializers, name="seq")


def _vi(name, elem, shape):
    from make_models import vi

    return vi(name, elem, shape)


def control_echo(corrid: int, batching: bool) -> onnx.ModelProto:
    """OUTPUT = INPUT, and OUT_<C> = C for every control input (START, END, READY, CORRID)."""
    row = ["batch", 1] if batching else [1]
    tensors = [("INPUT", TensorProto.FLOAT)] + [(n, e) for n, _, _, e in CONTROLS] + [("CORRID", corrid)]
    nodes = [helper.make_node("Identity", [n], ["OUTPUT" if n == "INPUT" else f"OUT_{n}"]) for n, _ in tensors]
    ins = [_vi(n, e, row) for n, e in tensors]
    outs = [_vi("OUTPUT" if n == "INPUT" else f"OUT_{n}", e, row) for n, e in tensors]
    return _graph(nodes, ins, outs)


def accumulator(batching: bool) -> onnx.ModelProto:
    """ACC_OUT = ACC_IN + INPUT + ACC_TABLE[IDX] (state [2] fp32); OUTPUT = ACC_OUT * 1."""
    b = ["batch"] if batching else []
    nodes = [
        helper.make_node("Gather", ["TABLE", "IDX"], ["g"], axis=0),
        helper.make_node("Squeeze", ["g", "AXIS"], ["inc"]),
        helper.make_node("Add", ["ACC_IN", "INPUT"], ["s"]),
        helper.make_node("Add", ["s", "inc"], ["ACC_OUT"]),
        helper.make_node("Identity", ["ACC_OUT"], ["OUTPUT"]),
    ]
    axis = numpy_helper.from_array(np.array([len(b)], dtype=np.int64), "AXIS")
    return _graph(
        nodes,
        [_vi("INPUT", TensorProto.FLOAT, b + [2]), _vi("IDX", TensorProto.INT64, b + [1]),
         _vi("ACC_IN", TensorProto.FLOAT, b + [2])],
        [_vi("OUTPUT", TensorProto.FLOAT, b + [2]), _vi("ACC_OUT", TensorProto.FLOAT, b + [2])],
        [numpy_helper.from_array(ACC_TABLE, "TABLE"), axis],
    )


def history() -> onnx.ModelProto:
    """A variable-shaped state: HIST_OUT = concat(HIST_IN, INPUT) along the last axis (it grows
    by one element per step); TOTAL = the sum of HIST_OUT. Batching model, INPUT [batch, 1]."""
    nodes = [
        helper.make_node("Concat", ["HIST_IN", "INPUT"], ["HIST_OUT"], axis=1),
        helper.make_node("ReduceSum", ["HIST_OUT", "AXES"], ["TOTAL"], keepdims=1),
    ]
    return _graph(
        nodes,
        [_vi("INPUT", TensorProto.FLOAT, ["batch", 1]), _vi("HIST_IN", TensorProto.FLOAT, ["batch", "n"])],
        [_vi("HIST_OUT", TensorProto.FLOAT, ["batch", "m"]), _vi("TOTAL", TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "AXES")],
    )


def _io(name, dtype, dims):
    return f'  {{ name: "{name}" data_type: TYPE_{dtype} dims: [ {", ".join(map(str, dims))} ] }}'


def _config(name, inputs, outputs, max_batch_size, sequence_batching) -> str:
    sep = ",\n"
    return (
        f'name: "{name}"\nbackend: "onnxrs"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{sep.join(inputs)}\n]\noutput [\n{sep.join(outputs)}\n]\n"
        f"sequence_batching {{\n{sequence_batching}\n}}\n{CPU1}"
    )


def _control_inputs(corrid: str) -> str:
    entries = [f'{{ name: "{n}" control [ {{ kind: {k} {v} }} ] }}' for n, k, v, _ in CONTROLS]
    entries.append(f'{{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_{corrid} }} ] }}')
    return "control_input [\n  " + ",\n  ".join(entries) + "\n]"


def _state(name_in, name_out, dims, initial_dims) -> str:
    d = ", ".join(map(str, dims))
    i = ", ".join(map(str, initial_dims))
    return (
        f'state [ {{ input_name: "{name_in}" output_name: "{name_out}" data_type: TYPE_FP32 dims: [ {d} ]\n'
        f'  initial_state: {{ data_type: TYPE_FP32 dims: [ {i} ] zero_data: true name: "zero" }} }} ]'
    )


def sequence_models() -> dict[str, tuple[dict[int, onnx.ModelProto], str]]:
    """name -> ({version: model}, config.pbtxt), as `make_models.models()`."""
    m = {}
    echo_outputs = ["OUTPUT", "OUT_START", "OUT_END", "OUT_READY", "OUT_CORRID"]
    for corrid, elem in CORRID_TYPES.items():
        types = {"OUTPUT": "FP32", "OUT_START": "INT32", "OUT_END": "FP32", "OUT_READY": "BOOL", "OUT_CORRID": corrid}
        outs = [_io(o, types[o], [1]) for o in echo_outputs]
        name = f"seq_ctl_{corrid.lower()}"
        m[name] = ({1: control_echo(elem, True)},
                   _config(name, [_io("INPUT", "FP32", [1])], outs, 4, f"{_control_inputs(corrid)}\n{OLDEST}"))
        name = f"seq_ctl_nobatch_{corrid.lower()}"
        m[name] = ({1: control_echo(elem, False)},
                   _config(name, [_io("INPUT", "FP32", [1])], outs, 0, f"{_control_inputs(corrid)}\n{IDLE}"))
    m["seq_ctl_direct"] = (
        {1: control_echo(TensorProto.UINT64, True)},
        _config("seq_ctl_direct", [_io("INPUT", "FP32", [1])],
                [_io(o, t, [1]) for o, t in zip(echo_outputs, ["FP32", "INT32", "FP32", "BOOL", "UINT64"])], 4,
                f"{_control_inputs('UINT64')}\ndirect {{ }}\nmax_sequence_idle_microseconds: 60000000"),
    )
    acc_in = [_io("INPUT", "FP32", [2]), _io("IDX", "INT64", [1])]
    m["seq_acc"] = (
        {1: accumulator(True)},
        _config("seq_acc", acc_in, [_io("OUTPUT", "FP32", [2])], 4, f"{_state('ACC_IN', 'ACC_OUT', [2], [2])}\n{OLDEST}"),
    )
    # Direct with batching: Triton pads a batch with null requests, whose state must stay alone.
    m["seq_acc_direct"] = (
        {1: accumulator(True)},
        _config("seq_acc_direct", acc_in, [_io("OUTPUT", "FP32", [2])], 4,
                f"{_state('ACC_IN', 'ACC_OUT', [2], [2])}\ndirect {{ }}\n{IDLE}"),
    )
    # The state output is also an ordinary output; no batching.
    m["seq_acc_nobatch"] = (
        {1: accumulator(False)},
        _config("seq_acc_nobatch", acc_in, [_io("OUTPUT", "FP32", [2]), _io("ACC_OUT", "FP32", [2])], 0,
                f"{_state('ACC_IN', 'ACC_OUT', [2], [2])}\n{IDLE}"),
    )
    m["seq_history"] = (
        {1: history()},
        _config("seq_history", [_io("INPUT", "FP32", [1])], [_io("TOTAL", "FP32", [1]), _io("HIST_OUT", "FP32", [-1])],
                4, f"{_state('HIST_IN', 'HIST_OUT', [-1], [1])}\n{OLDEST}"),
    )
    return m
