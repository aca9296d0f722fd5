"""Typed configuration: one schema for the CLI, DVC (params.yaml) and KFP.

A config is YAML; every command also takes dotted overrides
(``--set data.train=PATH --set finetune.label_fraction=0.1``). Unknown keys and
wrong values fail with a :class:`ConfigError` naming the key, the offending value
and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from collections.abc import Hashable
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, cast, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sslops import __version__
from sslops.errors import ConfigError
from sslops.k8s.settings import PlatformConfig


class _Yaml12Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans: only true/false, so a label value ``yes`` stays a string.

    A key written twice in one mapping is an error: PyYAML would keep the last silently, and a
    config author editing the first would change nothing. A merge key (``<<: *base``) may
    still be overridden by the mapping's own keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # `!!map 0`: PyYAML's own error names it
            return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            merge = key_node.tag == "tag:yaml.org,2002:merge"
            if merge or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node)
            if not isinstance(key, Hashable):  # `!!set : x`: PyYAML's own error names it
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"found duplicate key {key!r} (first on line {seen[key].line + 1}); YAML "
                    "would keep only the last one: remove or rename one of them",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's own scalar readers raise plain ValueError and friends for a value that
        looks like a date or number but is none (``2001-13-01``, ``!!int 1e3``, a 5,000-digit
        integer): turn those into a YAML error at the value's line and column."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, OverflowError, LookupError) as exc:
            shown = str(node.value) if isinstance(node, yaml.ScalarNode) else type(node).__name__
            shown = shown if len(shown) <= 40 else f"{shown[:37]}... ({len(shown)} characters)"
            kind = node.tag.rpartition(":")[2]
            raise yaml.constructor.ConstructorError(
                None, None,
                f"cannot read {shown!r} as YAML type {kind!r} ({exc}); quote it to keep it as text",
                node.start_mark,
            ) from None  # fmt: skip


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # _Yaml12Loader is a SafeLoader  # nosec B506


# The pretraining objectives and backbones each modality can use.
ALLOWED = {
    "tabular": {"objectives": ("scarf", "vime", "vicreg"), "backbones": ("mlp", "ft_transformer")},
    "image": {"objectives": ("simclr", "vicreg", "mae"), "backbones": ("resnet18", "vit_tiny")},
    "timeseries": {
        "objectives": ("simclr", "vicreg", "masked_segment", "next_patch"),
        "backbones": ("resnet1d",),
    },
}


class _Section(BaseModel):
    # allow_inf_nan: `.nan` passes no range check and `.inf` every lower bound.
    model_config = ConfigDict(
        extra="forbid", validate_default=True, coerce_numbers_to_str=True, allow_inf_nan=False
    )

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """``--set pretrain.epochs=true`` is a mistake, not 1 epoch (pydantic would take it)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            kinds = set(get_args(annotation)) or {annotation}
            if kinds & {int, float} and bool not in kinds:
                raise ValueError("expected a number")
        return value


# List items a range applies to: a penalty weight or constraint bound; a share of the labels.
Weight = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(gt=0, le=1)]

# Under this many validation rows, the candidates' accuracy differences are mostly noise
# (one row is 1% of 100): the run says so, and the model card lists it under Limitations.
FEW_VALIDATION_ROWS = 100
SMALL_VALIDATION = (
    "the fine-tuning selection compared candidates on {rows} validation rows; with fewer than "
    f"{FEW_VALIDATION_ROWS} their accuracy and gap differences are mostly noise "
    "(more data, or a larger prepare.validation_fraction)"
)


class DataConfig(_Section):
    """Where the raw data is and what its columns mean."""

    train: str = Field(description="Training table: a path, or package:NAME for shipped demo data.")
    test: str | None = Field(
        default=None, description="Test table; when absent a test split is cut from train."
    )
    format: Literal["csv", "parquet", "pixel_csv", "npz", "image_folder", "ts"] = Field(
        default="csv",
        description="Reader: csv / parquet (tables; a file, a folder or a glob of shards), "
        "pixel_csv / npz / image_folder (images), ts (UCR/sktime time series).",
    )
    label: str = Field(description="Label column (pixel_csv without a header: 'label').")
    positive: str | int | float | bool | list[str | int | float | bool] | None = Field(
        default=None,
        description="Label value of the positive class (required for tabular); a list when "
        "the class is written several ways (Adult's test file: ['>50K', '>50K.']). Images and "
        "series: optional, two classes only (the class equal opportunity measures; unset: "
        "the second label in sorted order); refused by prepare with more classes.",
    )
    sensitive: list[str] = Field(
        default_factory=list,
        description="Sensitive attribute columns; the first one is the fairness target "
        "(at least one for tabular data).",
    )
    text: list[str] = Field(
        default_factory=list,
        description="Free-text columns: kept verbatim apart from NFKC, whitespace and PII "
        "redaction (not case-folded, never one-hot encoded).",
    )
    identifiers: list[str] = Field(
        default_factory=list, description="Columns dropped in prepare; they never reach a model."
    )
    categorical: list[str] = Field(
        default_factory=list,
        description="Columns read as categories even where their values are numbers (a ZIP or "
        "product code, a grade 1-12 with 'K'). data.sensitive columns always are.",
    )
    na_values: list[str] = Field(
        default_factory=lambda: ["?", ""], description="Cell values that mean 'missing'."
    )
    attributes_file: str | None = Field(
        default=None,
        description="Images and series: a CSV of each item's group attributes (sex, site, "
        "scanner, age band), one row per image file or series; data.sensitive then names its "
        "columns (read as categories) instead of attributes computed from the pixels.",
    )
    attributes_key: str = Field(
        default="file",
        description="Column of data.attributes_file naming the item: an image's path under "
        "its folder (or its file name); '<file name>:<n>' for the n-th image or series of a "
        "pixel CSV, .npz or .ts file.",
    )

    @property
    def category_columns(self) -> list[str]:
        """Columns read as categories whatever their values: data.categorical and the
        sensitive columns (a group code such as sex = 1/2 names groups; it is not a quantity)."""
        return [*self.categorical, *(c for c in self.sensitive if c not in self.categorical)]

    @model_validator(mode="after")
    def _columns_are_listed_once(self) -> DataConfig:
        """A column listed twice in one role would be carried twice (a sensitive column
        reported and crossed with itself), so the slip is refused where it is written."""
        for key in ("sensitive", "text", "identifiers", "categorical"):
            columns: list[str] = getattr(self, key)
            twice = sorted({c for c in columns if columns.count(c) > 1})
            if twice:
                raise ValueError(
                    f"data.{key} lists {', '.join(map(repr, twice))} more than once; "
                    "expected each column once"
                )
        return self

    @model_validator(mode="after")
    def _roles_do_not_overlap(self) -> DataConfig:
        if self.label in self.sensitive or self.label in self.identifiers:
            raise ValueError(f"data.label {self.label!r} is also listed as sensitive or identifier")
        clash = sorted(set(self.sensitive) & set(self.identifiers))
        if clash:
            raise ValueError(f"columns {clash} are both sensitive and identifiers")
        as_text = sorted(set(self.sensitive) & set(self.text))
        if as_text:
            raise ValueError(
                f"data.sensitive columns {as_text} are also listed in data.text; a sensitive "
                "column holds groups (read as categories), not free text: list it in one only"
            )
        other = sorted(set(self.categorical) & {self.label, *self.identifiers, *self.text})
        if other:
            raise ValueError(
                f"data.categorical columns {other} are also the label, identifiers or text"
            )
        return self


