#!/usr/bin/env python3
"""Builds the ONNX models the tests, the benchmarks and the example repository serve.

    make_models.py OUTDIR               every test model, each as OUTDIR/<name>/{config.pbtxt,<v>/model.onnx}
    make_models.py --example REPO       only the model.onnx files of the committed example repository

Models are built from `onnx.helper` with fixed seeds, so the same script always gives the same
weights; every model is run once through the Python `onnxruntime` before it is written, so a
model this script makes is known to load and compute what the tests expect (see `reference`).
Idempotent: a model whose bytes did not change is not rewritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from reference import mlp_reference, mlp_weights
from ragged_models import ragged_models
from sequence_models import sequence_models
from decoder_models import make_decoder_models, write_decoder

OPSET = 21
IR_VERSION = 10

# Triton config type, ONNX element type, numpy dtype: every Triton type ONNX has.
DTYPES = [
    ("BOOL", TensorProto.BOOL, np.bool_),
    ("INT8", TensorProto.INT8, np.int8),
    ("INT16", TensorProto.INT16, np.int16),
    ("INT32", TensorProto.INT32, np.int32),
    ("INT64", TensorProto.INT64, np.int64),
    ("UINT8", TensorProto.UINT8, np.uint8),
    ("UINT16", TensorProto.UINT16, np.uint16),
    ("UINT32", TensorProto.UINT32, np.uint32),
    ("UINT64", TensorProto.UINT64, np.uint64),
    ("FP16", TensorProto.FLOAT16, np.float16),
    ("BF16", TensorProto.BFLOAT16, ml_dtypes.bfloat16),
    ("FP32", TensorProto.FLOAT, np.float32),
    ("FP64", TensorProto.DOUBLE, np.float64),
    ("STRING", TensorProto.STRING, np.object_),
]


def graph_model(nodes, inputs, outputs, initializers=(), name="g") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxrs-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


# ---------------------------------------------------------------------------------------------
# Model builders. Each returns the ONNX model; `reference` below computes what it must output.


def mlp(n_in=16, hidden=32, n_out=4, seed=7) -> onnx.ModelProto:
    """Y = relu(X @ W1 + B1) @ W2 + B2, X: [batch, n_in] float32."""
    w = mlp_weights(seed, n_in, hidden, n_out)
    nodes = [
        helper.make_node("MatMul", ["X", "W1"], ["h0"]),
        helper.make_node("Add", ["h0", "B1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"]),
        helper.make_node("Add", ["h3", "B2"], ["Y"]),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    return graph_model(
        nodes, [vi("X", TensorProto.FLOAT, ["batch", n_in])], [vi("Y", TensorProto.FLOAT, ["batch", n_out])], inits
    )


def identity_all() -> onnx.ModelProto:
    """IN_<T> -> OUT_<T> for every type; numeric types go through two Identity nodes so the
    graph is not empty after optimisation, strings through one."""
    nodes, ins, outs = [], [], []
    for t, elem, _ in DTYPES:
        ins.append(vi(f"IN_{t}", elem, ["batch", "n"]))
        outs.append(vi(f"OUT_{t}", elem, ["batch", "n"]))
        nodes.append(helper.make_node("Identity", [f"IN_{t}"], [f"mid_{t}"]))
        nodes.append(helper.make_node("Identity", [f"mid_{t}"], [f"OUT_{t}"]))
    return graph_model(nodes, ins, outs)


def string_concat() -> onnx.ModelProto:
    """OUT = TEXT + "|ok" (ONNX StringConcat), LEN: the byte length of each input string is not
    computable in ONNX, so the second output echoes the text (a BYTES output of the same shape)."""
    suffix = numpy_helper.from_array(np.array(["|ok"], dtype=np.object_), "SUFFIX")
    nodes = [
        helper.make_node("StringConcat", ["TEXT", "SUFFIX"], ["OUT"]),
        helper.make_node("Identity", ["TEXT"], ["ECHO"]),
    ]
    return graph_model(
        nodes,
        [vi("TEXT", TensorProto.STRING, ["batch", "n"])],
        [vi("OUT", TensorProto.STRING, ["batch", "n"]), vi("ECHO", TensorProto.STRING, ["batch", "n"])],
        [suffix],
    )


def two_io_dyn() -> onnx.ModelProto:
    """SUM = A + float(B), PROD = A * float(B); A float32 and B int32, both [batch, n] with n dynamic."""
    nodes = [
        helper.make_node("Cast", ["B"], ["Bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["A", "Bf"], ["SUM"]),
        helper.make_node("Mul", ["A", "Bf"], ["PROD"]),
    ]
    return graph_model(
        nodes,
        [vi("A", TensorProto.FLOAT, ["batch", "n"]), vi("B", TensorProto.INT32, ["batch", "n"])],
        [vi("SUM", TensorProto.FLOAT, ["batch", "n"]), vi("PROD", TensorProto.FLOAT, ["batch", "n"])],
    )


def scale(factor: float, shape) -> onnx.ModelProto:
    """Y = X * factor, float32 of the given shape ([] for an ONNX scalar)."""
    k = numpy_helper.from_array(np.array(factor, dtype=np.float32), "K")
    return graph_model(
        [helper.make_node("Mul", ["X", "K"], ["Y"])],
        [vi("X", TensorProto.FLOAT, shape)],
        [vi("Y", TensorProto.FLOAT, shape)],
        [k],
    )


def add_const(value: float) -> onnx.ModelProto:
    """Y = X + value, X: [batch, 4] float32 (the versions of multi_version differ by value)."""
    k = numpy_helper.from_array(np.array(value, dtype=np.float32), "K")
    return graph_model(
        [helper.make_node("Add", ["X", "K"], ["Y"])],
        [vi("X", TensorProto.FLOAT, ["batch", 4])],
        [vi("Y", TensorProto.FLOAT, ["batch", 4])],
        [k],
    )


def lifecycle(version: int) -> onnx.ModelProto:
    """The model the lifecycle tests load and unload thousands of times: an FP32 and a BYTES
    input, so both the numeric and the string paths run in every incarnation. Y = X + version,
    OUT = TEXT + "|v<version>": a response names the version that computed it."""
    k = numpy_helper.from_array(np.array(float(version), dtype=np.float32), "K")
    suffix = numpy_helper.from_array(np.array([f"|v{version}"], dtype=np.object_), "SUFFIX")
    return graph_model(
        [
            helper.make_node("Add", ["X", "K"], ["Y"]),
            helper.make_node("StringConcat", ["TEXT", "SUFFIX"], ["OUT"]),
        ],
        [vi("X", TensorProto.FLOAT, ["batch", 4]), vi("TEXT", TensorProto.STRING, ["batch", "n"])],
        [vi("Y", TensorProto.FLOAT, ["batch", 4]), vi("OUT", TensorProto.STRING, ["batch", "n"])],
        [k, suffix],
    )


def arena_model(width: int = 64, hidden: int = 256, seed: int = 5) -> onnx.ModelProto:
    """Y = ReduceMean_L(Relu(X @ W1) @ W2), X: [batch, L, width] with L dynamic: the activations
    grow with L, so one long request grows ONNX Runtime's arena (the memory tests' model)."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((width, hidden)).astype(np.float32) * 0.05, "W1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, width)).astype(np.float32) * 0.05, "W2")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "AXES")
    return graph_model(
        [
            helper.make_node("MatMul", ["X", "W1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "W2"], ["o"]),
            helper.make_node("ReduceMean", ["o", "AXES"], ["Y"], keepdims=0),
        ],
        [vi("X", TensorProto.FLOAT, ["batch", "L", width])],
        [vi("Y", TensorProto.FLOAT, ["batch", width])],
        [w1, w2, axes],
    )


OPTIONAL_DEFAULT_BIAS = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)


def optional_input() -> onnx.ModelProto:
    """Y = X + BIAS, where BIAS is a graph input with an initializer: ONNX's way to say "optional,
    with this default". X: [2, 4], BIAS: [4]."""
    bias = numpy_helper.from_array(OPTIONAL_DEFAULT_BIAS, "BIAS")
    return graph_model(
        [helper.make_node("Add", ["X", "BIAS"], ["Y"])],
        [vi("X", TensorProto.FLOAT, [2, 4]), vi("BIAS", TensorProto.FLOAT, [4])],
        [vi("Y", TensorProto.FLOAT, [2, 4])],
        [bias],
    )


GATHER_TABLE = np.array([10.0, 20.0, 30.0, 40.0, 50.0], dtype=np.float32)


def gather_fail() -> onnx.ModelProto:
    """Y = TABLE[IDX]: an index outside 0..4 makes ONNX Runtime fail the run, which is how the
    tests make a request fail inside the backend (Triton's own checks pass it)."""
    table = numpy_helper.from_array(GATHER_TABLE, "TABLE")
    return graph_model(
        [helper.make_node("Gather", ["TABLE", "IDX"], ["Y"], axis=0)],
        [vi("IDX", TensorProto.INT64, ["batch", "n"])],
        [vi("Y", TensorProto.FLOAT, ["batch", "n"])],
        [table],
    )


# ---------------------------------------------------------------------------------------------
# Configs. Written in full for the models whose config is under test; autocomplete_mlp has only
# the backend line, the rest is completed from the model.


def io(name, dtype, dims, extra=""):
    return f'  {{ name: "{name}" data_type: TYPE_{dtype} dims: [ {", ".join(map(str, dims))} ]{extra} }}'


def config(name, inputs, outputs, max_batch_size=0, rest="") -> str:
    sep = ",\n"
    return (
        f'name: "{name}"\nbackend: "onnxrs"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{sep.join(inputs)}\n]\noutput [\n{sep.join(outputs)}\n]\n{rest}"
    )


CPU1 = "instance_group [ { kind: KIND_CPU count: 1 } ]\n"


def models() -> dict[str, tuple[dict[int, onnx.ModelProto], str]]:
    """name -> ({version: model}, config.pbtxt)."""
    m = {}
    m["mlp_fp32"] = (
        {1: mlp()},
        config(
            "mlp_fp32",
            [io("X", "FP32", [16])],
            [io("Y", "FP32", [4])],
            8,
            "dynamic_batching { }\ninstance_group [ { kind: KIND_CPU count: 2 } ]\n"
            'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n',
        ),
    )
    # A long queue delay makes the scheduler wait for the requests a test sends together, so they
    # reach one execute and must run as one ONNX Runtime call.
    m["mlp_batching"] = (
        {1: mlp()},
        config(
            "mlp_batching",
            [io("X", "FP32", [16])],
            [io("Y", "FP32", [4])],
            32,
            "dynamic_batching { max_queue_delay_microseconds: 500000 preferred_batch_size: [ 8 ] }\n" + CPU1,
        ),
    )
    m["identity_all"] = (
        {1: identity_all()},
        config(
            "identity_all",
            [io(f"IN_{t}", t, [-1]) for t, _, _ in DTYPES],
            [io(f"OUT_{t}", t, [-1]) for t, _, _ in DTYPES],
            8,
            "dynamic_batching { }\n" + CPU1,
        ),
    )
    m["string_concat"] = (
        {1: string_concat()},
        config(
            "string_concat",
            [io("TEXT", "STRING", [-1])],
            [io("OUT", "STRING", [-1]), io("ECHO", "STRING", [-1])],
            8,
            "dynamic_batching { max_queue_delay_microseconds: 100000 }\n" + CPU1,
        ),
    )
    m["two_io_dyn"] = (
        {1: two_io_dyn()},
        config(
            "two_io_dyn",
            [io("A", "FP32", [-1]), io("B", "INT32", [-1])],
            [io("SUM", "FP32", [-1]), io("PROD", "FP32", [-1])],
            8,
            "dynamic_batching { max_queue_delay_microseconds: 200000 }\n" + CPU1,
        ),
    )
    m["nobatch_fp32"] = (
        {1: scale(2.0, [-1, 3])},
        config("nobatch_fp32", [io("X", "FP32", [-1, 3])], [io("Y", "FP32", [-1, 3])], 0, CPU1),
    )
    m["scalar_model"] = (
        {1: scale(3.0, [])},
        config(
            "scalar_model",
            [io("X", "FP32", [1])],
            [io("Y", "FP32", [1])],
            0,
            CPU1,
        ),
    )
    # An ONNX model whose input is [batch]: per request a scalar, which auto-complete writes as
    # dims [1] with an empty reshape.
    m["scalar_batch"] = ({1: scale(3.0, ["batch"])}, 'backend: "onnxrs"\n')
    m["optional_input"] = (
        {1: optional_input()},
        config(
            "optional_input",
            [io("X", "FP32", [2, 4]), io("BIAS", "FP32", [4], " optional: true")],
            [io("Y", "FP32", [2, 4])],
            0,
            CPU1,
        ),
    )
    m["gather_fail"] = (
        {1: gather_fail()},
        config(
            "gather_fail",
            [io("IDX", "INT64", [-1])],
            [io("Y", "FP32", [-1])],
            8,
            "dynamic_batching { max_queue_delay_microseconds: 300000 }\n" + CPU1,
        ),
    )
    m["autocomplete_mlp"] = ({1: mlp()}, 'backend: "onnxrs"\n')
    m["multi_version"] = (
        {1: add_const(1.0), 2: add_const(2.0)},
        config(
            "multi_version",
            [io("X", "FP32", [4])],
            [io("Y", "FP32", [4])],
            4,
            "version_policy: { all { } }\n" + CPU1,
        ),
    )
    # GPU instances (KIND_GPU, the CUDA execution provider): served by the GPU tests on a GPU
    # host; on a machine without a GPU their load must fail with a clear message.
    m["mlp_gpu"] = (
        {1: mlp()},
        config(
            "mlp_gpu",
            [io("X", "FP32", [16])],
            [io("Y", "FP32", [4])],
            64,
            "dynamic_batching { max_queue_delay_microseconds: 2000 }\n"
            "instance_group [ { kind: KIND_GPU count: 1 gpus: [ 0 ] } ]\n"
            'parameters { key: "cudnn_conv_algo_search" value: { string_value: "1" } }\n',
        ),
    )
    # Two GPU instances running one session (share_session_between_instances): tests/test_gpu.py.
    m["mlp_gpu_shared"] = (
        {1: mlp()},
        config(
            "mlp_gpu_shared",
            [io("X", "FP32", [16])],
            [io("Y", "FP32", [4])],
            8,
            "instance_group [ { kind: KIND_GPU count: 2 gpus: [ 0 ] } ]\n"
            'parameters { key: "share_session_between_instances" value: { string_value: "true" } }\n',
        ),
    )
    m["two_io_dyn_gpu"] = (
        {1: two_io_dyn()},
        config(
            "two_io_dyn_gpu",
            [io("A", "FP32", [-1]), io("B", "INT32", [-1])],
            [io("SUM", "FP32", [-1]), io("PROD", "FP32", [-1])],
            8,
            "dynamic_batching { }\ninstance_group [ { kind: KIND_GPU count: 2 gpus: [ 0 ] } ]\n",
        ),
    )
    # Loaded and unloaded thousands of times by tests/test_lifecycle.py (version 2 is copied in
    # by the test when it wants a new version to appear).
    lifecycle_io = (
        [io("X", "FP32", [4]), io("TEXT", "STRING", [-1])],
        [io("Y", "FP32", [4]), io("OUT", "STRING", [-1])],
    )
    m["lifecycle"] = (
        {1: lifecycle(1), 2: lifecycle(2)},
        config(
            "lifecycle",
            *lifecycle_io,
            8,
            "dynamic_batching { }\ninstance_group [ { kind: KIND_CPU count: 2 } ]\n"
            "version_policy: { latest { num_versions: 1 } }\n"
            'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n',
        ),
    )
    # The same files with a config that contradicts them (TEXT declared FP32): every load is
    # refused after the probe session was created.
    m["lifecycle_refused"] = (
        {1: lifecycle(1)},
        config(
            "lifecycle_refused",
            [io("X", "FP32", [4]), io("TEXT", "FP32", [-1])],
            lifecycle_io[1],
            8,
            "instance_group [ { kind: KIND_CPU count: 2 } ]\n",
        ),
    )
    # The memory tests: the same dynamic-length model with ONNX Runtime's arena kept (the default)
    # and shrunk after every run (the official backend's key).
    arena_io = ([io("X", "FP32", [-1, 64])], [io("Y", "FP32", [64])])
    m["arena_keep"] = ({1: arena_model()}, config("arena_keep", *arena_io, 4, CPU1))
    m["arena_shrink"] = (
        {1: arena_model()},
        config(
            "arena_shrink",
            *arena_io,
            4,
            CPU1 + 'parameters { key: "memory.enable_memory_arena_shrinkage" value: { string_value: "cpu:0" } }\n',
        ),
    )
    # Config and model disagree (the model's X is FP32): the load must fail naming the tensor.
    m["mismatch_config"] = (
        {1: mlp()},
        config("mismatch_config", [io("X", "INT32", [16])], [io("Y", "FP32", [4])], 8, CPU1),
    )
    m.update(sequence_models())
    m.update(ragged_models())
    from output_models import output_models  # it builds on this module's helpers

    m.update(output_models())
    return m


BAD_MODEL = b"this is not an ONNX model\n"


def unsupported_op() -> onnx.ModelProto:
    """A node of an operator no ONNX Runtime kernel implements: the session cannot be built."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["X"], ["Y"], domain="com.example.onnxrs")],
        "g",
        [vi("X", TensorProto.FLOAT, [4])],
        [vi("Y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.example.onnxrs", 1)],
    )
    model.ir_version = IR_VERSION
    return model


def fails_at_run() -> onnx.ModelProto:
    """Loads, but every run fails: X [2, 4] cannot be reshaped to [3]."""
    shape = numpy_helper.from_array(np.array([3], dtype=np.int64), "SHAPE")
    return graph_model(
        [helper.make_node("Reshape", ["X", "SHAPE"], ["Y"])],
        [vi("X", TensorProto.FLOAT, [2, 4])],
        [vi("Y", TensorProto.FLOAT, [3])],
        [shape],
    )

# The example repository's models: directory -> builder (its config.pbtxt is committed).
EXAMPLE = {"mlp": mlp, "strings": string_concat}


# ---------------------------------------------------------------------------------------------


def self_check(name: str, model: onnx.ModelProto) -> None:
    """Runs the model in the Python onnxruntime once, against `reference` where there is one."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if name in ("mlp_fp32", "mlp", "autocomplete_mlp"):
        x = np.arange(32, dtype=np.float32).reshape(2, 16) / 10
        np.testing.assert_allclose(sess.run(None, {"X": x})[0], mlp_reference(x), rtol=1e-5, atol=1e-5)
    elif name in ("string_concat", "strings"):
        out = sess.run(None, {"TEXT": np.array([["a", "bc"]], dtype=np.object_)})
        assert out[0].tolist() == [["a|ok", "bc|ok"]], out
    elif name in ("lifecycle", "lifecycle_refused"):
        v = float(numpy_helper.to_array(model.graph.initializer[0]))
        out = sess.run(None, {"X": np.zeros((1, 4), np.float32), "TEXT": np.array([["a"]], dtype=np.object_)})
        assert out[0].tolist() == [[v] * 4] and out[1].tolist() == [[f"a|v{int(v)}"]], out
    elif name == "identity_all":
        feeds = {}
        for t, elem, np_t in DTYPES:
            if t == "STRING":
                feeds[f"IN_{t}"] = np.array([["x", "y"]], dtype=np.object_)
            elif t == "BF16":  # numpy has no bfloat16 the Python binding knows: pass the bits
                bits = np.ones((1, 2), dtype=np_t).view(np.uint16)
                feeds[f"IN_{t}"] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(bits, elem)
            else:
                feeds[f"IN_{t}"] = np.ones((1, 2), dtype=np_t)
        # The binding cannot return bfloat16 to numpy: the server tests check that output.
        names = [f"OUT_{t}" for t, _, _ in DTYPES if t != "BF16"]
        for name_, got in zip(names, sess.run(names, feeds)):
            assert got.shape == (1, 2), (name_, got)


def write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def build_tests(out: Path) -> None:
    for name, (versions, cfg) in models().items():
        for version, model in versions.items():
            self_check(name, model)
            write_if_changed(out / name / str(version) / "model.onnx", model.SerializeToString())
        write_if_changed(out / name / "config.pbtxt", cfg.encode())
    write_if_changed(out / "bad_model" / "1" / "model.onnx", BAD_MODEL)
    # Models that must fail to load (or to run), each with a clear reason.
    plain = lambda name: config(name, [io("X", "FP32", [4])], [io("Y", "FP32", [4])], 0, CPU1).encode()  # noqa: E731
    (out / "missing_file" / "1").mkdir(parents=True, exist_ok=True)
    write_if_changed(out / "missing_file" / "config.pbtxt", plain("missing_file"))
    mlp_bytes = mlp().SerializeToString()
    write_if_changed(out / "truncated_model" / "1" / "model.onnx", mlp_bytes[: len(mlp_bytes) // 2])
    write_if_changed(
        out / "truncated_model" / "config.pbtxt",
        config("truncated_model", [io("X", "FP32", [16])], [io("Y", "FP32", [4])], 8, CPU1).encode(),
    )
    write_if_changed(out / "unsupported_op" / "1" / "model.onnx", unsupported_op().SerializeToString())
    write_if_changed(out / "unsupported_op" / "config.pbtxt", plain("unsupported_op"))
    write_if_changed(out / "fails_at_run" / "1" / "model.onnx", fails_at_run().SerializeToString())
    write_if_changed(
        out / "fails_at_run" / "config.pbtxt",
        config("fails_at_run", [io("X", "FP32", [2, 4])], [io("Y", "FP32", [3])], 0, CPU1).encode(),
    )
    write_if_changed(
        out / "bad_model" / "config.pbtxt",
        config("bad_model", [io("X", "FP32", [4])], [io("Y", "FP32", [4])], 0, CPU1).encode(),
    )
    make_decoder_models(out)
    print(f"test models in {out}: {', '.join(sorted(p.name for p in out.iterdir() if p.is_dir()))}")


def build_example(repo: Path) -> None:
    for name, build in EXAMPLE.items():
        model = build()
        self_check(name, model)
        write_if_changed(repo / name / "1" / "model.onnx", model.SerializeToString())
    # A small generative decoder (the tests' decoder_tiny) with its genai_config.json and a
    # tokenizer.json (text in and out).
    write_decoder("decoder_tiny", repo / "generator" / "1", tokenizer=True)
    print(f"example models in {repo}: {', '.join(EXAMPLE)}, generator")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--example":
        build_example(Path(argv[1]))
    elif len(argv) == 1 and not argv[0].startswith("-"):
        build_tests(Path(argv[0]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
