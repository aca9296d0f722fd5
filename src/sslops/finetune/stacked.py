"""Fairness candidates whose head also sees a boosted-tree score (``finetune.fairness.boosted``).

A linear head on the SSL embedding is a weak base model for a fairness constraint: the
constraint costs accuracy, and the head starts from less of it. Here the head sees
``[encoded features | SSL embedding (optional) | boosted-tree log-odds]``; the booster is
fitted once on the labeled rows and the heads train on its cross-fitted (out-of-fold)
scores. The same mechanisms as the linear candidates then run over this stack: the
in-training penalty sweep (each penalized head also with its decision threshold raised by
``threshold_shifts`` log-odds: one cost-sensitive threshold for everyone, no sensitive
attribute at prediction time) and distilled ExponentiatedGradient reductions. Each candidate
is one deterministic :class:`BoostedStackClassifier` (trees + head), exported like any
other classifier.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sslops.config import Config
from sslops.finetune.boosting import CrossFittedBoostingScore
from sslops.finetune.estimators import (
    DistilledExponentiatedGradient,
    FairnessPenalizedLogisticRegression,
)
from sslops.finetune.pareto import Candidate
from sslops.models.tabular import TabularClassifier
from sslops.models.trees import BoostedStackClassifier
from sslops.prepare.dataset import PreparedData

CandidateFactory = Callable[[str, str, float, TabularClassifier], Candidate]


def stacked_candidates(
    cfg: Config, data: PreparedData, sensitive: np.ndarray, labeled: np.ndarray,
    penalty_rows: np.ndarray, probe: TabularClassifier, zs: np.ndarray,
    candidate: CandidateFactory,
) -> list[Candidate]:  # fmt: skip
    """The boosted-stack penalty and reduction sweeps; ``sensitive`` has one row per train row.

    The penalties see the labeled rows and the unlabeled ``penalty_rows`` only.
    """
    fc, fair = cfg.finetune, cfg.finetune.fairness
    settings = fair.boosted
    if settings is None or not (settings.penalties or settings.reductions):
        return []
    x = data.train.features
    y_lab = data.train.target[labeled]
    score = CrossFittedBoostingScore(
        max_iter=settings.max_iter, folds=settings.folds, random_state=cfg.seed
    )
    margin = np.zeros((len(x), 1), dtype=np.float32)
    margin[labeled] = score.fit_transform(x[labeled], y_lab)
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    if len(unlabeled):
        margin[unlabeled] = score.transform(x[unlabeled])
    parts = [x, zs, margin] if settings.embedding else [x, margin]
    stack = np.hstack(parts).astype(np.float32)
    # The head sees standardized inputs: features are already, the embedding is by the probe's
    # statistics, the trees' log-odds are left as they are.
    encoder = probe.encoder if settings.embedding else None
    shift = np.zeros(stack.shape[1], np.float32)
    scale = np.ones(stack.shape[1], np.float32)
    if encoder is not None:
        dims = slice(x.shape[1], x.shape[1] + zs.shape[1])
        shift[dims], scale[dims] = probe.shift.numpy(), probe.scale.numpy()

    def model(coef: np.ndarray, intercept: float) -> BoostedStackClassifier:
        return BoostedStackClassifier.from_fitted(
            score.booster_, coef, intercept, encoder=encoder, shift=shift, scale=scale
        )

    out: list[Candidate] = []
    init: tuple[np.ndarray, float] | None = None
    for weight in sorted(settings.penalties):
        head = FairnessPenalizedLogisticRegression(
            constraint=fair.constraint, penalty=weight, C=fc.regularization, max_iter=fair.steps
        ).fit(
            stack[labeled], y_lab, sensitive_features=sensitive[labeled],
            X_unlabeled=stack[penalty_rows], sensitive_features_unlabeled=sensitive[penalty_rows],
            init=init,
        )  # fmt: skip
        init = (head.coef_, head.intercept_)  # warm start along the sweep
        for shift_by in sorted(set(settings.threshold_shifts) | {0.0}):
            # Raising one threshold for everyone trades false positives for false negatives
            # in both groups; with equalized odds that can narrow the gap the penalty leaves.
            name = f"boosted+penalty={weight:g}" + (f"+shift={shift_by:g}" if shift_by else "")
            out.append(candidate(name, "boosted_penalty", weight,
                                 model(head.coef_, head.intercept_ - shift_by)))  # fmt: skip
    for eps in sorted(settings.reductions):
        reduction = DistilledExponentiatedGradient(
            constraint=fair.constraint, eps=eps, C=fc.regularization
        ).fit(stack[labeled], y_lab, sensitive_features=sensitive[labeled])
        out.append(candidate(f"boosted+exponentiated_gradient(eps={eps:g})", "boosted_reduction",
                             eps, model(reduction.coef_, reduction.intercept_)))  # fmt: skip
    return out