class NearDuplicateConfig(_Section):
    """Near-duplicate detection; every cluster of near-copies stays on one side of each split."""

    enabled: bool = Field(
        default=True, description="Off: only exact duplicate rows/items are removed."
    )
    max_differing_fields: int = Field(
        default=1,
        ge=1,
        description="Tabular: rows differing in at most this many feature columns (the label "
        "is not compared); fewer than the feature columns, or every row is a near-copy.",
    )
    image_max_hamming: int = Field(
        default=6, ge=0, le=16, description="Images: at most this many of 64 pHash bits differ..."
    )
    image_min_correlation: float = Field(
        default=0.98, ge=0, le=1, description="...and the pixels correlate at least this much."
    )
    series_max_distance: float = Field(
        default=0.05,
        ge=0,
        description="Series: RMS distance between z-normalized series (0 = identical shape).",
    )
    text_jaccard: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="data.text columns: texts whose word-bigram Jaccard similarity reaches this "
        "(MinHash-LSH) count as equal when rows are compared; null = off.",
    )


class PiiConfig(_Section):
    """PII handling. The hashing key is read from a file or an environment variable, never
    from this config, so the config (saved in every artifact) cannot reveal it."""

    identifiers: Literal["drop", "hash"] = Field(
        default="drop", description="data.identifiers are dropped or replaced by a keyed hash."
    )
    key_file: str | None = Field(default=None, description="File holding the hashing key.")
    key_env: str = Field(
        default="SSLOPS_PII_KEY", description="Environment variable holding the hashing key."
    )
    scan: bool = Field(default=True, description="Scan and redact every text column.")
    skip_columns: list[str] = Field(
        default_factory=list,
        description="Text columns the scan leaves as they are, e.g. an application date it "
        "would redact as a possible date of birth. Only for columns known to hold no "
        "personal data; the data card lists them.",
    )


class PrepareConfig(_Section):
    """Canonicalization, PII handling, deduplication and the train/validation/test splits."""

    validation_fraction: float = Field(
        default=0.1, gt=0, lt=0.5, description="Share of the rows kept for model selection."
    )
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5, description="Used without data.test.")
    max_categories: int = Field(
        default=50, ge=2, description="Per column; rarer categories fold into one 'other' level."
    )
    min_category_count: int = Field(
        default=5,
        ge=1,
        description="Categories seen in fewer training rows fold into the 'other' level too, so "
        "no artifact or model stores a value that (nearly) identifies a row.",
    )
    sensitive_as_features: bool = Field(
        default=True, description="Whether sensitive columns are model inputs."
    )
    casefold_categories: bool = Field(
        default=True,
        description="Category spellings that differ only in case become one (the most frequent).",
    )
    split_key: list[str] = Field(
        default_factory=list,
        description="Columns whose keyed hash assigns the split (e.g. a customer id, read before "
        "identifiers are dropped); empty = the whole canonical row.",
    )
    ood: str | None = Field(
        default=None,
        description="Rows matching this predicate form an 'ood' split, e.g. "
        '"native-country != United-States" (==, !=, <, <=, >, >=, joined by and / or; text '
        "compares case-insensitively); one that matches no row, or that takes a whole class "
        "out of train (an unseen class is not a shift in the inputs), is an error.",
    )
    unlabeled: Literal["pretrain", "drop"] = Field(
        default="pretrain",
        description="Tables: rows of data.train whose label is empty. 'pretrain' keeps them as "
        "the 'unlabeled' split, which self-supervised pretraining reads with the training rows "
        "(never fine-tuning or evaluation); 'drop' drops them. Either way the data card counts "
        "them; images and series drop them.",
    )
    chunk_rows: int = Field(default=200_000, ge=1, description="Rows read per chunk.")
    near_duplicates: NearDuplicateConfig = Field(default_factory=NearDuplicateConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    image_size: list[int] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="Images: [height, width] every image is resized to; default: the first's.",
    )
    image_channels: Literal[1, 3] = Field(default=1, description="Images: 1 (grey) or 3 (RGB).")
    series_length: int | None = Field(
        default=None, ge=2, description="Series: target length; default: the most common one."
    )
    series_length_policy: Literal["resample", "pad_crop"] = Field(
        default="resample",
        description="Series of another length: linear resampling, or edge-pad / crop the end.",
    )


Objective = Literal["scarf", "vime", "vicreg", "simclr", "mae", "masked_segment", "next_patch"]
Backbone = Literal["auto", "mlp", "ft_transformer", "resnet18", "vit_tiny", "resnet1d"]


class ImageAugmentConfig(_Section):
    """The SimCLR image views (lightly's ``SimCLRTransform`` defaults, without blur).

    Digits and other oriented, colourless images want milder crops and no flips or colour
    jitter: see ``configs/mnist.yaml``.
    """

    min_scale: float = Field(
        default=0.08, gt=0, le=1, description="Smallest random-crop area, as a share of the image."
    )
    flip: float = Field(default=0.5, ge=0, le=1, description="Horizontal flip probability.")
    jitter_prob: float = Field(
        default=0.8, ge=0, le=1, description="Probability of colour jitter per view."
    )
    grey_prob: float = Field(default=0.2, ge=0, le=1, description="Probability of greyscale.")


class PretrainFairnessConfig(_Section):
    """Fairness-aware pretraining (tabular): keep sensitive columns out of the embedding."""

    method: Literal["none", "adversarial", "penalty"] = Field(
        default="none",
        description="none; adversarial: an MLP predicts the column from the embedding through a "
        "gradient-reversal layer; penalty: normalized HSIC between embedding and column.",
    )
    sensitive: list[str] | None = Field(
        default=None,
        description="Columns kept out and probed, each one of data.sensitive "
        "(default: data.sensitive[0]).",
    )
    weight: float = Field(
        default=10.0, ge=0, description="lambda: the reversed gradient's scale / the penalty's."
    )
    adversary_hidden: int = Field(default=64, ge=1, description="Hidden units of the adversary.")
    adversary_lr_scale: float = Field(
        default=10.0, gt=0, description="The adversary's learning rate / pretrain.learning_rate."
    )
    probe: list[Literal["logistic", "hgb"]] = Field(
        default_factory=lambda: ["logistic"],  # type: ignore[arg-type]
        description="Probes predicting each column from the frozen embedding (ROC AUC on test "
        "in summary.json, also when method is none); hgb = gradient boosting; [] to skip.",
    )
    probe_rows: int = Field(
        default=5000, ge=50, description="Train rows the probes fit on, test rows they score."
    )


