"""The finetune stage: few-label transfer from the SSL encoder, fairness mitigation, baselines."""

from sslops.finetune.fairness import DemographicParityPenalty, FairnessPenalty
from sslops.finetune.stage import MODELS, finetune, stratified_label_subset

__all__ = [
    "MODELS",
    "DemographicParityPenalty",
    "FairnessPenalty",
    "finetune",
    "stratified_label_subset",
]
