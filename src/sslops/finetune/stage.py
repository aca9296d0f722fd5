"""Finetune: transfer the SSL encoder with few labels, mitigate unfairness, fit the baseline.

Three exportable ``TabularClassifier`` s come out:

- ``ssl``: the encoder transferred with ``finetune.label_fraction`` of the labels —
  a logistic-regression head on the frozen, standardized embedding (linear probe) or,
  with ``finetune.transfer: full``, encoder and head fine-tuned together; with
  ``ensemble``, the joint [features | embedding] probe averaged with a binned
  weight-of-evidence head (:mod:`.evidence`), one exportable classifier;
- ``mitigated``: the candidate the fairness policy selects from a sweep of in-training
  penalties and ExponentiatedGradient reductions (the Pareto front), over the SSL embedding
  and, with ``finetune.fairness.boosted``, over [features | boosted-tree score]: the most
  accurate on the validation split whose constrained gap is within
  ``finetune.fairness.max_gap`` (less ``selection_margin``); the gap is estimated on the
  validation split plus held-out unlabeled rows (demographic parity) or plus the labeled
  rows scored out of fold (equalized odds, equal opportunity, with ``gap_crossfit``: :mod:`.crossfit`);
- ``baseline``: logistic regression on the raw encoded features, same labels.

ThresholdOptimizer post-processing is fitted and reported, flagged, never deployed: it
needs the sensitive attribute at prediction time.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from sslops.artifacts import check_lineage, timed_stage, write_artifact, write_json
from sslops.config import FEW_VALIDATION_ROWS, SMALL_VALIDATION, Config
from sslops.data.encoding import TabularEncoding
from sslops.errors import ConfigError, DataError
from sslops.finetune.crossfit import LABELED_GAPS, CrossFit, gap_crossfit
from sslops.finetune.estimators import (
    DistilledExponentiatedGradient,
    FairnessPenalizedLogisticRegression,
    GridSearchLogisticRegression,
    GroupThresholdPostprocessor,
    groups_1d,
)
from sslops.finetune.evidence import BinnedEvidenceLogisticRegression, ensemble_classifier
from sslops.finetune.fairness import FairnessPenalty
from sslops.finetune.pareto import (
    GAPS,
    MECHANISMS,
    Candidate,
    fairness_gap,
    gap_upper_bound,
    mark_front,
    one_class_note,
    plot_front,
    select,
    selection_rule,
    undefined_gap_note,
)
from sslops.finetune.stacked import stacked_candidates
from sslops.finetune.transfer import FineTuneSettings, fine_tune
from sslops.gaps import EXCLUDED, without_small_groups
from sslops.models.tabular import MLPEncoder, TabularClassifier, save_classifier
from sslops.models.trees import BoostedStackClassifier
from sslops.optim import stage_numerics
from sslops.prepare.dataset import PreparedData, check_same_data
from sslops.pretrain.stage import load_encoder
from sslops.progress import task_progress

MODELS = ("ssl", "mitigated", "baseline")


# Fewer labels of a class than this (the data card's FEW_CLASS_ROWS) and the heads rest on
# a handful of rows: finetune.json, the progress line and stderr say so.
FEW_LABELS = 10


def stratified_label_subset(target: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``fraction`` of the rows, drawn per class, at least 2 per class
    (:func:`check_label_classes` refuses a split with fewer than 2 rows of a class)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(target):
        rows = np.flatnonzero(target == cls)
        k = min(len(rows), max(2, round(fraction * len(rows))))
        chosen.append(rng.choice(rows, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def check_label_classes(
    target: np.ndarray, labeled: np.ndarray, label: str, fraction: float,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``labels_by_class``: the labeled rows per class (``positive``, ``negative``; images
    and series: by the names in ``classes``) and, with fewer than :data:`FEW_LABELS` of a
    class, ``few_labels_note`` saying so. A training split with fewer than 2 rows of a class
    is refused: no label fraction can give a head that class to learn, and one positive row
    would be that person's features, not a class."""
    names = ["negative", "positive"] if classes is None else [str(c) for c in classes]
    order = [1, 0] if classes is None else list(range(len(names)))
    known = "the {} class" if classes is None else "class {!r}"
    target = np.asarray(target).astype(np.int64)
    counts = np.bincount(target, minlength=len(names))
    rows = {names[k]: int(counts[k]) for k in order}
    short = {name: n for name, n in rows.items() if n < 2}
    if short:
        name, n = next(iter(short.items()))
        shown = ", ".join(f"{c:,} {c_name}" for c_name, c in list(rows.items())[:6])
        raise DataError(
            f"the training split holds {n} row(s) of {known.format(name)} of label {label!r} "
            f"({shown}{', ...' if len(rows) > 6 else ''}); fine-tuning needs at least 2 of "
            f"each class: label more rows of {known.format(name)}"
        )
    used_counts = np.bincount(target[labeled], minlength=len(names))
    used = {names[k]: int(used_counts[k]) for k in order}
    few = {name: n for name, n in used.items() if n < FEW_LABELS}
    out: dict[str, Any] = {"labels_by_class": used}
    if few:
        held = ", ".join(f"{n} {name if classes is None else repr(name)} (of {rows[name]:,} in "
                         "the training split)" for name, n in list(few.items())[:3])  # fmt: skip
        more = f" and {len(few) - 3} more classes" if len(few) > 3 else ""
        out["few_labels_note"] = (
            f"the heads are fitted on few labels of a class: {held}{more}, "
            f"finetune.label_fraction {fraction:g} with at least 2 per class; models fitted on "
            "so few rows of a class are mostly noise and may never predict it: raise "
            "finetune.label_fraction"
        )
    return out