class PretrainConfig(_Section):
    """Self-supervised pretraining: objective, backbone, precision, checkpoints, monitoring."""

    objective: Objective = Field(
        default="scarf",
        description="tabular: scarf, vime, vicreg; image: simclr, vicreg, mae (vit_tiny); "
        "timeseries: simclr, vicreg, masked_segment, next_patch. Unset: the modality's first "
        "(scarf for tables, simclr for images and series).",
    )
    backbone: Backbone = Field(
        default="auto",
        description="auto: mlp (tabular), resnet18 (image; vit_tiny for mae), resnet1d (series).",
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32", description="bf16 autocast on CPU and GPU; fp32 master weights."
    )
    channels_last: bool = Field(default=True, description="channels_last memory for CNNs.")
    compile: bool = Field(default=False, description="torch.compile the backbone.")
    checkpoint_every: int = Field(
        default=0, ge=0, description="Checkpoint every N optimizer steps (0: only at the end)."
    )
    checkpoint_minutes: float | None = Field(
        default=None,
        ge=0,
        description="Also checkpoint once this many minutes have passed since the last one "
        "(rank 0's clock; 0: off). Unset: 10 with launcher trainjob or pytorchjob (a lost "
        "node costs at most that much training), 0 with local.",
    )
    heartbeat_seconds: float = Field(
        default=60,
        ge=0,
        description="Every rank logs rank, step, samples/s and last loss this often "
        "(logger sslops.pretrain; rank 0 at info, the others at debug; 0: off) and writes them "
        "to the checkpoint folder, where a training job's launcher sees a stall (no step in 5 "
        "intervals).",
    )
    log_level: Literal["info", "debug"] = Field(
        default="info",
        description="Level of the training loop's log: info shows rank 0's heartbeat, debug "
        "every rank's (to find a hung rank).",
    )
    checkpoint_dir: str | None = Field(
        default=None, description="Checkpoint folder; default: '<out>.checkpoints' beside --out."
    )
    resume: bool = Field(
        default=True, description="Continue from the latest checkpoint when one exists."
    )
    init_from: str | None = Field(
        default=None,
        description="Start from local weights: a .safetensors file, a pretrain artifact or a "
        "checkpoint folder (never a download).",
    )
    mask_ratio: float | None = Field(
        default=None, gt=0, lt=1, description="Masked objectives; default per objective."
    )
    patch_size: int | None = Field(
        default=None, ge=1, description="ViT / series patch size; default per backbone."
    )
    knn_every: int = Field(
        default=1, ge=0, description="Online kNN accuracy every N epochs (0: off)."
    )
    knn_k: int = Field(default=20, ge=1, description="Neighbours of the online kNN accuracy.")
    knn_samples: int = Field(
        default=1000, ge=10, description="Labeled rows in the kNN bank (train) and queries."
    )
    epochs: int = Field(default=30, ge=1, description="Passes over the pretraining rows.")
    batch_size: int = Field(
        default=512, ge=8, description="Rows per optimizer step, over all ranks."
    )
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW peak learning rate.")
    warmup_epochs: float | None = Field(
        default=None,
        ge=0,
        description="Linear learning-rate warmup over the first N epochs (fractions allowed), "
        "then cosine decay to 0. Default: 5% of pretrain.epochs for mae (the MAE recipe warms "
        "up its transformer), 0 for the other objectives.",
    )
    weight_decay: float = Field(default=1e-5, ge=0, description="AdamW weight decay.")
    hidden_dim: int = Field(
        default=256, ge=4, description="Tabular backbones and projector: hidden width."
    )
    depth: int = Field(default=3, ge=1, le=12, description="Tabular backbones: layers.")
    embed_dim: int = Field(default=128, ge=2, description="Tabular backbones: embedding size.")
    projection_dim: int = Field(
        default=64, ge=2, description="Projection head output (contrastive and VICReg losses)."
    )
    corruption_rate: float = Field(
        default=0.6,
        gt=0,
        lt=1,
        description="Tabular views (scarf, vicreg): share of a row's columns replaced.",
    )
    temperature: float = Field(default=1.0, gt=0, description="Contrastive loss temperature.")
    threads: int = Field(default=0, ge=0, description="torch threads; 0 = all cores.")
    launcher: Literal["local", "trainjob", "pytorchjob"] = Field(
        default="local",
        description="local: in the pipeline task's pod; trainjob: a Kubeflow Trainer TrainJob; "
        "pytorchjob: a Training Operator v1 PyTorchJob.",
    )
    nodes: int = Field(default=1, ge=1, description="Training nodes (trainjob/pytorchjob).")
    gpus_per_node: int = Field(default=0, ge=0, description="GPUs per pod/node on a cluster.")
    processes_per_node: int = Field(
        default=0,
        ge=0,
        description="torchrun processes per node; 0 = one per GPU (1 on CPU). With GPUs: 0 or "
        "gpus_per_node, as each rank uses one GPU.",
    )
    fairness: PretrainFairnessConfig = Field(
        default_factory=PretrainFairnessConfig,
        description="Fairness-aware pretraining (tabular): keep sensitive columns out of the "
        "embedding.",
    )
    augment: ImageAugmentConfig = Field(
        default_factory=ImageAugmentConfig, description="Image views (simclr, vicreg)."
    )

    @model_validator(mode="after")
    def _many_nodes_need_a_job_launcher(self) -> PretrainConfig:
        if self.nodes > 1 and self.launcher == "local":
            raise ValueError(
                f"pretrain.nodes={self.nodes} needs pretrain.launcher trainjob or pytorchjob"
            )
        return self

    @model_validator(mode="after")
    def _one_process_per_gpu(self) -> PretrainConfig:
        # Each rank takes the GPU of its local rank (torch.cuda.set_device): more processes
        # than the pod's GPUs fail on the GPU node ("invalid device ordinal") after the job
        # was scheduled; fewer leave GPUs the pod requested idle.
        gpus, processes = self.gpus_per_node, self.processes_per_node
        if gpus and processes and processes != gpus:
            outcome = "ranks past the GPUs fail" if processes > gpus else "the rest stay idle"
            raise ValueError(
                f"pretrain.processes_per_node={processes} with pretrain.gpus_per_node={gpus}: "
                f"expected one process per GPU (processes_per_node 0 or {gpus}); each rank "
                f"uses one GPU, so {outcome}"
            )
        return self

    @model_validator(mode="after")
    def _batch_splits_over_the_processes(self) -> PretrainConfig:
        size = self.nodes * self.processes
        if self.batch_size % size:
            lower, upper = self.batch_size - self.batch_size % size, self.batch_size + size
            upper -= upper % size
            near = f"{lower} or {upper}" if lower >= 8 else str(upper)
            per_node = (
                "pretrain.processes_per_node" if self.processes_per_node
                else "pretrain.gpus_per_node" if self.gpus_per_node
                else "one on a node without GPUs"
            )  # fmt: skip
            raise ValueError(
                f"pretrain.batch_size={self.batch_size} does not split over the {size} training "
                f"processes (pretrain.nodes={self.nodes} x {self.processes} per node: "
                f"{per_node}); expected a multiple of {size}, e.g. {near}"
            )
        return self

    @model_validator(mode="after")
    def _warmup_within_the_run(self) -> PretrainConfig:
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"pretrain.warmup_epochs={self.warmup_epochs:g} is longer than "
                f"pretrain.epochs={self.epochs}; expected at most the whole run"
            )
        return self

    @property
    def processes(self) -> int:
        return self.processes_per_node or max(self.gpus_per_node, 1)


