"""Reference computations of the test models, in numpy only (no onnx, no ml_dtypes), so that
the GPU check can import them on a host that has numpy and little else."""

from __future__ import annotations

import numpy as np


def mlp_weights(seed=7, n_in=16, hidden=32, n_out=4):
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((n_in, hidden), dtype=np.float32) * 0.25,
        "B1": rng.standard_normal(hidden, dtype=np.float32) * 0.1,
        "W2": rng.standard_normal((hidden, n_out), dtype=np.float32) * 0.25,
        "B2": rng.standard_normal(n_out, dtype=np.float32) * 0.1,
    }


def mlp_reference(x: np.ndarray, seed=7, n_in=16, hidden=32, n_out=4) -> np.ndarray:
    """Y = relu(X @ W1 + B1) @ W2 + B2 for the weights `make_models.mlp` builds."""
    w = mlp_weights(seed, n_in, hidden, n_out)
    h = np.maximum(x.astype(np.float32) @ w["W1"] + w["B1"], 0)
    return h @ w["W2"] + w["B2"]
