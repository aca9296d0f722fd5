"""The finetune stage: few-label heads on the SSL encoder, a fairness-mitigated variant, a baseline."""

from sslops.finetune.fairness import DemographicParityPenalty, fit_penalized_head
from sslops.finetune.stage import MODELS, finetune, stratified_label_subset

__all__ = [
    "MODELS",
    "DemographicParityPenalty",
    "finetune",
    "fit_penalized_head",
    "stratified_label_subset",
]