class BoostedStackConfig(_Section):
    """Fairness heads over [encoded features | (SSL embedding) | a cross-fitted score].

    Each score in ``scores`` is fitted on the labeled rows and the heads train on its
    out-of-fold log-odds (``folds`` folds), so they see scores like those of unseen rows:
    ``trees``, a HistGradientBoosting model (candidates ``boosted+...``), and ``evidence``,
    the binned weight-of-evidence head (``evidence+...``; the stronger with few labels).
    """

    scores: list[Literal["trees", "evidence"]] = Field(
        default_factory=lambda: ["trees", "evidence"],  # type: ignore[arg-type]
        description="Stacked scores, each with its own candidates: trees (boosted+...), "
        "evidence (the binned weight-of-evidence head, evidence+...); [] to skip.",
    )

    penalties: list[Weight] = Field(
        default_factory=lambda: [0.0, 30.0, 100.0, 300.0, 1000.0],
        description="In-training penalty weights of the stacked head; [] to skip.",
    )
    reductions: list[Weight] = Field(
        default_factory=lambda: [0.002, 0.005, 0.01],
        description="ExponentiatedGradient bounds (eps) of the stacked head, distilled; [] to skip.",
    )
    threshold_shifts: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75],
        description="Log-odds added to each penalized head's decision threshold, one candidate "
        "each: a single cost-sensitive threshold for everyone (no sensitive attribute needed).",
    )
    embedding: bool = Field(default=False, description="Also give the head the SSL embedding.")
    max_iter: int = Field(default=100, ge=1, description="Boosting iterations (trees score).")
    folds: int = Field(default=5, ge=2, description="Cross-fitting folds for the training scores.")


class FairnessConfig(_Section):
    """Fairness mitigation and the policy that selects the deployed (``mitigated``) model."""

    constraint: Literal["demographic_parity", "equalized_odds", "equal_opportunity", "none"] = (
        Field(default="demographic_parity", description="The gap the mitigation constrains and "
              "the policy bounds by max_gap; none: no fairness mitigation.")
    )  # fmt: skip
    max_gap: float = Field(
        default=0.02, gt=0, lt=1, description="Policy: the constrained gap on validation."
    )
    sensitive: list[str] | None = Field(
        default=None,
        description="Columns the constraint covers, each one of data.sensitive (default: "
        "data.sensitive[0]); with several, the policy bounds the largest gap over them, each "
        "column on its own (not their crossing); the penalties sum each column's, fairlearn's "
        "reductions, GridSearch and ThresholdOptimizer constrain their crossing.",
    )
    penalties: list[Weight] = Field(
        default_factory=lambda: [0.0, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0],
        min_length=1,
        description="Sweep of the in-training penalty weight (Pareto front candidates).",
    )
    reductions: list[Weight] = Field(
        default_factory=lambda: [0.005, 0.01, 0.02, 0.05],
        description="ExponentiatedGradient constraint bounds (eps) to sweep; [] to skip.",
    )
    grid_search: int = Field(
        default=11, ge=0,
        description="fairlearn GridSearch over the SSL embedding: grid size (Lagrange "
        "multipliers swept; each point's logistic regression is a candidate); 0 to skip.",
    )  # fmt: skip
    postprocessing: bool = Field(
        default=True,
        description="Also report fairlearn ThresholdOptimizer (flagged: needs the sensitive "
        "attribute at prediction time; never deployed).",
    )
    steps: int = Field(default=300, ge=1, description="L-BFGS iterations per linear head.")
    boosted: BoostedStackConfig | None = Field(
        default_factory=BoostedStackConfig,
        description="Candidates whose head also sees a cross-fitted boosted-tree score; null to skip.",
    )
    selection_margin: float = Field(
        default=0.0, ge=0, lt=1,
        description="Policy safety margin: select among candidates whose validation gap is within "
        "max_gap - selection_margin (a validation gap is a noisy estimate of the test gap).",
    )  # fmt: skip
    gap_confidence: float | None = Field(
        default=None, gt=0.5, lt=1,
        description="Select on each candidate's upper confidence bound of the gap at this "
        "one-sided level (e.g. 0.95) instead of the measured gap: a model qualifies only if "
        "its gap is within max_gap - selection_margin with that confidence, given how many "
        "rows of each group the gap was measured on. null: the measured gap.",
    )  # fmt: skip
    gap_holdout: float = Field(
        default=0.5, ge=0, lt=1,
        description="Demographic parity needs no labels: this share of the unlabeled training "
        "rows (those label_fraction leaves out and the rows of data.train without a label) is "
        "kept out of every fairness penalty and joins the validation split to estimate each "
        "candidate's demographic-parity gap (0: validation only).",
    )  # fmt: skip
    gap_crossfit: int = Field(
        default=0, ge=0,
        description="Equalized odds and equal opportunity need labels: with k >= 2, each "
        "linear-head candidate is refitted on k folds of the labeled training rows and its gap "
        "is measured on the validation split plus the out-of-fold predictions (0, the default: "
        "validation only; see docs/benchmarks.md for when the two disagree).",
    )  # fmt: skip

    @model_validator(mode="after")
    def _crossfit_folds(self) -> FairnessConfig:
        if self.gap_crossfit == 1:
            raise ValueError("gap_crossfit must be 0 (off) or at least 2 folds, got 1")
        return self


