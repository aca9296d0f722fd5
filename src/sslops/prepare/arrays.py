"""Prepare images and time series: canonical arrays, duplicates, clusters, splits, data card.

The artifact holds, per split, ``{split}.npy`` (images: uint8 (N, H, W, C); series:
float32 (N, L)) and ``{split}.parquet`` (one row per array row: ``label`` and the
near-duplicate ``cluster``), plus ``schema.json`` (modality, shape, classes) and the
data card. The split rules are the tabular ones: exact copies dropped, training
copies of test items dropped, every near-duplicate cluster on one side. Items of data.train
without a label form the ``unlabeled`` split (``prepare.unlabeled: pretrain``), which
pretraining reads after the training items, as for tables.
"""

from __future__ import annotations

import hashlib
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sslops.artifacts import write_artifact, write_json
from sslops.config import Config
from sslops.data.canonicalize import label_hits
from sslops.data.datacard import FEW_CLASS_ROWS
from sslops.data.dedup import clusters_from_pairs, first_occurrences, mix
from sslops.data.group_metadata import (
    ItemNames,
    file_items,
    folder_items,
    join_group_metadata,
    read_group_metadata,
)
from sslops.data.images import (
    IMAGE_SUFFIXES,
    canonical_images,
    check_pixel_csv_label,
    near_duplicate_images,
    other_files,
    perceptual_hash,
    read_image_folder,
    read_npz,
    read_pixel_csv,
)
from sslops.data.readers import local_path, resolve_path
from sslops.data.series import canonical_series, near_duplicate_series, read_ts
from sslops.data.split import (
    SPLIT_NAMES,
    cluster_key_hashes,
    evaluate_predicate,
    predicate_columns,
    require_ood_rows,
    split_by_uniform,
    split_key,
    uniform_of,
)
from sslops.errors import ConfigError, DataError
from sslops.prepare.dataset import SCHEMA, UNLABELED
from sslops.prepare.stage import _check_sensitive_groups

MODALITY = {"pixel_csv": "image", "npz": "image", "image_folder": "image", "ts": "timeseries"}


def _path(cfg: Config, spec: str, key: str) -> Path:
    if cfg.data.format == "image_folder":
        path = local_path(spec)
        if not path.is_dir():
            raise DataError(f"{key}: folder not found: {spec}")
        return Path(path)
    return resolve_path(spec, key)


def check_array_inputs(cfg: Config) -> None:
    expected = MODALITY[cfg.data.format]
    if cfg.modality != expected:
        raise DataError(
            f"data.format {cfg.data.format!r} reads {expected} data but modality is "
            f"{cfg.modality!r}; set modality: {expected}"
        )
    _check_label(cfg, _path(cfg, cfg.data.train, "data.train"), "data.train")
    if cfg.data.test:
        _check_label(cfg, _path(cfg, cfg.data.test, "data.test"), "data.test")
    _group_table(cfg)
    other = _ood_record_columns(cfg)
    if other and cfg.data.attributes_file is None:
        raise DataError(
            f"prepare.ood: column {other[0]!r} is not a column of {cfg.modality} data; the "
            f"predicate can name 'label' (or data.label {cfg.data.label!r}), and columns of "
            "data.attributes_file when one is given"
        )


def _ood_record_columns(cfg: Config) -> list[str]:
    """The columns prepare.ood names other than the label: columns of data.attributes_file
    (hold out a site or a scanner)."""
    if not cfg.prepare.ood:
        return []
    label = {"label", cfg.data.label}
    return [c for c in predicate_columns(cfg.prepare.ood) if c not in label]


def _group_table(cfg: Config) -> pd.DataFrame | None:
    """The columns of data.attributes_file that data.sensitive and prepare.ood name, by
    item key (None: there is no such file, groups are computed)."""
    data = cfg.data
    if data.attributes_file is None:
        return None
    needed = {"data.sensitive": data.sensitive, "prepare.ood": _ood_record_columns(cfg)}
    return read_group_metadata(data.attributes_file, data.attributes_key, needed, data.na_values)


