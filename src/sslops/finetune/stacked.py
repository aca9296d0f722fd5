"""Fairness candidates whose head also sees a stronger score (``finetune.fairness.boosted``).

A linear head on the SSL embedding is a weak base model for a fairness constraint: the
constraint costs accuracy, and the head starts from less of it. Here the head sees
``[encoded features | SSL embedding (optional) | score log-odds]``, where the score is a
boosted-tree model (``trees``: candidates ``boosted+...``) or the binned weight-of-evidence
head (``evidence``: ``evidence+...``, which with a few hundred labels ranks better than the
trees). The score is fitted once on the labeled rows and the heads train on its
cross-fitted (out-of-fold) log-odds. The same mechanisms as the linear candidates then run
over this stack: the in-training penalty sweep (each penalized head also with its decision
threshold raised by ``threshold_shifts`` log-odds: one cost-sensitive threshold for
everyone, no sensitive attribute at prediction time) and distilled ExponentiatedGradient
reductions. Each candidate
is one deterministic :class:`BoostedStackClassifier` (trees + head), exported like any
other classifier (the evidence head's bins and one-hot terms as stumps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sslops.config import Config
from sslops.finetune.boosting import CrossFittedBoostingScore
from sslops.finetune.crossfit import CrossFit
from sslops.finetune.estimators import (
    DistilledExponentiatedGradient,
    FairnessPenalizedLogisticRegression,
)
from sslops.finetune.evidence import CrossFittedEvidenceScore
from sslops.finetune.pareto import Candidate
from sslops.models.tabular import TabularClassifier
from sslops.models.trees import BoostedStackClassifier
from sslops.prepare.dataset import PreparedData

CandidateFactory = Callable[..., Candidate]  # (name, mechanism, strength, model, out_of_fold)
Score = CrossFittedBoostingScore | CrossFittedEvidenceScore
_PREFIX = {"trees": "boosted", "evidence": "evidence"}  # candidate names and mechanisms


def stacked_candidates(
    cfg: Config, data: PreparedData, sensitive: np.ndarray, labeled: np.ndarray,
    penalty_rows: np.ndarray, probe: TabularClassifier, zs: np.ndarray,
    candidate: CandidateFactory, crossfit: CrossFit | None = None,
) -> list[Candidate]:  # fmt: skip
    """The stacked penalty and reduction sweeps, per score of ``finetune.fairness.boosted``;
    ``sensitive`` has one row per training row, labeled or not (``data.pretraining``).

    The penalties see the labeled rows and the unlabeled ``penalty_rows`` only. With
    ``crossfit`` every head is also refitted per fold (on the same out-of-fold scores)
    and the candidate gets the labeled rows' out-of-fold log-odds.
    """
    settings = cfg.finetune.fairness.boosted
    if settings is None or not (settings.penalties or settings.reductions):
        return []
    out: list[Candidate] = []
    for kind in dict.fromkeys(settings.scores):
        out += _sweep(kind, cfg, data, sensitive, labeled, penalty_rows, probe, zs, candidate,
                      crossfit)  # fmt: skip
    return out


def _score(kind: str, cfg: Config, data: PreparedData) -> Score:
    settings = cfg.finetune.fairness.boosted
    assert settings is not None
    if kind == "evidence":
        return CrossFittedEvidenceScore(
            column_of=data.encoding.column_of, n_numeric=len(data.encoding.numeric),
            folds=settings.folds, random_state=cfg.seed,
        )  # fmt: skip
    return CrossFittedBoostingScore(
        max_iter=settings.max_iter, folds=settings.folds, random_state=cfg.seed
    )


def _sweep(
    kind: str, cfg: Config, data: PreparedData, sensitive: np.ndarray, labeled: np.ndarray,
    penalty_rows: np.ndarray, probe: TabularClassifier, zs: np.ndarray,
    candidate: CandidateFactory, crossfit: CrossFit | None,
) -> list[Candidate]:  # fmt: skip
    fc, fair = cfg.finetune, cfg.finetune.fairness
    settings = fair.boosted
    assert settings is not None
    prefix = _PREFIX[kind]
    x = data.pretraining.features  # every training row, labeled or not
    y_lab = data.train.target[labeled]
    score = _score(kind, cfg, data)
    margin = np.zeros((len(x), 1), dtype=np.float32)
    margin[labeled] = score.fit_transform(x[labeled], y_lab, X_unlabeled=x)
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    if len(unlabeled):
        margin[unlabeled] = score.transform(x[unlabeled])
    parts = [x, zs, margin] if settings.embedding else [x, margin]
    stack = np.hstack(parts).astype(np.float32)
    # The head sees standardized inputs: features are already, the embedding is by the probe's
    # statistics, the score's log-odds are left as they are.
    encoder = probe.encoder if settings.embedding else None
    shift = np.zeros(stack.shape[1], np.float32)
    scale = np.ones(stack.shape[1], np.float32)
    if encoder is not None:
        dims = slice(x.shape[1], x.shape[1] + zs.shape[1])
        shift[dims], scale[dims] = probe.shift.numpy(), probe.scale.numpy()
    trees = score.stack_trees()

    def model(coef: np.ndarray, intercept: float) -> BoostedStackClassifier:
        return BoostedStackClassifier.from_tables(
            **trees, coef=coef, intercept=intercept, encoder=encoder, shift=shift, scale=scale
        )

    s_lab, sens_lab = stack[labeled], sensitive[labeled]

    def penalized(
        weight: float, rows: np.ndarray, init: tuple[np.ndarray, float] | None
    ) -> FairnessPenalizedLogisticRegression:
        return FairnessPenalizedLogisticRegression(
            constraint=fair.constraint, penalty=weight, C=fc.regularization, max_iter=fair.steps
        ).fit(
            s_lab[rows], y_lab[rows], sensitive_features=sens_lab[rows],
            X_unlabeled=stack[penalty_rows], sensitive_features_unlabeled=sensitive[penalty_rows],
            init=init,
        )  # fmt: skip

    out: list[Candidate] = []
    everything = np.arange(len(labeled))
    init: tuple[np.ndarray, float] | None = None
    fold_inits: dict[int, tuple[np.ndarray, float]] = {}  # each fold warm-starts its own sweep

    def fold_head(
        weight: float, fold: int, rows: np.ndarray
    ) -> FairnessPenalizedLogisticRegression:
        head = penalized(weight, rows, fold_inits.get(fold))
        fold_inits[fold] = (head.coef_, head.intercept_)
        return head

    for weight in sorted(settings.penalties):
        head = penalized(weight, everything, init)
        init = (head.coef_, head.intercept_)  # warm start along the sweep
        oof = None
        if crossfit is not None:
            oof = crossfit.decision(lambda k, rows: fold_head(weight, k, rows), s_lab)  # noqa: B023
        for shift_by in sorted(set(settings.threshold_shifts) | {0.0}):
            # Raising one threshold for everyone trades false positives for false negatives
            # in both groups; with equalized odds that can narrow the gap the penalty leaves.
            name = f"{prefix}+penalty={weight:g}" + (f"+shift={shift_by:g}" if shift_by else "")
            out.append(candidate(
                name, f"{prefix}_penalty", weight, model(head.coef_, head.intercept_ - shift_by),
                None if oof is None else oof - shift_by,
            ))  # fmt: skip

    def reduced(eps: float, rows: np.ndarray) -> DistilledExponentiatedGradient:
        return DistilledExponentiatedGradient(
            constraint=fair.constraint, eps=eps, C=fc.regularization
        ).fit(s_lab[rows], y_lab[rows], sensitive_features=sens_lab[rows])

    for eps in sorted(settings.reductions):
        reduction = reduced(eps, everything)
        oof = None
        if crossfit is not None:
            oof = crossfit.decision(lambda _, rows: reduced(eps, rows), s_lab)  # noqa: B023
        out.append(candidate(f"{prefix}+exponentiated_gradient(eps={eps:g})",
                             f"{prefix}_reduction", eps,
                             model(reduction.coef_, reduction.intercept_), oof))  # fmt: skip
    return out