class FullFineTuneConfig(_Section):
    """Full fine-tuning of encoder + head (``finetune.transfer: full``)."""

    epochs: int = Field(default=10, ge=1, description="Epochs, head-only ones included.")
    freeze_epochs: int = Field(default=2, ge=0, description="Head-only epochs first.")
    learning_rate: float = Field(
        default=1e-3,
        gt=0,
        description="The head's; encoder layers get it times layer_decay per layer below.",
    )
    layer_decay: float = Field(default=0.7, gt=0, le=1, description="Layer-wise LR decay.")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay.")
    batch_size: int = Field(default=256, ge=2, description="Labeled rows per step.")


class FinetuneConfig(_Section):
    """Fine-tuning on the labels: the transfer of the SSL encoder and fairness mitigation."""

    label_fraction: float = Field(
        default=0.01, gt=0, le=1,
        description="Share of the labeled training rows the heads are fitted on (1: all); the "
        "rest are treated as unlabeled, to simulate a few labels.",
    )  # fmt: skip
    threads: int = Field(
        default=0, ge=0,
        description="torch threads while fine-tuning; 0 = torch's default (the cores, or "
        "OMP_NUM_THREADS). The weights' last bits depend on it: pin it, with pretrain.threads, "
        "to rebuild a model bit for bit on another machine.",
    )  # fmt: skip
    regularization: float = Field(
        default=1.0, gt=0, description="Inverse L2 strength of the heads (scikit-learn's C)."
    )
    transfer: Literal["linear_probe", "full", "ensemble"] = Field(
        default="linear_probe",
        description="How the `ssl` model transfers the encoder: a head on the frozen embedding, "
        "encoder and head fine-tuned, or the SSL ensemble (joint [features | embedding] probe "
        "averaged with a binned weight-of-evidence head; tabular).",
    )
    joint_regularization: float = Field(
        default=0.1, gt=0, description="C of the SSL ensemble's joint probe (also on the curve)."
    )
    full: FullFineTuneConfig = Field(
        default_factory=FullFineTuneConfig,
        description="Full fine-tuning (finetune.transfer: full, and the curve's fine-tuning).",
    )
    fairness: FairnessConfig = Field(
        default_factory=FairnessConfig,
        description="Fairness mitigation and the policy that selects the deployed "
        "(`mitigated`) model.",
    )


class LabelEfficiencyConfig(_Section):
    """The label-efficiency curve: each model's test metrics by the share of labels it saw."""

    fractions: list[Share] = Field(
        default_factory=lambda: [0.01, 0.05, 0.1, 1.0],
        min_length=1,
        description="Shares of the labeled training rows, one point of the curve each "
        "(evaluate.label_efficiency: null skips the curve).",
    )
    draws: int = Field(default=1, ge=1, description="Label draws (seeds) per fraction.")
    full_fine_tune: bool = Field(default=True, description="Include SSL full fine-tuning.")
    ensemble: bool = Field(
        default=True,
        description="Include the SSL joint probe ([raw | embedding]) and its ensemble with a "
        "binned weight-of-evidence head (tabular), and that head alone as a baseline.",
    )


class EvaluateConfig(_Section):
    """Test metrics overall and per group, shortcut and OOD tests, the label-efficiency curve."""

    threshold: float = Field(default=0.5, gt=0, lt=1, description="Decision threshold.")
    bootstrap: int = Field(default=200, ge=0, description="Resamples for 95% intervals.")
    intersections: bool = Field(default=True, description="Also the sensitive columns' crossings.")
    min_group_rows: int = Field(
        default=10, ge=0,
        description="Tables: a group (or crossing) of fewer rows is reported by its count "
        "only, no metric (with one row, its metrics are that person's label and decision; "
        "the data card's group tables show no positive rate either), "
        "and is left out of the fairness gaps (evaluate, the fine-tuning selection on "
        "validation, the gates): its rate is noise.",
    )  # fmt: skip
    proxies: list[str] = Field(
        default_factory=list, description="Proxy columns checked for reliance, like sensitive ones."
    )
    shortcut_columns: list[str] = Field(
        default_factory=list, description="Suspected shortcut columns (e.g. a planted feature)."
    )
    reliance_threshold: float = Field(
        default=0.05, gt=0, lt=1,
        description="Flag a column when permuting it flips more than this share of the "
        "decisions on average: a tolerance, as a gate's bound is; shortcuts.json gives the "
        "flip rate's 95% interval over test rows and marks a flag uncertain when the interval "
        "holds this value.",
    )  # fmt: skip
    permutation_repeats: int = Field(
        default=10, ge=1, le=1000,
        description="Shuffles of each column in the reliance test; the mean decides the flag.",
    )  # fmt: skip
    label_efficiency: LabelEfficiencyConfig | None = Field(
        default_factory=LabelEfficiencyConfig, description="null to skip the curve."
    )


class GatesConfig(_Section):
    """Policy gates on the deployed model (``export.model``); ``null`` switches a gate off.

    A failing gate fails the audit stage, and so the pipeline, unless
    ``audit.overrides.<gate>`` gives a written justification (recorded in the bundle).
    """

    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="Test accuracy.")
    min_auc: float | None = Field(default=0.6, ge=0, le=1, description="Test ROC AUC.")
    max_dp_difference: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Demographic-parity difference: the largest over the columns the "
        "fine-tuning policy constrains (finetune.fairness.sensitive, default "
        "data.sensitive[0]), each on its own.",
    )
    max_eo_difference: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Equalized-odds difference: the largest over the columns the "
        "fine-tuning policy constrains (finetune.fairness.sensitive, default "
        "data.sensitive[0]), each on its own.",
    )
    max_onnx_abs_diff: float | None = Field(
        default=1e-4, gt=0, description="Largest |ONNX - torch| probability on the test split."
    )
    max_int8_accuracy_drop: float | None = Field(
        default=0.5, ge=0, description="Accuracy points the int8 model may lose against fp32."
    )
    max_sensitive_reliance: float | None = Field(
        default=None, ge=0, le=1,
        description="Share of test decisions that change when only a sensitive attribute is "
        "set to another value (counterfactual test; the largest over data.sensitive).",
    )  # fmt: skip


class GateOverride(_Section):
    """Accepting a failed gate: who decided and why, written into the audit bundle."""

    justification: str = Field(min_length=20, description="Why the failure is acceptable.")
    approved_by: str = Field(min_length=1, description="Name or role of the approver.")