TS_LABEL = "class"


def _check_label(cfg: Config, path: Path, key: str) -> None:
    """data.label must name the label: 'class' in a .ts file; a header column of a pixel CSV."""
    label, fmt = cfg.data.label, cfg.data.format
    if fmt == "ts" and label != TS_LABEL:
        raise DataError(
            f"data.label: column {label!r} not found in {key} ({path}); a .ts file has one "
            f"label per series, named {TS_LABEL!r}"
        )
    if fmt == "pixel_csv":
        check_pixel_csv_label(path, label, key)


def _read(cfg: Config, spec: str, key: str) -> tuple[Any, np.ndarray, ItemNames]:
    """The items of one file or folder, their labels, and the keys data.attributes_file
    names them by."""
    path = _path(cfg, spec, key)
    fmt = cfg.data.format
    if fmt == "image_folder":
        images, labels, files = read_image_folder(path, key)
        return images, labels, folder_items(files)
    items: Any
    if fmt == "pixel_csv":
        items, labels = read_pixel_csv(path, cfg.data.label, key)
    elif fmt == "npz":
        items, labels = read_npz(path, key)
    else:
        items, labels = read_ts(path, key)
    return items, labels, file_items(path, len(labels))


def _item_hashes(values: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(values).reshape(len(values), -1)
    return np.array(
        [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
         for row in flat],
        dtype=np.uint64,
    )  # fmt: skip


def _canonical(cfg: Config, raw: list[Any]) -> tuple[np.ndarray, dict[str, Any]]:
    if cfg.modality == "image":
        size = tuple(cfg.prepare.image_size) if cfg.prepare.image_size else None
        items: list[Any] = [image for part in raw for image in part]
        return canonical_images(
            np.stack(items) if isinstance(raw[0], np.ndarray) else items,
            size,  # type: ignore[arg-type]
            cfg.prepare.image_channels,
        )
    series = [s for part in raw for s in part]
    return canonical_series(series, cfg.prepare.series_length, cfg.prepare.series_length_policy)


def _listed(counts: Counter[str], limit: int = 5) -> str:
    """``'38x34' (40), '28x28' (25)``: the most common ``limit`` values and how many more."""
    shown = ", ".join(f"{value} ({n:,})" for value, n in counts.most_common(limit))
    more = len(counts) - min(limit, len(counts))
    return shown + (f" and {more:,} more" if more else "")


def _left_out_notes(cfg: Config, specs: list[tuple[str, str, str]]) -> list[str]:
    """Files in an image folder that are no image sslops reads (a few DICOM scans among the
    PNGs, notes): left out of the data, which is said rather than done without a word."""
    if cfg.data.format != "image_folder":
        return []
    notes = []
    for _, key, spec in specs:
        found = other_files(_path(cfg, spec, key))
        if found:
            notes.append(
                f"{key}: {sum(found.values()):,} files are no image sslops reads and were left "
                f"out ({_listed(found)}); it reads "
                f"{', '.join(IMAGE_SUFFIXES)}"
                + ("; DICOM (.dcm): export the scans as 8-bit PNG first" if ".dcm" in found else "")
            )
    return notes


def _canonical_notes(cfg: Config, raw: list[Any], report: dict[str, Any]) -> list[str]:
    """What canonicalization changed, in words: images converted to another number of
    channels or resized (stretched when their aspect ratio differs), series resampled, padded
    or cropped to one length, missing values filled in. The counts alone sat in the data card,
    so an RGB scan read as grey, or a 300-step series halved to 150, passed without a word."""
    items = [item for part in raw for item in part]
    total = len(items)
    notes = []
    if cfg.modality == "image":
        channels = cfg.prepare.image_channels
        if report["channels_converted"]:
            kinds = Counter(
                item.mode if hasattr(item, "mode") else f"{item.shape[-1]} channel(s)"
                for item in items
            )
            target = "one grey channel" if channels == 1 else "three (RGB) channels"
            advice = (
                "; colour is dropped: set prepare.image_channels=3 to keep it"
                if channels == 1
                else ""
            )
            notes.append(
                f"{report['channels_converted']:,} of {total:,} images converted to {target} "
                f"(prepare.image_channels: {channels}; images found: {_listed(kinds)}){advice}"
            )
        if report["resized"]:
            shapes = [
                (item.height, item.width) if hasattr(item, "height") else item.shape[:2]
                for item in items
            ]
            height, width = cfg.prepare.image_size or [int(shapes[0][0]), int(shapes[0][1])]
            source = "prepare.image_size" if cfg.prepare.image_size else "the first image's size"
            stretched = sum(h * width != w * height for h, w in shapes)
            notes.append(
                f"{report['resized']:,} of {total:,} images resized to {height}x{width} "
                f"({source}; sizes found, height x width: "
                f"{_listed(Counter(f'{h}x{w}' for h, w in shapes))})"
                + (
                    f"; {stretched:,} of them stretched to another aspect ratio"
                    if stretched
                    else ""
                )
            )
        return notes
    target = report["target_length"]
    changed = {"resampled": "resampled", "padded": "edge-padded", "cropped": "cropped at the end"}
    done = [f"{report[k]:,} {word}" for k, word in changed.items() if report[k]]
    if done:
        lengths = Counter(str(len(item)) for item in items)
        source = "prepare.series_length" if cfg.prepare.series_length else "the most common length"
        notes.append(
            f"{sum(report[k] for k in changed):,} of {total:,} series are not {target} long "
            f"({source}) and were brought to it ({', '.join(done)}; "
            f"prepare.series_length_policy: {cfg.prepare.series_length_policy}); lengths "
            f"found: {_listed(lengths)}"
        )
    if report["interpolated"]:
        notes.append(
            f"{report['interpolated']:,} of {total:,} series have missing values ('?'), filled "
            "in by linear interpolation between the known values (at either end: the nearest "
            "known value)"
        )
    return notes


def _few_class_items(
    label: np.ndarray, split: np.ndarray, names: list[str], classes: list[str]
) -> dict[str, dict[str, int]]:
    """Per split (not ood), the classes with fewer than FEW_CLASS_ROWS items, 0 included: a
    hashed split is not stratified, so a rare class can be missing from validation or test."""
    few = {}
    for name in names:
        if name == "ood":
            continue
        counts = Counter(label[split == name])
        small = {c: int(counts[c]) for c in classes if counts[c] < FEW_CLASS_ROWS}
        if small:
            few[name] = small
    return few


def _require_train_classes(
    cfg: Config, label: np.ndarray, split: np.ndarray, few: dict[str, dict[str, int]]
) -> None:
    """A class that ``prepare.ood`` took whole out of train, or a train split left with one
    class, is refused: no model can learn the class, and fine-tuning on one class fails later,
    after pretraining. (A rare class missing from a split by the hash's chance, with others
    left to learn, stays a note: the model is not measured on it.)"""
    missing = [c for c, n in few.get("train", {}).items() if n == 0]
    held = {c: Counter(split[(label == c) & (split != "")]) for c in missing}
    took = [c for c in missing if held[c].get("ood")]
    if not took and len(set(label[split == "train"])) > 1:
        return
    where = [f"{c!r} ({', '.join(f'{n:,} in {s}' for s, n in held[c].items())})" for c in missing]
    cause = (
        f"; prepare.ood {cfg.prepare.ood!r} took "
        + ("them" if len(missing) > 1 else "it")
        + " into the out-of-distribution split, which measures a shift in the inputs, not an "
        "unseen class"
        if cfg.prepare.ood and all(held[c].get("ood") for c in missing)
        else ""
    )
    raise DataError(
        f"no item of class {', '.join(where)} is in the train split, so no model can learn "
        f"it{cause}; expected every class in train: an OOD predicate on something other "
        "than the class alone, or more labeled items of the class"
    )


def _few_class_note(few: dict[str, dict[str, int]]) -> str | None:
    if not few:
        return None
    missing: dict[str, list[str]] = {}
    for name, counts in few.items():
        for c, n in counts.items():
            if n == 0:
                missing.setdefault(c, []).append(name)
    lead = (
        "no items of "
        + "; ".join(f"class {c!r} in {', '.join(splits)}" for c, splits in missing.items())
        + ": the model is not measured on that class there at all; "
        if missing
        else ""
    )
    held = "; ".join(
        f"{name}: " + ", ".join(f"{c!r} {n:,}" for c, n in counts.items())
        for name, counts in few.items()
    )
    return (
        f"{lead}few items of a class in a split ({held}); the metrics and fairness gaps "
        "measured there (on validation: the model selection) rest on those items; more "
        "labeled items or a larger prepare.validation_fraction / prepare.test_fraction give "
        "the split more"
    )


def _near_pairs(cfg: Config, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    near = cfg.prepare.near_duplicates
    if cfg.modality == "timeseries":
        return near_duplicate_series(values, near.series_max_distance)
    a, b = near_duplicate_images(perceptual_hash(values), near.image_max_hamming)
    flat = values.reshape(len(values), -1).astype(np.float32)
    u, v = flat[a] - flat[a].mean(1, keepdims=True), flat[b] - flat[b].mean(1, keepdims=True)
    norm = np.sqrt((u * u).sum(1) * (v * v).sum(1))
    corr = np.where(norm > 0, (u * v).sum(1) / np.where(norm > 0, norm, 1), 1.0)
    keep = corr >= near.image_min_correlation
    return a[keep], b[keep]


def prepare_arrays(cfg: Config, out_dir: Path) -> Path:
    specs = [("train", "data.train", cfg.data.train)]
    if cfg.data.test:
        specs.append(("test", "data.test", cfg.data.test))
    raw, labels, source, item_names = [], [], [], []
    for name, key, spec in specs:
        items, item_labels, item_keys = _read(cfg, spec, key)
        raw.append(items)
        labels.append(item_labels)
        source.append(np.full(len(item_labels), name))
        item_names.append(item_keys)
    values, report = _canonical(cfg, raw)
    notes = [*_left_out_notes(cfg, specs), *_canonical_notes(cfg, raw, report)]
    label = np.array([" ".join(unicodedata.normalize("NFKC", str(v)).split()) for v in
                      np.concatenate(labels)], dtype=object)  # fmt: skip
    origin = np.concatenate(source)
    records, group_notes = _metadata_groups(cfg, item_names, label != "")
    notes += group_notes
    groups = None if records is None else records[cfg.data.sensitive]
    content = _item_hashes(values)

    alive = label != ""
    exact = {}
    for name in dict.fromkeys(origin):
        member = alive & (origin == name)
        first = np.zeros(len(origin), dtype=bool)
        first[member] = first_occurrences(content[member])
        exact[str(name)] = int(member.sum() - first[member].sum())
        alive &= first | ~member
    copies = {"exact": 0, "near": 0}
    if cfg.data.test:
        copy = alive & (origin == "train") & np.isin(content, content[alive & (origin == "test")])
        copies["exact"], alive = int(copy.sum()), alive & ~copy
    index = np.flatnonzero(alive)
    cluster = np.arange(len(origin), dtype=np.int64)
    near: dict[str, Any] = {"enabled": cfg.prepare.near_duplicates.enabled}
    if cfg.prepare.near_duplicates.enabled and len(index) > 1:
        a, b = _near_pairs(cfg, values[index])
        labels_ = clusters_from_pairs(len(index), a, b)
        cluster[index] = labels_ + len(origin)
        sizes = np.bincount(labels_)
        near |= {"pairs": len(a), "clusters": int((sizes > 1).sum()),
                 "rows_in_clusters": int(sizes[sizes > 1].sum()),
                 "largest_cluster": int(sizes.max())}  # fmt: skip
    if cfg.data.test:
        drop = (alive & (origin == "train")
                & np.isin(cluster, cluster[alive & (origin == "test")]))  # fmt: skip
        copies["near"], alive = int(drop.sum()), alive & ~drop

    keys = mix(content ^ np.uint64(split_key(cfg.seed)))
    uniform = uniform_of(cluster_key_hashes(keys, cluster))
    test_fraction = 0.0 if cfg.data.test else cfg.prepare.test_fraction
    chosen = split_by_uniform(uniform, cfg.prepare.validation_fraction, test_fraction)
    split = np.where(origin == "test", "test", chosen).astype(object)
    if cfg.prepare.ood:
        frame = pd.DataFrame({"label": label, cfg.data.label: label})
        if records is not None:
            frame[list(records.columns)] = records
        hit = evaluate_predicate(cfg.prepare.ood, frame)
        require_ood_rows(cfg.prepare.ood, frame[alive], hit[alive],
                         cfg.prepare.min_category_count)  # fmt: skip
        split[np.isin(cluster, np.unique(cluster[alive & hit]))] = "ood"
    split[~alive] = ""
    names = [*SPLIT_NAMES, *(["ood"] if cfg.prepare.ood else [])]
    for name in names:
        if name != "ood" and not (split == name).any():
            raise DataError(f"the {name} split is empty; provide more data or adjust prepare.*")
    if groups is not None:
        _check_sensitive_groups(
            groups[split == "train"], cfg.data.sensitive, groups[split == "ood"], cfg.prepare.ood
        )
    unlabeled, near_scored = _unlabeled_items(cfg, label, origin, content, values, split)
    split[unlabeled] = UNLABELED
    written = [*names, *([UNLABELED] if unlabeled.any() else [])]

    classes = _ordered_classes(cfg, sorted(set(label[alive])))
    few = _few_class_items(label, split, names, classes)
    _require_train_classes(cfg, label, split, few)
    notes += [note for note in [_few_class_note(few)] if note]
    card = {
        "modality": cfg.modality,
        "raw_rows": {str(k): int(v) for k, v in pd.Series(origin).value_counts().items()},
        "rows_without_label_dropped": int((label == "").sum() - unlabeled.sum()),
        "rows_without_label_kept": int(unlabeled.sum()),
        "unlabeled_rows_dropped_as_near_copies_of_scored_rows": near_scored,
        "exact_duplicates_dropped": exact,
        "train_rows_dropped_as_copies_of_test_rows": copies,
        "near_duplicates": near,
        "canonicalization": report,
        "shape": list(values.shape[1:]),
        "splits": {n: {"rows": int((split == n).sum())} for n in written},
        "label_balance": {
            n: {str(k): int(v) for k, v in pd.Series(label[split == n]).value_counts().items()}
            for n in names
        },
        "few_class_items": few,  # per class (tables: "few_class_rows", two classes)
        **({} if groups is None else {"groups": _group_counts(groups, split, names)}),
        "edge_cases": _edge_cases(cfg, values[alive]),
        "notes": notes,
        "pii_findings_redacted": "not applicable: no text fields",
    }
    schema = {"modality": cfg.modality, "label": cfg.data.label, "classes": classes,
              "shape": list(values.shape[1:]), "splits": written,
              "dtype": str(values.dtype), **positive_class(cfg, classes),
              **({} if groups is None else {"group_columns": list(groups.columns)})}  # fmt: skip
    sources = {key: _path(cfg, spec, key) for _, key, spec in specs}
    if cfg.data.attributes_file is not None:
        sources["data.attributes_file"] = resolve_path(
            cfg.data.attributes_file, "data.attributes_file"
        )
    sources = {k: v for k, v in sources.items() if v.is_file()}
    with write_artifact(out_dir, "prepare", cfg.model_dump(mode="json"), sources=sources) as tmp:
        for name in written:
            mask = split == name
            np.save(tmp / f"{name}.npy", values[mask])
            frame = pd.DataFrame({"label": pd.array(np.where(label[mask] == "", None,
                                                             label[mask]), dtype="string"),
                                  "cluster": cluster[mask]})  # fmt: skip
            if groups is not None:  # the groups of data.attributes_file, by data.sensitive
                frame[list(groups.columns)] = groups[mask].reset_index(drop=True)
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(tmp / SCHEMA, schema)
        write_json(tmp / "datacard.json", card)
        (tmp / "datacard.md").write_text(_markdown(card), encoding="utf-8")
        _figure(cfg, values[split == "train"][:32], tmp / "datacard_samples.png")
    for note in notes:  # console lines, as tabular prepare prints its notes
        print(f"note: {note}", file=sys.stderr, flush=True)
    return out_dir


def _metadata_groups(
    cfg: Config, keys: list[ItemNames], labeled: np.ndarray
) -> tuple[pd.DataFrame | None, list[str]]:
    """Each item's groups from data.attributes_file (None without one), and notes."""
    table = _group_table(cfg)
    if table is None:
        return None, []
    names = [k.names for k in keys]
    items = ItemNames(
        [key for k in keys for key in k.keys],
        None if None in names else [n for part in names for n in part or []],
    )
    return join_group_metadata(
        table, items, labeled, str(cfg.data.attributes_file), cfg.data.attributes_key
    )


def _group_counts(groups: pd.DataFrame, split: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Per group column and split, how many items each group holds ('(missing)': no value)."""
    filled = groups.fillna("(missing)")
    return {
        column: {
            name: {str(k): int(v) for k, v in filled[column][split == name].value_counts().items()}
            for name in names
        }
        for column in groups.columns
    }


def _ordered_classes(cfg: Config, classes: list[str]) -> list[str]:
    """The label values in class-index order: sorted as text, except that with two classes
    ``data.positive`` (when set) is put at index 1, the class that equal opportunity, the
    two-class ROC AUC and the selection rate take as positive. With more classes every gap
    is taken over all classes one-vs-rest, so a positive class has no meaning and is refused."""
    positive = cfg.data.positive
    if positive is None:
        return classes
    if len(classes) != 2:
        raise ConfigError(
            f"data.positive {positive!r} names a positive class, but the labels of this "
            f"{cfg.modality} data have {len(classes)} classes ({', '.join(classes[:10])}); "
            "data.positive applies to two classes only (with more, every fairness gap, equal "
            "opportunity included, is the largest over all classes one-vs-rest): remove it"
        )
    column = pd.Series(classes, dtype="string")
    numbers = pd.to_numeric(column, errors="coerce")
    hit = label_hits(numbers if numbers.notna().all() else column, positive).to_numpy()
    if hit.sum() != 1:
        raise ConfigError(
            f"data.positive {positive!r} must name exactly one of the two classes of "
            f"data.label {cfg.data.label!r}: {classes[0]!r} or {classes[1]!r}"
        )
    return [classes[int(np.argmin(hit))], classes[int(np.argmax(hit))]]


def positive_class(cfg: Config, classes: list[str]) -> dict[str, Any]:
    """``schema.json``'s record of which class is positive (two classes only)."""
    if len(classes) != 2:
        return {}
    source = (
        "data.positive"
        if cfg.data.positive is not None
        else "default: the second class in sorted label order; set data.positive to choose"
    )
    return {"positive_class": classes[1], "positive_class_source": source}


def _unlabeled_items(
    cfg: Config, label: np.ndarray, origin: np.ndarray, content: np.ndarray, values: np.ndarray,
    split: np.ndarray,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """Items of data.train without a label that pretraining may read (``prepare.unlabeled:
    pretrain``): not a copy of a labeled item (any file) or of an earlier unlabeled item, and
    not a near-copy of a validation, test or ood item (the encoder would see what models are
    scored on). Returns their mask and how many near-copies were dropped."""
    has_label = label != ""
    if cfg.prepare.unlabeled != "pretrain" or has_label.all():
        return np.zeros(len(label), dtype=bool), 0
    candidate = ~has_label & (origin == "train")
    first = np.zeros(len(label), dtype=bool)
    first[candidate] = first_occurrences(content[candidate])
    kept = first & ~np.isin(content, content[has_label])
    scored = np.isin(split, ["validation", "test", "ood"])
    if not (cfg.prepare.near_duplicates.enabled and scored.any() and kept.any()):
        return kept, 0
    index = np.concatenate([np.flatnonzero(scored), np.flatnonzero(kept)])
    is_scored = scored[index]
    a, b = _near_pairs(cfg, values[index])
    near = np.zeros(len(label), dtype=bool)
    near[index[b[is_scored[a] & ~is_scored[b]]]] = True
    near[index[a[is_scored[b] & ~is_scored[a]]]] = True
    return kept & ~near, int(near.sum())


def _edge_cases(cfg: Config, values: np.ndarray) -> dict[str, Any]:
    flat = values.reshape(len(values), -1).astype(np.float64)
    constant = int((flat.max(1) == flat.min(1)).sum())
    if cfg.modality == "image":
        return {"constant_images": constant, "mean_pixel": round(float(flat.mean()), 2)}
    return {"constant_series": constant, "min": float(flat.min()), "max": float(flat.max())}


def _markdown(card: dict[str, Any]) -> str:
    lines = ["# Data card", "", f"- Modality: {card['modality']}, item shape {card['shape']}"]
    lines.append(f"- Raw items: {card['raw_rows']}")
    lines.append(f"- Exact duplicates dropped: {card['exact_duplicates_dropped']}")
    lines.append(f"- Training items dropped as copies of test items: "
                 f"{card['train_rows_dropped_as_copies_of_test_rows']}")  # fmt: skip
    lines.append(f"- Items without a label: {card['rows_without_label_kept']:,} kept for "
                 f"pretraining, {card['rows_without_label_dropped']:,} dropped (of which "
                 f"{card['unlabeled_rows_dropped_as_near_copies_of_scored_rows']:,} near-copies "
                 "of scored items)")  # fmt: skip
    lines.append(f"- Near-duplicates: {card['near_duplicates']}")
    lines.append(f"- Canonicalization: {card['canonicalization']}")
    lines.append(f"- Edge cases: {card['edge_cases']}")
    for column, splits in card.get("groups", {}).items():
        lines.append(f"- Groups of {column} (data.attributes_file): " + "; ".join(
            f"{name} " + ", ".join(f"{g} {n:,}" for g, n in counts.items())
            for name, counts in splits.items()))  # fmt: skip
    lines += [f"- Note: {note}" for note in card["notes"]]
    lines += ["", "## Splits", "", "| split | rows | labels |", "|---|---:|---|"]
    for name, info in card["splits"].items():
        labels = card["label_balance"].get(name, {})  # the unlabeled split has none
        balance = ", ".join(f"{k}: {v}" for k, v in sorted(labels.items()))
        lines.append(f"| {name} | {info['rows']:,} | {balance} |")
    lines += ["", "![training samples](datacard_samples.png)"]
    return "\n".join(lines) + "\n"


def _figure(cfg: Config, values: np.ndarray, path: Path) -> None:
    from sslops.plots import default_style, save, subplots

    with default_style():  # the figures' bytes depend on the data only
        if cfg.modality == "image":
            fig, axes = subplots(4, 8, figsize=(8, 4.2), dpi=100)
            for ax, i in zip(axes.ravel(), range(32), strict=True):
                ax.axis("off")
                if i < len(values):
                    image = values[i]
                    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        else:
            fig, ax = subplots(figsize=(7, 3.2), dpi=100)
            for series in values[:10]:
                ax.plot(series, linewidth=0.8)
            ax.set(xlabel="time step", title="Training series (first 10)")
        fig.tight_layout()
        save(fig, path)