def _logistic_regression(x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=c, max_iter=5000).fit(x, y)


def logistic(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    fitted = _logistic_regression(x, y, c)
    return fitted.coef_[0], float(fitted.intercept_[0])


def fit_ensemble(
    encoder: MLPEncoder, x: np.ndarray, zs: np.ndarray, shift: np.ndarray, scale: np.ndarray,
    rows: np.ndarray, encoding: TabularEncoding, y: np.ndarray, c: float,
) -> tuple[BoostedStackClassifier, LogisticRegression, BinnedEvidenceLogisticRegression]:  # fmt: skip
    """Fit the SSL ensemble on the labeled ``rows`` of ``x`` (encoded features; ``zs`` their
    standardized embedding; every row places the evidence bins). Returns the exportable
    classifier and its two members (the joint probe, on ``[x | zs]``, and the evidence head)."""
    joint = _logistic_regression(np.hstack([x, zs])[rows], y, c)
    evidence = BinnedEvidenceLogisticRegression(
        column_of=encoding.column_of, n_numeric=len(encoding.numeric)
    ).fit(x[rows], y, X_unlabeled=x)
    model = ensemble_classifier(
        encoder, shift, scale, joint.coef_[0], float(joint.intercept_[0]), evidence
    )
    return model, joint, evidence


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def linear_model(
    encoder: MLPEncoder | None, coef: np.ndarray, intercept: float,
    shift: torch.Tensor | None = None, scale: torch.Tensor | None = None,
) -> TabularClassifier:  # fmt: skip
    """A classifier whose head is the given linear model on (standardized) features."""
    model = TabularClassifier(encoder, len(coef))
    with torch.no_grad():
        if shift is not None and scale is not None:
            model.shift.copy_(shift)
            model.scale.copy_(scale)
        model.head.weight.copy_(torch.as_tensor(coef, dtype=torch.float32)[None, :])
        model.head.bias.fill_(float(intercept))
    return model.eval()


class _Logits:
    """A torch classifier seen as an estimator with ``decision_function`` (its log-odds)."""

    def __init__(self, model: TabularClassifier) -> None:
        self.model = model

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model.logits(torch.from_numpy(x)).numpy().astype(np.float64)


def _predict(model: TabularClassifier, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy().astype(np.float64)


def _settings(cfg: Config) -> FineTuneSettings:
    f = cfg.finetune.full
    return FineTuneSettings(
        epochs=f.epochs, freeze_epochs=f.freeze_epochs, learning_rate=f.learning_rate,
        layer_decay=f.layer_decay, weight_decay=f.weight_decay, batch_size=f.batch_size,
    )  # fmt: skip


@timed_stage("finetune")
def finetune(cfg: Config, prepared_dir: Path, pretrained_dir: Path, out_dir: Path) -> Path:
    """Run the finetune stage; returns the artifact directory."""
    with stage_numerics(cfg.finetune.threads, cfg.seed):
        return _finetune(cfg, prepared_dir, pretrained_dir, out_dir)


def _finetune(cfg: Config, prepared_dir: Path, pretrained_dir: Path, out_dir: Path) -> Path:
    check_lineage(prepared_dir, pretrained_dir)
    check_same_data(cfg, prepared_dir)
    if cfg.modality != "tabular":  # images and series: sslops.finetune.arrays
        from sslops.finetune.arrays import finetune_arrays

        return finetune_arrays(cfg, prepared_dir, pretrained_dir, out_dir)
    fc, fair = cfg.finetune, cfg.finetune.fairness
    data = PreparedData(prepared_dir)
    columns = fair.sensitive or data.sensitive[:1]
    unknown = [c for c in columns if c not in data.train.frame.columns]
    if unknown:
        raise ConfigError(f"finetune.fairness.sensitive: columns {unknown} are not in the data")
    encoder = load_encoder(pretrained_dir)
    train, val = data.train, data.validation
    # Every training row, labeled or not: the training split (same row numbers), then the
    # rows of data.train without a label. Labels are drawn from the first part only; the
    # rest (and the training rows label_fraction leaves out) place the evidence bins, feed
    # the demographic-parity penalties and hold out rows for the gap estimates.
    pool = data.pretraining
    labeled = stratified_label_subset(train.target, fc.label_fraction, cfg.seed)
    labels = check_label_classes(
        train.target, labeled, str(data.schema.get("label", "label")), fc.label_fraction
    )
    y_lab = train.target[labeled]
    if "few_labels_note" in labels:
        print(f"warning: {labels['few_labels_note']}", file=sys.stderr, flush=True)

    x_train = torch.from_numpy(pool.features)
    with torch.no_grad():
        z_train = encoder(x_train)
    shift, scale = z_train.mean(0), z_train.std(0).clamp(min=1e-6)
    zs = ((z_train - shift) / scale).numpy()
    threshold = cfg.evaluate.threshold

    coef, intercept = logistic(zs[labeled], y_lab, fc.regularization)
    probe = linear_model(encoder, coef, intercept, shift, scale)

    def _ssl_ensemble(rows: np.ndarray) -> TabularClassifier:
        """The SSL ensemble fitted on ``rows`` of the labeled rows."""
        model, _, _ = fit_ensemble(
            encoder, pool.features, zs, shift.numpy(), scale.numpy(), labeled[rows],
            data.encoding, y_lab[rows], fc.joint_regularization,
        )  # fmt: skip
        return model

    ssl = probe
    if fc.transfer == "full":
        ssl = fine_tune(probe, x_train[labeled], torch.tensor(y_lab, dtype=torch.float32),
                        _settings(cfg), seed=cfg.seed)  # fmt: skip
    elif fc.transfer == "ensemble":
        ssl = _ssl_ensemble(np.arange(len(labeled)))
    baseline = linear_model(None, *logistic(train.features[labeled], y_lab, fc.regularization))

    val_groups = {c: val.groups(c).to_numpy() for c in columns}
    held, penalty_rows = _gap_holdout(cfg, len(pool.target), labeled)
    held_groups = {c: pool.groups(c).to_numpy()[held] for c in columns}
    x_held = pool.features[held]
    sens_all = pool.group_matrix(columns)

    crossfit = gap_crossfit(fair.constraint, fair.gap_crossfit, y_lab, cfg.seed)
    lab_groups = {c: train.groups(c).to_numpy()[labeled] for c in columns}

    def gaps_of(
        predicted: np.ndarray, predicted_held: np.ndarray, out_of_fold: np.ndarray | None = None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(gaps, upper bounds): on validation; demographic parity also over the held-out
        unlabeled rows, the label-dependent gaps also over the labeled rows' out-of-fold
        predictions. Upper bounds only with ``finetune.fairness.gap_confidence``."""
        sets = {gap: (val.target, predicted, val_groups) for gap in GAPS}
        if len(held):
            both = np.concatenate([predicted, predicted_held])
            groups = {c: np.concatenate([val_groups[c], held_groups[c]]) for c in columns}
            sets["demographic_parity"] = (np.zeros(len(both)), both, groups)  # no labels needed
        if out_of_fold is not None:
            both = np.concatenate([predicted, out_of_fold])
            groups = {c: np.concatenate([val_groups[c], lab_groups[c]]) for c in columns}
            for gap in LABELED_GAPS:
                sets[gap] = (np.concatenate([val.target, y_lab]), both, groups)
        least = cfg.evaluate.min_group_rows  # smaller groups are left out, as in evaluate
        sets = {
            gap: (y, p, {c: without_small_groups(g, least) for c, g in groups.items()})
            for gap, (y, p, groups) in sets.items()
        }
        gaps = {gap: fairness_gap(gap, *rows) for gap, rows in sets.items()}
        upper = {}
        if fair.gap_confidence is not None:
            upper = {gap: gap_upper_bound(gap, *rows, fair.gap_confidence)
                     for gap, rows in sets.items()}  # fmt: skip
        return gaps, upper

    def candidate(
        name: str, mechanism: str, strength: float, model: TabularClassifier,
        out_of_fold: np.ndarray | None = None,
    ) -> Candidate:  # fmt: skip
        """``out_of_fold``: the labeled rows' cross-fitted decision values (log-odds)."""
        predicted = (_predict(model, val.features) >= threshold).astype(int)
        acc = float(np.mean(predicted == val.target))
        on_held = (_predict(model, x_held) >= threshold).astype(int)
        oof = None if out_of_fold is None else (_sigmoid(out_of_fold) >= threshold).astype(int)
        gaps, upper = gaps_of(predicted, on_held, oof)
        return Candidate(name, mechanism, strength, acc, gaps, extra={"model": model},
                         cross_fitted=oof is not None, upper=upper,
                         selection_rate=float(predicted.mean()))  # fmt: skip

    def ssl_out_of_fold(folds: CrossFit | None) -> np.ndarray | None:
        """The labeled rows' decision values, each from ``ssl`` refitted without its fold
        (None for full fine-tuning, which is not refitted per fold)."""
        if folds is not None and fc.transfer == "linear_probe":
            z_lab = zs[labeled]
            return folds.decision(
                lambda _, rows: _logistic_regression(z_lab[rows], y_lab[rows], fc.regularization),
                z_lab,
            )  # fmt: skip
        if folds is not None and fc.transfer == "ensemble":
            return folds.decision(
                lambda _, rows: _Logits(_ssl_ensemble(rows)), train.features[labeled]
            )
        return None

    ssl_oof = ssl_out_of_fold(crossfit)
    constraint = fair.constraint if fair.constraint != "none" else "demographic_parity"
    sweep = fair.constraint != "none"
    with task_progress("finetune (candidates)", 3 if sweep else 1) as progress:
        candidates = [candidate("ssl", "none", 0.0, ssl, ssl_oof)]
        progress.update(1, f"ssl ({fc.transfer}, {len(labeled)} labels): validation accuracy "
                           f"{candidates[0].accuracy:.4f}")  # fmt: skip
        if sweep:
            candidates += _mitigation_candidates(
                cfg, data, columns, labeled, penalty_rows, ssl, probe, zs, candidate, crossfit
            )
            progress.update(2, f"{len(candidates) - 1} fairness-mitigated heads on the embedding")
            before = len(candidates)
            candidates += stacked_candidates(
                cfg, data, sens_all, labeled, penalty_rows, probe, zs, candidate, crossfit
            )
            progress.update(3, f"{len(candidates) - before} stacked heads; selecting by "
                               f"{constraint} <= {fair.max_gap:g}")  # fmt: skip
    mark_front(candidates, constraint)
    chosen, policy_met = (
        select(candidates, constraint, fair.max_gap - fair.selection_margin)
        if fair.constraint != "none"
        else (candidates[0], True)
    )  # fmt: skip

    caveats = [note for note in (
        one_class_note(chosen, len(val.target)) if fair.constraint != "none" else None,
        undefined_gap_note(chosen, constraint) if fair.constraint != "none" else None,
        _few_positives_note(
            fair.constraint,
            np.concatenate([val.target, y_lab]) if crossfit is not None else val.target,
            {c: np.concatenate([val_groups[c], lab_groups[c]]) if crossfit is not None
             else val_groups[c] for c in columns},
            cfg.evaluate.min_group_rows,
        ),
    ) if note]  # fmt: skip
    for note in caveats:
        print(f"warning: {note}", file=sys.stderr, flush=True)

    postprocessing, postprocessing_skipped = None, None
    if fair.postprocessing and fair.constraint != "none":
        val_sens = val.group_matrix(columns)
        postprocessing_skipped = _threshold_optimizer_unfittable(
            y_lab, sens_all[labeled], [val_sens, sens_all[held]]
        )
    if fair.postprocessing and fair.constraint != "none" and not postprocessing_skipped:
        # Thresholds fitted on ssl's in-sample scores equalize rates on the rows ssl was
        # fitted on and not on new rows: fit them on out-of-fold scores where ssl refits.
        oof = ssl_oof
        if oof is None:
            try:
                oof = ssl_out_of_fold(CrossFit(y_lab, 5, cfg.seed))
            except ValueError:  # fewer than 2 labeled rows of a class
                oof = None
        scores = _sigmoid(oof) if oof is not None else _predict(ssl, train.features[labeled])
        fitted_on = ("out-of-fold scores of the labeled rows" if oof is not None
                     else "in-sample scores of the labeled rows (full fine-tuning is not "
                     "refitted per fold; optimistic)")  # fmt: skip
        post = GroupThresholdPostprocessor(constraint=fair.constraint).fit(
            scores, y_lab, sensitive_features=sens_all[labeled]
        )
        predicted = post.predict(_predict(ssl, val.features), sensitive_features=val_sens,
                                 seed=cfg.seed)  # fmt: skip
        on_held = (  # every training row labeled: no held-out rows to score
            post.predict(_predict(ssl, x_held), sensitive_features=sens_all[held], seed=cfg.seed)
            if len(held)
            else np.empty(0, dtype=int)
        )
        gaps, upper = gaps_of(predicted, on_held)
        candidates.append(Candidate(
            "ssl+threshold_optimizer", "postprocessing", 0.0,
            float(np.mean(predicted == val.target)), gaps, deployable=False, upper=upper,
            selection_rate=float(np.mean(predicted)),
        ))  # fmt: skip
        postprocessing = {
            "flag": "needs the sensitive attribute at prediction time; reported, never deployed",
            "constraint": fair.constraint,
            "sensitive": columns,
            "base_model": "ssl",
            "fitted_on": fitted_on,
            "thresholds": post.thresholds_,
        }

    dp_gap_rows = labeled_gap_rows = f"validation ({len(val.target)} rows)"
    if len(held):
        dp_gap_rows += f" + {len(held)} unlabeled training rows held out of every penalty"
    if crossfit is not None:
        labeled_gap_rows += (
            f" + {len(labeled)} labeled training rows scored out of fold ({crossfit.folds} folds;"
            " candidates that cannot be refitted cheaply, full fine-tunes, on validation only)"
        )
    if len(val.target) < FEW_VALIDATION_ROWS:
        print(f"warning: {SMALL_VALIDATION.format(rows=len(val.target))}", file=sys.stderr,
              flush=True)  # fmt: skip
    report: dict[str, Any] = {
        "labels_used": len(labeled),
        **labels,  # labels_by_class, and few_labels_note when a class has few
        "label_fraction": fc.label_fraction,
        "train_rows": len(train.target),
        "validation_rows": len(val.target),
        "unlabeled_rows": len(pool.target) - len(train.target),
        "transfer": fc.transfer,
        # torch's threads (finetune.threads, else the cores or OMP_NUM_THREADS): the
        # mitigated head's last bits depend on it, so a bit-identical rebuild needs the same
        "threads": torch.get_num_threads(),
        "fairness": {
            "constraint": fair.constraint,
            "sensitive": columns,
            "max_gap": fair.max_gap,
            "selected": chosen.name,
            "selected_mechanism": chosen.mechanism,
            "selected_description": MECHANISMS.get(chosen.mechanism, chosen.mechanism),
            "selected_strength": chosen.strength,
            "policy_met_on_validation": policy_met,
            "selection_margin": fair.selection_margin,
            "gap_confidence": fair.gap_confidence,
            "selection_rule": selection_rule(fair.gap_confidence),
            "gap_rows": {
                "demographic_parity": dp_gap_rows,
                **{gap: labeled_gap_rows for gap in LABELED_GAPS},
            },
            "candidates": [c.row() for c in candidates],
        },
    }
    if postprocessing_skipped:
        report["fairness"]["postprocessing_skipped"] = postprocessing_skipped
    if caveats:  # the selection's figures say less than they seem to
        report["fairness"]["selection_caveats"] = caveats
    models = {"ssl": ssl, "mitigated": chosen.extra["model"], "baseline": baseline}
    info: dict[str, dict[str, Any]] = {
        "ssl": {"transfer": fc.transfer},
        "mitigated": {"mechanism": chosen.mechanism, "strength": chosen.strength},
        "baseline": {"kind": "logistic regression on raw encoded features"},
    }
    inputs = {"prepared": prepared_dir, "pretrained": pretrained_dir}
    with write_artifact(out_dir, "finetune", cfg.model_dump(mode="json"), inputs) as tmp:
        for name, model in models.items():
            save_classifier(model, tmp, name, {"threshold": threshold, **info[name]})
        # The frozen pretrained encoder with its probe head: evaluation's label-efficiency
        # curve transfers from it at other label fractions.
        save_classifier(probe, tmp, "probe", {"threshold": threshold, "transfer": "linear_probe"})
        np.save(tmp / "labeled_rows.npy", labeled)
        write_json(tmp / "finetune.json", report)
        if postprocessing:
            write_json(tmp / "postprocessing.json", postprocessing)
        if fair.constraint != "none":
            where = "validation" + (" + out-of-fold training rows" if crossfit else "") + (
                " + held-out unlabeled rows" if len(held) else ""
            )  # fmt: skip
            plot_front(tmp / "pareto.png", candidates, constraint, fair.max_gap, chosen, where)
    return Path(out_dir)


def _few_positives_note(
    constraint: str, y: np.ndarray, groups: dict[str, np.ndarray], least: int
) -> str | None:
    """For a label-dependent constraint, what the true-positive-rate gap the selection
    compared rests on when a compared group has fewer than :data:`FEW_LABELS` positive rows
    (no positive at all: no rate, and with fewer than two groups with a rate the gap is
    undefined for every candidate), else None."""
    if constraint not in LABELED_GAPS:
        return None
    counts = {}
    for column, values in groups.items():
        kept = without_small_groups(values, least)
        names = [g for g in np.unique(kept) if g != EXCLUDED]
        counts[column] = {str(g): int(y[kept == g].sum()) for g in names}
    few = {c: n for c, n in counts.items() if n and min(n.values()) < FEW_LABELS}
    if not few:
        return None
    held = "; ".join(f"{c}: " + ", ".join(f"{g} {k}" for g, k in n.items())
                     for c, n in few.items())  # fmt: skip
    unmeasured = [c for c, n in few.items() if sum(k > 0 for k in n.values()) < 2]
    return (
        f"the {constraint} gap the selection compared rests on few positive rows per group "
        f"({held})"
        + (f"; by {', '.join(map(repr, unmeasured))} fewer than two groups have a positive row, "
           "so the true-positive-rate difference there is undefined for every candidate and "
           "none meets the policy" if unmeasured else "")
        + ("; label more positive rows, or set finetune.fairness.gap_crossfit to measure it "
           "on the labeled training rows too" if unmeasured else
           "; finetune.fairness.gap_confidence selects on an upper bound that accounts for "
           "the rows")
    )  # fmt: skip


def _threshold_optimizer_unfittable(
    y_lab: np.ndarray, labeled_sens: np.ndarray, scored_sens: list[np.ndarray]
) -> str | None:
    """Why ThresholdOptimizer cannot be fitted on the labeled rows, or None: it needs both
    classes in every group, and a threshold for every group it is asked to score."""
    reasons = []
    single = GroupThresholdPostprocessor.unfittable_groups(y_lab, labeled_sens)
    if single:
        reasons.append(f"group(s) {', '.join(map(repr, single))} have one class only among "
                       f"the {len(y_lab)} labeled rows")  # fmt: skip
    seen = set(groups_1d(labeled_sens))
    # str: numpy's strings are repr'd np.str_('Male|Other') in finetune.json's reason
    unseen = sorted({str(g) for sens in scored_sens for g in groups_1d(sens)} - seen)
    if unseen:
        reasons.append(f"group(s) {', '.join(map(repr, unseen))} have no labeled row")
    if not reasons:
        return None
    return "ThresholdOptimizer not fitted (reported model only): " + "; ".join(reasons)


def _gap_holdout(cfg: Config, rows: int, labeled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(held, penalty_rows): a seeded share of the unlabeled training rows kept out of every
    fairness penalty to estimate demographic parity (which needs no labels), and the rest.

    Only for demographic parity: the other gaps need labels, which unlabeled rows lack.
    """
    fair = cfg.finetune.fairness
    unlabeled = np.setdiff1d(np.arange(rows), labeled)
    if fair.constraint != "demographic_parity" or fair.gap_holdout == 0 or len(unlabeled) < 2:
        return np.zeros(0, dtype=np.int64), unlabeled
    rng = np.random.default_rng(cfg.seed + 1)
    held = np.sort(rng.choice(unlabeled, size=round(fair.gap_holdout * len(unlabeled)),
                              replace=False))  # fmt: skip
    return held, np.setdiff1d(unlabeled, held)


def _mitigation_candidates(
    cfg: Config, data: PreparedData, columns: list[str], labeled: np.ndarray,
    penalty_rows: np.ndarray, ssl: TabularClassifier, probe: TabularClassifier, zs: np.ndarray,
    candidate: Any, crossfit: CrossFit | None = None,
) -> list[Candidate]:  # fmt: skip
    """The penalty sweep and the reductions sweep, each a deployable classifier.

    A penalty sees the labeled rows and ``penalty_rows`` (unlabeled rows, for demographic
    parity), never the rows held out to estimate the gaps. With ``crossfit`` the linear heads
    are also refitted per fold (full fine-tunes are not: too costly).
    """
    fc, fair = cfg.finetune, cfg.finetune.fairness
    train = data.pretraining  # labeled rows first, then the unlabeled split (target -1)
    y_lab = train.target[labeled]
    sens_all = train.group_matrix(columns)
    sens_lab = sens_all[labeled]
    encoder, shift, scale = probe.encoder, probe.shift, probe.scale
    z_lab = zs[labeled]
    out: list[Candidate] = []
    start_from = probe if fc.transfer == "ensemble" else ssl  # the ensemble's head is wider
    init = (start_from.head.weight[0].detach().numpy(), float(start_from.head.bias.detach()[0]))

    def penalized(
        weight: float, rows: np.ndarray, start: Any
    ) -> FairnessPenalizedLogisticRegression:
        return FairnessPenalizedLogisticRegression(
            constraint=fair.constraint, penalty=weight, C=fc.regularization, max_iter=fair.steps,
        ).fit(
            z_lab[rows], y_lab[rows], sensitive_features=sens_lab[rows],
            X_unlabeled=zs[penalty_rows], sensitive_features_unlabeled=sens_all[penalty_rows],
            init=start,
        )  # fmt: skip

    everything = np.arange(len(labeled))
    fold_starts: dict[int, tuple[np.ndarray, float]] = {}

    def fold_start(fold: int, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """A fold's refits start from that fold's own probe, as the full fit starts from ssl's."""
        if fold not in fold_starts:
            fold_starts[fold] = logistic(z_lab[rows], y_lab[rows], fc.regularization)
        return fold_starts[fold]

    for weight in sorted(w for w in fair.penalties if w > 0):
        oof = None
        if fc.transfer == "full":
            rows = np.sort(np.concatenate([labeled, penalty_rows]))
            y_pen = np.full(len(train.target), -1)
            y_pen[labeled] = y_lab
            penalty = FairnessPenalty(fair.constraint, sens_all[rows], y_pen[rows])  # type: ignore[arg-type]
            x_all = torch.from_numpy(train.features)
            model = fine_tune(
                probe, x_all[labeled], torch.tensor(y_lab, dtype=torch.float32), _settings(cfg),
                seed=cfg.seed, penalty=penalty, x_penalty=x_all[rows], weight=weight,
            )  # fmt: skip
        else:
            head = penalized(weight, everything, init)
            model = linear_model(encoder, head.coef_, head.intercept_, shift, scale)
            if crossfit is not None:
                oof = crossfit.decision(
                    lambda k, rows: penalized(weight, rows, fold_start(k, rows)),  # noqa: B023
                    z_lab,
                )  # fmt: skip
        out.append(candidate(f"penalty={weight:g}", "penalty", weight, model, oof))

    def reduced(eps: float, rows: np.ndarray) -> DistilledExponentiatedGradient:
        return DistilledExponentiatedGradient(
            constraint=fair.constraint, eps=eps, C=fc.regularization
        ).fit(z_lab[rows], y_lab[rows], sensitive_features=sens_lab[rows])

    for eps in sorted(fair.reductions):
        reduction = reduced(eps, everything)
        model = linear_model(encoder, reduction.coef_, reduction.intercept_, shift, scale)
        oof = None
        if crossfit is not None:
            oof = crossfit.decision(lambda _, rows: reduced(eps, rows), z_lab)  # noqa: B023
        out.append(candidate(f"exponentiated_gradient(eps={eps:g})", "reduction", eps, model, oof))
    if fair.grid_search:
        out += _grid_search_candidates(cfg, z_lab, y_lab, sens_lab, probe, candidate, crossfit)
    return out


def _grid_search_candidates(
    cfg: Config, z_lab: np.ndarray, y_lab: np.ndarray, sens_lab: np.ndarray,
    probe: TabularClassifier, candidate: Any, crossfit: CrossFit | None,
) -> list[Candidate]:  # fmt: skip
    """One candidate per fairlearn GridSearch point over the embedding, named by its net
    Lagrange multipliers per (event, group); strength: their L1 norm."""
    fc, fair = cfg.finetune, cfg.finetune.fairness

    def search(rows: np.ndarray) -> GridSearchLogisticRegression:
        return GridSearchLogisticRegression(
            constraint=fair.constraint, grid_size=fair.grid_search, C=fc.regularization
        ).fit(z_lab[rows], y_lab[rows], sensitive_features=sens_lab[rows])

    if len(np.unique(groups_1d(sens_lab))) < 2:
        return []  # the labeled rows hold one group: no trade-off to sweep
    grid = search(np.arange(len(y_lab)))
    folds: dict[int, GridSearchLogisticRegression] = {}
    if crossfit is not None:
        try:
            folds = {k: search(rows) for k, (rows, _) in enumerate(crossfit.splits)}
        except ValueError:  # a fold holds one group
            crossfit = None
        if any(len(f.coefs_) != len(grid.coefs_) for f in folds.values()):
            crossfit = None  # a fold's grid differs (a group or class missing): validation only

    out = []
    for index in range(len(grid.coefs_)):
        net = grid.multipliers_[index]
        strength = float(sum(abs(v) for v in net.values()))
        model = linear_model(probe.encoder, grid.coefs_[index], grid.intercepts_[index],
                             probe.shift, probe.scale)  # fmt: skip
        oof = None
        if crossfit is not None:
            oof = crossfit.decision(lambda k, _: folds[k].point(index), z_lab)  # noqa: B023
        lambdas = ", ".join(f"{k}: {v:+.3g}" for k, v in net.items()) or "0"
        name = f"grid_search(lambda {lambdas})" + (
            ", fairlearn's pick" if index == grid.best_idx_ else ""
        )  # fmt: skip
        out.append(candidate(name, "grid_search", strength, model, oof))
    return out