class SigningConfig(_Section):
    """Where the Ed25519 private key (PEM) comes from; the key itself never goes in a config."""

    key_file: str | None = Field(default=None, description="Path of the private key file.")
    key_env: str = Field(
        default="SSLOPS_SIGNING_KEY",
        description="Environment variable holding the key (a Kubernetes Secret on a cluster).",
    )
    required: bool = Field(default=False, description="Fail the audit when no key is found.")
    command: str | None = Field(
        default=None,
        description="A command that signs instead (HSM, KMS): it reads the bytes to sign on "
        "stdin and prints the Ed25519 signature, base64; the private key never enters sslops.",
    )
    public_key_file: str | None = Field(
        default=None, description="The public key of the key audit.signing.command signs with."
    )

    @field_validator("command")
    @classmethod
    def _command_splits_into_words(cls, command: str | None) -> str | None:
        """The command is split as a shell would (shlex); a line it cannot split (an unclosed
        quote) is refused here, not by ``sslops run`` or audit in a traceback."""
        try:
            shlex.split(command or "")
        except ValueError as exc:
            raise ValueError(
                f"cannot be split into words ({exc}); expected a command line "
                "as a shell reads it, e.g. 'kms-sign --key prod' (quote a word with spaces)"
            ) from None
        return command


class AuditConfig(_Section):
    """The model card, the policy gates and the signed audit bundle."""

    title: str = Field(default="sslops model card", description="Model card title.")
    owner: str = Field(default="unspecified", description="Accountable owner on the card.")
    intended_use: str = Field(
        default="Decision support; not for fully automated decisions about people.",
        description="Intended use stated on the model card.",
    )
    gates: GatesConfig = Field(
        default_factory=GatesConfig,
        description="Policy gates on the deployed model; null switches a gate off.",
    )
    overrides: dict[str, GateOverride] = Field(
        default_factory=dict, description="Accepted gate failures, keyed by gate name."
    )
    signing: SigningConfig = Field(
        default_factory=SigningConfig, description="Where the Ed25519 signing key comes from."
    )
    previous_bundle: str | None = Field(
        default=None,
        description="An earlier audit bundle (folder or .zip) for the change log, or "
        "'registry:latest': the bundle filed last under audit.model_name in audit.registry.",
    )
    registry: str | None = Field(
        default=None,
        description="Audit registry folder to file the bundle in (bundles/<sha256>.zip, "
        "models/<model_name>/index.json); on a cluster, a path on the workspace volume.",
    )
    model_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="The name the registry files bundles under (default: made from the title).",
    )

    @model_validator(mode="after")
    def _latest_needs_registry(self) -> AuditConfig:
        if self.previous_bundle == "registry:latest" and not self.registry:
            raise ValueError(
                "audit.previous_bundle 'registry:latest' is the bundle filed last in the audit "
                "registry: set audit.registry too"
            )
        return self

    @model_validator(mode="after")
    def _overrides_name_gates(self) -> AuditConfig:
        unknown = sorted(set(self.overrides) - set(GatesConfig.model_fields))
        if unknown:
            raise ValueError(
                f"audit.overrides names no gate: {unknown}; gates are "
                + ", ".join(GatesConfig.model_fields)
            )
        return self


class ExportConfig(_Section):
    """ONNX export of the deployed model, its parity check and quantization."""

    model: Literal["mitigated", "ssl"] = Field(
        default="mitigated",
        description="The model exported and gated: the fairness-selected one or the SSL model.",
    )
    opset: int = Field(default=18, ge=18, description="ONNX opset.")
    max_abs_diff: float = Field(default=1e-4, gt=0, description="ONNX-vs-torch parity bound.")
    quantize: Literal["dynamic_int8", "none"] = Field(
        default="dynamic_int8",
        description="Also write model.int8.onnx (tables: dynamic int8; images/series: static "
        "QDQ int8).",
    )


class CostMatrix(_Section):
    """Cost of each decision outcome, in ``kpi.currency`` (true outcomes usually cost 0)."""

    false_positive: float = Field(default=1.0, ge=0, description="Wrongly positive.")
    false_negative: float = Field(default=1.0, ge=0, description="Wrongly negative.")
    true_positive: float = Field(default=0.0, description="Rightly positive.")
    true_negative: float = Field(default=0.0, description="Rightly negative.")


class KpiConfig(_Section):
    """Business KPIs for the shadow report and the audit card: labels and decisions in money."""

    currency: str = Field(default="EUR", min_length=1, description="Label printed beside costs.")
    cost_per_label: float = Field(default=1.0, ge=0, description="Cost of labelling one row.")
    costs: CostMatrix = Field(
        default_factory=CostMatrix, description="Cost of each decision outcome, in kpi.currency."
    )
    bootstrap: int = Field(default=1000, ge=0, description="Resamples for 95% cost intervals.")


class ShadowConfig(_Section):
    """``sslops shadow``: how batches are read and when drift is flagged."""

    id_column: str | None = Field(
        default=None,
        description="Row-id column of the batches (matches PREDICTIONS.csv row_id); none = "
        "'<batch file stem>:<row number>'.",
    )
    psi_threshold: float = Field(
        default=0.2, gt=0, description="A feature drifts when its PSI is at least this ..."
    )
    p_value: float = Field(
        default=0.01, gt=0, lt=1,
        description="... and its two-sample test (KS / chi-square) p-value is below this, "
        "divided by the number of features (Bonferroni).",
    )  # fmt: skip
    bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of numeric PSI.")


