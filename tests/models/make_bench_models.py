#!/usr/bin/env python3
"""The benchmark's models, with random weights and a dynamic batch dimension:

- mlp:       64 -> 256 -> 256 -> 16, float32 (overhead-dominated);
- resnet50:  ResNet-50's shape (bottleneck stages 3-4-6-3, 25.5 M parameters), 3x224x224 float32
             in, 1000 logits out (compute-dominated; batch norm folded into the convolutions);
- bert_base: BERT-base's encoder shape (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary
             30522), input_ids int64 [batch, 128] in, the last hidden state out.

    make_bench_models.py OUTDIR        writes OUTDIR/<name>.onnx (skipped when present)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
RNG = np.random.default_rng(2026)


class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def weight(self, shape, scale=None, name="w") -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        std = scale if scale is not None else np.sqrt(2.0 / max(fan_in, 1))
        n = self.name(name)
        self.inits.append(numpy_helper.from_array((RNG.standard_normal(shape, dtype=np.float32) * std).astype(np.float32), n))
        return n

    def const(self, value, dtype=np.int64) -> str:
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), n))
        return n

    def op(self, op_type, inputs, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def model(self, inputs, outputs) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, "bench", inputs, outputs, initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxrs-bench")
        m.ir_version = 10
        return m


def mlp() -> onnx.ModelProto:
    g = Graph()
    h = "X"
    for i, (a, b) in enumerate([(64, 256), (256, 256), (256, 16)]):
        h = g.op("Add", [g.op("MatMul", [h, g.weight((a, b))]), g.weight((b,), scale=0.1)])
        if i < 2:
            h = g.op("Relu", [h])
    g.nodes[-1].output[0] = "Y"
    return g.model([helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 64])],
                   [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 16])])


def resnet50() -> onnx.ModelProto:
    g = Graph()

    def conv(x, cin, cout, k, stride=1, relu=True):
        y = g.op("Conv", [x, g.weight((cout, cin, k, k)), g.weight((cout,), scale=0.01)],
                 kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
        return g.op("Relu", [y]) if relu else y

    x = conv("X", 3, 64, 7, 2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, (blocks, width) in enumerate([(3, 64), (4, 128), (6, 256), (3, 512)]):
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 0) else 1
            out = width * 4
            y = conv(x, cin, width, 1)
            y = conv(y, width, width, 3, stride)
            y = conv(y, width, out, 1, relu=False)
            short = conv(x, cin, out, 1, stride, relu=False) if b == 0 else x
            x = g.op("Relu", [g.op("Add", [y, short])])
            cin = out
    x = g.op("GlobalAveragePool", [x])
    x = g.op("Flatten", [x], axis=1)
    y = g.op("Gemm", [x, g.weight((1000, 2048)), g.weight((1000,), scale=0.01)], transB=1)
    g.nodes[-1].output[0] = "Y"
    return g.model([helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 3, 224, 224])],
                   [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 1000])])


def bert_base(layers=12, hidden=768, heads=12, ffn=3072, vocab=30522, seq=128) -> onnx.ModelProto:
    g = Graph()
    hd = hidden // heads

    def linear(x, a, b):
        return g.op("Add", [g.op("MatMul", [x, g.weight((a, b), scale=0.02)]), g.weight((b,), scale=0.02)])

    def layernorm(x):
        return g.op("LayerNormalization", [x, g.weight((hidden,), scale=1.0), g.weight((hidden,), scale=0.02)],
                    axis=-1, epsilon=1e-12)

    emb = g.op("Gather", [g.weight((vocab, hidden), scale=0.02), "input_ids"], axis=0)
    pos = g.weight((seq, hidden), scale=0.02)
    x = layernorm(g.op("Add", [emb, pos]))
    split_shape = g.const([0, 0, heads, hd])
    merge_shape = g.const([0, 0, hidden])
    scale = g.const(1.0 / np.sqrt(hd), np.float32)
    for _ in range(layers):
        def heads_of(t):
            return g.op("Transpose", [g.op("Reshape", [t, split_shape])], perm=[0, 2, 1, 3])
        q, k, v = (heads_of(linear(x, hidden, hidden)) for _ in range(3))
        scores = g.op("Mul", [g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])]), scale])
        ctx = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        ctx = g.op("Reshape", [g.op("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = layernorm(g.op("Add", [x, linear(ctx, hidden, hidden)]))
        f = linear(g.op("Gelu", [linear(x, hidden, ffn)]), ffn, hidden)
        x = layernorm(g.op("Add", [x, f]))
    g.nodes[-1].output[0] = "Y"
    return g.model([helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", seq])],
                   [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", seq, hidden])])


MODELS = {"mlp": mlp, "resnet50": resnet50, "bert_base": bert_base}


def main(out: Path) -> None:
    import onnxruntime as ort

    out.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        path = out / f"{name}.onnx"
        if path.exists():
            continue
        model = build()
        onnx.checker.check_model(model)
        data = model.SerializeToString()
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        # Loads and runs in ONNX Runtime before it is used.
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        i = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in i.shape]
        feed = np.zeros(shape, dtype=np.int64 if "int64" in i.type else np.float32)
        y = sess.run(None, {i.name: feed})[0]
        assert np.isfinite(y).all(), name
        tmp.replace(path)
        params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
        print(f"{name}: {params / 1e6:.1f} M parameters, {len(data) / 2**20:.0f} MiB, output {list(y.shape)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(Path(sys.argv[1]))
