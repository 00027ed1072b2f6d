"""The shape of a node's data: a `Dataset` of float32 inputs and int64 labels, a
`LazyDataset` whose inputs are converted only for the rows a node selects (node.core.data
builds both), and the `Table` facts a tabular dataset carries (node.core.data.tables).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

__all__ = ["Dataset", "LazyDataset", "Rows", "Table", "TensorRows"]


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no truth value to compare with
class Dataset:
    """A classification task: float32 inputs (N, *in_shape) and int64 labels in 0..num_classes-1."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    in_shape: tuple[int, ...]
    name: str


@dataclass(frozen=True, eq=False)
class Table:
    """What makes a dataset a table: its feature names, and for a public table the per-feature
    mean and std (float32) of the whole published table, constants that a private run may use
    (None for a user's file, whose statistics are not public)."""

    columns: tuple[str, ...]
    public_scale: tuple[np.ndarray, np.ndarray] | None = None
    # A user's whole --dataset file's mean and std: they stand for constants published with
    # the data's schema only when the run says so (standardise = public; node.core.data.tables).
    file_scale: tuple[np.ndarray, np.ndarray] | None = None


class Rows(Protocol):
    """One split's inputs, converted to float32 tensors only for the rows asked for."""

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """The given rows (ascending and distinct), in that order."""
        ...

    def head(self, count: int) -> torch.Tensor:
        """The first `count` rows (all of them when there are fewer)."""
        ...


class TensorRows:
    """Inputs already in memory as one float32 tensor."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows: np.ndarray) -> torch.Tensor:
        return self.x[torch.from_numpy(rows)]

    def head(self, count: int) -> torch.Tensor:
        # The tensor itself, or a view of it: every node's test split shares the one tensor.
        return self.x if count >= len(self.x) else self.x[:count]


class LazyDataset(Dataset):
    """A Dataset whose labels are in memory and whose inputs are converted to float32 only
    where needed: `select` converts a node's train rows and the test rows it evaluates on;
    reading `x_train`/`x_test` converts the whole split (once, on first use)."""

    train: Rows
    test: Rows
    table: Table | None  # set for tabular data: shards are standardised (node.core.data.tables)
    _heads: dict[int, torch.Tensor]  # the first test rows by count, converted once

    def __init__(self, train: Rows, y_train: torch.Tensor, test: Rows, y_test: torch.Tensor, *,
                 num_classes: int, in_shape: tuple[int, ...], name: str,
                 table: Table | None = None) -> None:
        # Dataset is frozen; this subclass sets its own fields once, here.
        fields = {"train": train, "y_train": y_train, "test": test, "y_test": y_test,
                  "num_classes": num_classes, "in_shape": in_shape, "name": name,
                  "table": table, "_heads": {}}
        for key, value in fields.items():
            object.__setattr__(self, key, value)

    @classmethod
    def of(cls, data: Dataset) -> LazyDataset:
        """`data` itself if it is lazy, else a view of its tensors (nothing is copied)."""
        if isinstance(data, LazyDataset):
            return data
        return cls(TensorRows(data.x_train), data.y_train, TensorRows(data.x_test), data.y_test,
                   num_classes=data.num_classes, in_shape=data.in_shape, name=data.name)

    @functools.cached_property
    def x_train(self) -> torch.Tensor:
        return self.train.head(len(self.train))

    @functools.cached_property
    def x_test(self) -> torch.Tensor:
        return self.test.head(len(self.test))

    def select(self, train_rows: np.ndarray, test_count: int | None) -> Dataset:
        """These train rows (ascending, distinct) and the first `test_count` test rows (None:
        all). The test rows are converted once and shared by every node selected here."""
        if test_count is None or test_count >= len(self.test):
            x_test, y_test = self.x_test, self.y_test
        else:
            if test_count not in self._heads:
                self._heads[test_count] = self.test.head(test_count)
            x_test, y_test = self._heads[test_count], self.y_test[:test_count]
        rows = torch.from_numpy(train_rows)
        return Dataset(self.train.take(train_rows), self.y_train[rows], x_test, y_test,
                       self.num_classes, self.in_shape, self.name)

    def __repr__(self) -> str:  # the dataclass repr would convert every input to show it
        return (f"LazyDataset({self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"in_shape={self.in_shape}, num_classes={self.num_classes})")