class Config(_Section):
    """The whole run. ``seed`` fixes every random choice (label draw, init, augmentations)."""

    seed: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Fixes every random choice; 0 to 2**31 - 1 (numpy takes no negative seed, "
        "and stages add small offsets).",
    )
    modality: Literal["tabular", "image", "timeseries"] = Field(
        default="tabular", description="What data.train holds: tables, images or series."
    )
    data: DataConfig = Field(description="Where the raw data is and what its columns mean.")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    kpi: KpiConfig = Field(default_factory=KpiConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)

    @model_validator(mode="after")
    def _job_launchers_need_a_workspace(self) -> Config:
        if self.pretrain.launcher != "local" and not self.platform.storage.workspace_pvc:
            raise ValueError(
                f"pretrain.launcher {self.pretrain.launcher!r} needs "
                "platform.storage.workspace_pvc (a ReadWriteMany PVC that the launcher and "
                "the training pods share)"
            )
        if self.pretrain.launcher == "trainjob" and self.platform.priority_class:
            raise ValueError(
                f"platform.priority_class {self.platform.priority_class!r} cannot reach a "
                "TrainJob's pods (its runtime patches have no priorityClassName): set it on "
                "the training runtime (the chart's trainingRuntime.priorityClassName), or use "
                "pretrain.launcher pytorchjob"
            )
        checkpoints, workspace = self.pretrain.checkpoint_dir, self.platform.storage.workspace_path
        if (
            self.pretrain.launcher != "local"
            and checkpoints
            and not PurePosixPath(checkpoints).is_relative_to(PurePosixPath(workspace))
        ):
            raise ValueError(
                f"pretrain.checkpoint_dir {checkpoints!r} is not on the workspace volume "
                f"({workspace}): a restarted training pod would not find its checkpoints; "
                f"set a folder under {workspace}, or leave it unset (beside the output there)"
            )
        return self

    @model_validator(mode="after")
    def _pretraining_fits_the_modality(self) -> Config:
        """A pretraining setting the config names for another modality: refused here, before
        a run starts, not when pretraining reaches it. An objective left unset is the
        modality's first one, so the resolved config (``sslops config``, every artifact's
        meta.json, the pipeline's config_json) loads again as it was printed."""
        allowed, pc = ALLOWED[self.modality], self.pretrain
        if "objective" not in pc.model_fields_set:
            pc.objective = cast(Objective, allowed["objectives"][0])
        for key, value, kinds in (("objective", pc.objective, "objectives"),
                                  ("backbone", pc.backbone, "backbones")):  # fmt: skip
            named = key in pc.model_fields_set
            if named and value != "auto" and value not in allowed[kinds]:
                raise ValueError(
                    f"pretrain.{key} {value!r} does not apply to modality {self.modality!r}; "
                    f"choose one of {', '.join(allowed[kinds])}"
                )
        return self

    @model_validator(mode="after")
    def _tabular_needs_roles(self) -> Config:
        if self.modality == "tabular":
            if not self.data.sensitive:
                raise ValueError("'data.sensitive' must name at least one column for tabular data")
            if self.data.positive is None:
                raise ValueError("'data.positive' is required for tabular data")
        return self

    @model_validator(mode="after")
    def _array_groups_are_derived_attributes(self) -> Config:
        if self.modality == "tabular":
            if self.data.attributes_file is not None:
                raise ValueError(
                    "data.attributes_file is for images and series; a table's sensitive "
                    "columns are its own: name them in data.sensitive"
                )
            return self._fairness_columns_are_sensitive()
        from sslops.data.attributes import ATTRIBUTES

        if self.finetune.transfer != "linear_probe":
            raise ValueError(
                f"finetune.transfer {self.finetune.transfer!r} needs tabular data (modality is "
                f"{self.modality!r}); images and series use 'linear_probe'"
            )
        if self.data.attributes_file is not None:
            return self._metadata_groups_are_named()
        valid = ATTRIBUTES[self.modality]
        named = [*self.data.sensitive, *(self.finetune.fairness.sensitive or [])]
        unknown = [n for n in named if n not in valid]
        if unknown:
            raise ValueError(
                f"data.sensitive / finetune.fairness.sensitive: {unknown} are not group "
                f"attributes of {self.modality} data; valid names: {', '.join(valid)}"
            )
        return self

    def _metadata_groups_are_named(self) -> Config:
        """Groups from data.attributes_file: data.sensitive names its columns (checked
        against the file by prepare), each stored beside the label and cluster."""
        data = self.data
        if not data.sensitive:
            raise ValueError(
                "data.attributes_file needs data.sensitive: the columns of that file that "
                "hold the groups (e.g. [sex, site])"
            )
        reserved = sorted({data.attributes_key, "label", "cluster"} & set(data.sensitive))
        if reserved:
            raise ValueError(
                f"data.sensitive {reserved} cannot be group columns of data.attributes_file "
                f"(data.attributes_key {data.attributes_key!r} names the items; 'label' and "
                "'cluster' are taken by prepare's output): rename them in the file"
            )
        return self._fairness_columns_are_sensitive()

    def _fairness_columns_are_sensitive(self) -> Config:
        """finetune.fairness.sensitive names data.sensitive columns: refused here, not when
        finetune reaches it after prepare and pretraining (a table's other columns hold no
        groups: an identifier or age has a group per value)."""
        data = self.data
        unknown = [c for c in self.finetune.fairness.sensitive or [] if c not in data.sensitive]
        if unknown:
            raise ValueError(
                f"finetune.fairness.sensitive {unknown} must also be listed in data.sensitive "
                f"({', '.join(data.sensitive)})"
            )
        return self

    @model_validator(mode="after")
    def _pretrain_fairness_columns_are_sensitive(self) -> Config:
        fairness = self.pretrain.fairness
        for column in fairness.sensitive or []:
            if column not in self.data.sensitive:
                raise ValueError(
                    f"pretrain.fairness.sensitive names {column!r}, which is not a sensitive "
                    f"column; available (data.sensitive): {', '.join(self.data.sensitive) or '(none)'}"
                )
        if fairness.method != "none" and self.modality != "tabular":
            raise ValueError(
                f"pretrain.fairness.method {fairness.method!r} needs tabular data "
                f"(modality is {self.modality!r})"
            )
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=VALUE``; VALUE is read as YAML so ``0.1``, ``[sex, race]`` and ``true`` work."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set data.label=income")
    try:
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError:
        # Not YAML (e.g. `>50K`): take the text as typed, the way a shell user means it;
        # the schema still rejects it where another type is expected.
        value = raw.strip()
    path = [part.strip() for part in key.split(".")]
    if not all(path):
        raise ConfigError(f"--set {text!r}: empty key between dots; expected KEY.SUBKEY=VALUE, "
                          "e.g. --set finetune.label_fraction=0.05")  # fmt: skip
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise ConfigError(f"--set {text!r}: {where!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def _section_in(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The section a key holds, and whether through a list or mapping of them:
    ``BoostedStackConfig | None`` -> (BoostedStackConfig, False), ``list[TolerationConfig]``
    -> (TolerationConfig, True)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    inner = [_section_in(a) for a in get_args(annotation)]
    found = next((i for i in inner if i is not None), None)
    container = getattr(annotation, "__origin__", None) in (list, dict)
    return (found[0], container or found[1]) if found else None


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The section at a key path (list indices and mapping keys included), or None."""
    model: type[BaseModel] = Config
    parts = iter(path)
    for part in parts:
        field = model.model_fields.get(str(part))
        section = _section_in(field.annotation) if field else None
        if section is None:
            return None
        model, through_container = section
        if through_container and next(parts, None) is None:
            return None  # the list or mapping itself, not one of its sections
    return model


def _key_elsewhere(name: str, given: str, model: type[BaseModel] | None = None) -> list[str]:
    """The dotted keys named ``name`` anywhere in the schema (other than ``given``)."""
    found = []
    for field, info in (model or Config).model_fields.items():
        if field == name:
            found.append(field)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found += [f"{field}.{k}" for k in _key_elsewhere(name, "", info.annotation)]
    return [k for k in found if k != given]


def _dotted(loc: tuple[Any, ...]) -> str:
    """The key path as a config author writes it: ``finetune.fairness.penalties[2]``."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = _dotted(loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        section = _model_at(loc[:-1])
        allowed = sorted(section.model_fields) if section else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        did_you_mean = f" (did you mean {_dotted((*loc[:-1], hint[0]))!r}?)" if hint else ""
        moved = _key_elsewhere(str(loc[-1]), key)
        if moved and not hint:  # a config of an earlier release, where the key lived there
            did_you_mean = f" (sslops {__version__} has it at {' and '.join(map(repr, moved))})"
        return f"unknown config key {key!r}{did_you_mean}; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return f"config key {key!r} is required but missing"
    value = error.get("input")
    section = _model_at(loc) if kind == "model_type" else None
    if section is not None:  # `prepare:` with every line under it commented out, or a list
        what = "is empty (null)" if value is None else f"is a section, not {value!r}"
        return (f"config key {key!r} {what}; expected a mapping of its keys "
                f"({', '.join(section.model_fields)}), or leave it out for the defaults")  # fmt: skip
    shown = f" (got {value!r})" if not isinstance(value, dict) else ""
    if kind == "list_type" and isinstance(value, str) and value.isprintable():
        if value.startswith("[") and value.endswith("]"):  # a list YAML could not read
            items = json.dumps([v.strip() for v in value[1:-1].split(",") if v.strip()])
            shown += f"; that list is not valid YAML: quote its items, e.g. --set '{key}={items}'"
        elif value.startswith("["):  # an unclosed list
            shown += f"; close the list, e.g. --set '{key}={value.rstrip(',')}]'"
        else:
            shown += f"; write a list, e.g. --set {key}=[{value}] or [a, b] in YAML"
    percent = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value) if isinstance(value, str) else None
    if kind == "float_parsing" and percent:
        shown += f"; write {float(percent[1]) / 100:g} for {percent[1]}%"
    if kind == "literal_error" and isinstance(value, str):
        shown += _closest_choice(value, error.get("ctx", {}).get("expected", ""))
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and (not loc or message.startswith(f"{key}.")):
        return message  # a rule across keys: its message names them
    return f"config key {key!r}: {message}{shown if kind != 'value_error' or value is not None else ''}"


