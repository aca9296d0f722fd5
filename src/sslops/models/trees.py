"""A boosted tree ensemble inside a torch classifier, so it exports to ONNX with the rest.

:class:`BoostedStackClassifier` evaluates the trees of a fitted scikit-learn
``HistGradientBoostingClassifier`` (binary, numeric splits) on the encoded features by
walking every tree one level per step with gathers and comparisons (no matrix products,
so dynamic int8 quantization, which rewrites MatMul/Gemm, leaves the trees exact), and
feeds their log-odds to a linear head together with the features and, with an encoder,
the SSL embedding: the head sees ``[x | encoder(x) | trees(x)]``, standardized by the
inherited ``shift``/``scale``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.ensemble import HistGradientBoostingClassifier

from sslops.models.tabular import EncoderSpec, MLPEncoder, TabularClassifier

KIND = "boosted_stack"
_TABLES = ("feature", "threshold", "left", "right", "value")


def tree_tables(model: HistGradientBoostingClassifier) -> dict[str, np.ndarray]:
    """Per-tree node tables (trees x nodes) of a fitted binary HistGradientBoostingClassifier.

    Leaves point to themselves, so walking past a leaf stays on it; shorter trees are
    padded with leaves of value 0.
    """
    if len(model.classes_) != 2:
        raise ValueError("BoostedStackClassifier needs a binary HistGradientBoostingClassifier")
    trees = [iteration[0].nodes for iteration in model._predictors]
    if any(bool(np.any(t["is_categorical"])) for t in trees):
        raise ValueError("BoostedStackClassifier supports numeric splits only")
    width = max(len(t) for t in trees)
    tables: dict[str, np.ndarray] = {
        "feature": np.zeros((len(trees), width), np.int64),
        "threshold": np.full((len(trees), width), np.inf, np.float32),
        "left": np.tile(np.arange(width, dtype=np.int64), (len(trees), 1)),
        "right": np.tile(np.arange(width, dtype=np.int64), (len(trees), 1)),
        "value": np.zeros((len(trees), width), np.float32),
    }
    for i, nodes in enumerate(trees):
        inner = np.flatnonzero(~nodes["is_leaf"].astype(bool))
        leaves = np.flatnonzero(nodes["is_leaf"].astype(bool))
        tables["feature"][i, inner] = nodes["feature_idx"][inner]
        tables["threshold"][i, inner] = _above(nodes["num_threshold"][inner])
        tables["left"][i, inner] = nodes["left"][inner]
        tables["right"][i, inner] = nodes["right"][inner]
        tables["value"][i, leaves] = nodes["value"][leaves]
    return tables


def _above(threshold: np.ndarray) -> np.ndarray:
    """``threshold`` raised by about 1e-6 (relative), in float32.

    Quantile-binned thresholds can equal a training value exactly (which goes left), and
    the graph's float32 standardization lands a few ulps away from the float64 one the
    trees were fitted on; lifting the boundary keeps such values on the left either way.
    The lift is far below the spacing of distinct values in real data.
    """
    lifted = threshold + np.maximum(np.abs(threshold), 1.0) * 2.0**-20
    return lifted.astype(np.float32)


def booster_trees(model: HistGradientBoostingClassifier) -> dict[str, Any]:
    """A fitted booster's trees as :meth:`BoostedStackClassifier.from_tables` takes them."""
    return {"tables": tree_tables(model), "depth": tree_depth(model),
            "n_inputs": int(model.n_features_in_),
            "baseline": float(np.ravel(model._baseline_prediction)[0])}  # fmt: skip


def tree_depth(model: HistGradientBoostingClassifier) -> int:
    return int(max(iteration[0].nodes["depth"].max() for iteration in model._predictors))