def _closest_choice(value: str, expected: str) -> str:
    """``parket`` -> did you mean 'parquet'; ``BF16`` / ``demographic-parity`` (case, dash)
    -> the spelling the schema takes."""
    choices = re.findall(r"'([^']*)'", expected)
    norm = {c.lower().replace("-", "_"): c for c in choices}
    hint = norm.get(value.strip().lower().replace("-", "_").replace(" ", "_"))
    close = [hint] if hint else difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def validate_config(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        messages = [_describe(e) for e in exc.errors()]  # type: ignore[arg-type]
        raise ConfigError("; ".join(messages)) from None


def read_yaml_file(path: Path, what: str) -> Any:
    """The YAML document in ``path``; one error naming the file (``what``: "config file",
    "values file") and PyYAML's line and column when it is not YAML."""
    text = ""
    try:
        text = Path(path).read_text(encoding="utf-8")
        return read_yaml(text)
    except yaml.reader.ReaderError as exc:  # PyYAML names the character's offset, not its line
        before = text[: exc.position]
        where = f"line {before.count(chr(10)) + 1}, column {len(before.rpartition(chr(10))[2]) + 1}"
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(
            f"{what} {path} is not valid YAML: character U+{code:04X} at {where} is not "
            "allowed (YAML takes printable characters, tab and line breaks; in a double-quoted "
            "value write it as an escape such as \\x1f)"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())  # PyYAML's message spans lines; the CLI prints one
        # PyYAML read a string, so it names the source "<unicode string>"; the file is named above
        reason = reason.replace('in "<unicode string>", ', "at ")
        raise ConfigError(f"{what} {path} is not valid YAML: {reason}{_quote_hint(exc)}") from None


def _quote_hint(exc: Exception) -> str:
    """A value that YAML reads as syntax (``positive: >50K`` opens a folded block): the line
    to write instead."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None or mark.buffer is None:
        return ""
    line = mark.buffer.split("\n")[mark.line] if mark.line < mark.buffer.count("\n") + 1 else ""
    found = re.fullmatch(r"(\s*(?:- )?[\w.-]+:\s+)([>|%@`&*!][^#]*?)\s*", line)
    if not found:
        return ""
    return f"; quote the value: {found[1].strip()} {json.dumps(found[2])}"


SHIPPED_PREFIX = "package:"  # as data.train's: a file in sslops/datasets (data/readers.py)


def config_file(spec: str) -> Path:
    """``package:adult.yaml`` -> a demo config shipped inside sslops; else a filesystem path."""
    if spec.startswith(SHIPPED_PREFIX):
        return Path(str(files("sslops") / "datasets" / spec.removeprefix(SHIPPED_PREFIX)))
    return Path(spec).expanduser()  # as data paths: --config=~/x.yaml reaches us unexpanded


def _shipped_hint(spec: str) -> str:
    """Where a config that is not here ships with sslops: the demo configs outside a checkout."""
    shipped = sorted(p.name for p in config_file(SHIPPED_PREFIX).iterdir() if p.suffix == ".yaml")
    names = ", ".join(SHIPPED_PREFIX + name for name in shipped)
    if spec.startswith(SHIPPED_PREFIX):
        return f"; the configs shipped with sslops are {names}"
    if Path(spec).name in shipped:
        return (f" (the demo configs ship inside sslops: --config {SHIPPED_PREFIX}"
                f"{Path(spec).name}; all of them: {names})")  # fmt: skip
    return ""


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read YAML (or start empty), apply ``--set`` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        given = str(path)
        path = config_file(given)
        if path.is_dir():
            raise ConfigError(f"config file {given} is a folder; expected a YAML file such as "
                              "configs/adult.yaml")  # fmt: skip
        if not path.is_file():
            raise ConfigError(f"config file not found: {given}{_shipped_hint(given)}")
        loaded = read_yaml_file(path, "config file")
        if loaded is not None and not isinstance(loaded, dict):
            got = f"a {type(loaded).__name__}" if isinstance(loaded, list) else repr(loaded)
            raise ConfigError(f"config file {path}: expected a mapping of config keys (seed, "
                              f"data, prepare, ...) at the top level, got {got}")  # fmt: skip
        if not loaded and not overrides:
            raise ConfigError(f"config file {path} is empty; config key 'data' is required but "
                              "missing (at least data.train and data.label)")  # fmt: skip
        raw = loaded or {}
    raw = apply_overrides(raw, overrides or [])
    if path is None and "data" not in raw:
        raise ConfigError(
            "no config given: pass --config FILE (e.g. configs/adult.yaml), or give the data "
            "section with --set (at least data.train=FILE and data.label=COLUMN; tables also "
            "data.positive=LABEL and data.sensitive=[COLUMN])"
        )
    return validate_config(raw)


def config_from_json(text: str) -> Config:
    return validate_config(json.loads(text))