class BoostedStackClassifier(TabularClassifier):
    """Probability of the positive class from a linear head over features, embedding and trees."""

    def __init__(
        self, encoder: MLPEncoder | None, n_trees: int, n_nodes: int, depth: int, n_inputs: int
    ) -> None:
        embed = encoder.spec.embed_dim if encoder is not None else 0
        super().__init__(encoder, n_inputs + embed + 1)
        self.depth, self.n_inputs = depth, n_inputs
        self.register_buffer("feature", torch.zeros(n_trees, n_nodes, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(n_trees, n_nodes))
        self.register_buffer("left", torch.zeros(n_trees, n_nodes, dtype=torch.int64))
        self.register_buffer("right", torch.zeros(n_trees, n_nodes, dtype=torch.int64))
        self.register_buffer("value", torch.zeros(n_trees, n_nodes))
        self.register_buffer("baseline", torch.zeros(()))
        self.feature: torch.Tensor
        self.threshold: torch.Tensor
        self.left: torch.Tensor
        self.right: torch.Tensor
        self.value: torch.Tensor
        self.baseline: torch.Tensor

    @classmethod
    def from_fitted(
        cls, booster: HistGradientBoostingClassifier, coef: np.ndarray, intercept: float,
        encoder: MLPEncoder | None = None, shift: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> BoostedStackClassifier:  # fmt: skip
        """The trees of ``booster`` and a head (``coef``, ``intercept``) fitted on
        ``(stack(x) - shift) / scale`` (default shift 0, scale 1)."""
        return cls.from_tables(
            **booster_trees(booster), coef=coef, intercept=intercept, encoder=encoder,
            shift=shift, scale=scale,
        )  # fmt: skip

    @classmethod
    def from_tables(
        cls, tables: dict[str, np.ndarray], depth: int, n_inputs: int, baseline: float,
        coef: np.ndarray, intercept: float, encoder: MLPEncoder | None = None,
        shift: np.ndarray | None = None, scale: np.ndarray | None = None,
    ) -> BoostedStackClassifier:  # fmt: skip
        """Trees given as node tables (see :func:`tree_tables`; ``threshold`` already as
        compared: ``x <= threshold`` goes left) and a head, as in :meth:`from_fitted`."""
        n_trees, n_nodes = tables["feature"].shape
        out = cls(encoder, n_trees, n_nodes, depth, n_inputs)
        if len(coef) != out.head.in_features:
            raise ValueError(f"head has {len(coef)} weights; the stack has {out.head.in_features}")
        with torch.no_grad():
            for name in _TABLES:
                getattr(out, name).copy_(torch.from_numpy(tables[name]))
            out.baseline.fill_(baseline)
            if shift is not None:
                out.shift.copy_(torch.as_tensor(shift, dtype=torch.float32))
            if scale is not None:
                out.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            out.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32)[None, :])
            out.head.bias.fill_(float(intercept))
        return out.eval()

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        """The tree ensemble's log-odds (scikit-learn's ``decision_function``)."""
        n_trees, n_nodes = self.feature.shape
        offset = torch.arange(n_trees, device=x.device) * n_nodes
        feature, threshold = self.feature.reshape(-1), self.threshold.reshape(-1)
        left, right = self.left.reshape(-1), self.right.reshape(-1)
        node = torch.zeros(x.shape[0], n_trees, dtype=torch.int64, device=x.device)
        for _ in range(self.depth):
            at = node + offset
            go_left = x.gather(1, feature[at]) <= threshold[at]
            node = torch.where(go_left, left[at], right[at])
        return self.value.reshape(-1)[node + offset].sum(dim=1) + self.baseline

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees before standardization: ``[x | encoder(x) | trees(x)]``."""
        parts = [x] if self.encoder is None else [x, self.encoder(x)]
        return torch.cat([*parts, self.margin(x).unsqueeze(-1)], dim=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.stack(x) - self.shift) / self.scale).squeeze(-1)

    def architecture(self) -> dict[str, Any]:
        n_trees, n_nodes = self.feature.shape
        return {
            "kind": KIND,
            **super().architecture(),
            "trees": {
                "n_trees": n_trees,
                "n_nodes": n_nodes,
                "depth": self.depth,
                "n_inputs": self.n_inputs,
            },
        }


def load_boosted_stack(directory: Path, name: str, arch: dict[str, Any]) -> BoostedStackClassifier:
    encoder = MLPEncoder(EncoderSpec(**arch["encoder"])) if arch["encoder"] else None
    trees = arch["trees"]
    model = BoostedStackClassifier(
        encoder, trees["n_trees"], trees["n_nodes"], trees["depth"], trees["n_inputs"]
    )
    model.load_state_dict(load_file(str(directory / f"{name}.safetensors")))
    return model.eval()
