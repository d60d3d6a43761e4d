"""Core data containers.

Shape alphabet used across the package: ``U`` users (rows), ``V`` items, ``N`` interactions,
``L`` history length, ``M`` recommendations per user.

- :class:`Interactions` is a raw log with *external* ids, as a reader returns it.
- :class:`Sequences` is a ragged array of *internal* item indices (CSR layout), one row per user.
- :class:`Split` is what a protocol produces: training sequences plus held-out users' histories,
  ground truth and items to exclude from their rankings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """A log of user–item interactions with external ids, in file order.

    Attributes:
        users: ``(N,)`` external user ids (int64 or str).
        items: ``(N,)`` external item ids (int64 or str).
        ratings: ``(N,)`` float32 explicit ratings, or ``None`` for implicit data.
        timestamps: ``(N,)`` int64 unix seconds, or ``None`` when the source has no time.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        for name in ("items", "ratings", "timestamps"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"Interactions.{name} has {len(arr)} rows, users has {n}")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(np.unique(self.users))

    @property
    def n_items(self) -> int:
        return len(np.unique(self.items))

    def take(self, mask_or_index: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or an index array."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[mask_or_index]

        return Interactions(
            self.users[mask_or_index],
            self.items[mask_or_index],
            pick(self.ratings),
            pick(self.timestamps),
        )


@dataclass(frozen=True)
class FixedSplit:
    """Given train/test (and optionally validation) files, as in the LightGCN-style splits."""

    train: Interactions
    test: Interactions
    valid: Interactions | None = None


@dataclass(frozen=True)
class Sequences:
    """Ragged rows of internal item indices in CSR layout.

    Row ``u`` is ``items[indptr[u]:indptr[u + 1]]``. When ``ordered`` is true the items of a row
    are in time order (oldest first); otherwise a row is an unordered set (fixed splits without
    timestamps), and models should not read meaning into the order.

    Attributes:
        indptr: ``(U + 1,)`` int64 row offsets, ``indptr[0] == 0``.
        items: ``(nnz,)`` int64 internal item indices.
        ordered: whether rows are time-ordered.
    """

    indptr: np.ndarray
    items: np.ndarray
    ordered: bool = True

    def __post_init__(self) -> None:
        if self.indptr.ndim != 1 or len(self.indptr) == 0 or self.indptr[0] != 0:
            raise ValueError("Sequences.indptr must be 1-D and start at 0")
        if self.indptr[-1] != len(self.items):
            raise ValueError(
                f"Sequences.indptr ends at {self.indptr[-1]} but there are {len(self.items)} items"
            )

    @classmethod
    def from_lists(
        cls, rows: Sequence[Sequence[int] | np.ndarray], ordered: bool = True
    ) -> Sequences:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        items = (
            np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
            if len(rows) and indptr[-1]
            else np.zeros(0, dtype=np.int64)
        )
        return cls(indptr, items, ordered)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, u: int) -> np.ndarray:
        return self.items[self.indptr[u] : self.indptr[u + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """``(U,)`` number of items in each row."""
        return np.diff(self.indptr)

    @property
    def n_interactions(self) -> int:
        return int(self.indptr[-1])

    def rows(self, index: np.ndarray) -> Sequences:
        """A new :class:`Sequences` made of the given rows, in the given order."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        indptr = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        starts = np.repeat(self.indptr[:-1][index] - indptr[:-1], lengths)
        items = self.items[np.arange(indptr[-1]) + starts]
        return Sequences(indptr, items, self.ordered)

    def last(self, n: int) -> Sequences:
        """Each row cut to its last ``n`` items (the most recent ones when ordered)."""
        lengths = np.minimum(self.lengths, n)
        indptr = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        starts = np.repeat(self.indptr[1:] - lengths - indptr[:-1], lengths)
        items = self.items[np.arange(indptr[-1]) + starts]
        return Sequences(indptr, items, self.ordered)

    def row_ids(self) -> np.ndarray:
        """``(nnz,)`` the row of each stored item."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def to_csr(self, n_items: int):
        """Binary user×item ``scipy.sparse.csr_matrix`` (duplicates counted once), float32."""
        import scipy.sparse as sp

        m = sp.csr_matrix(
            (np.ones(len(self.items), dtype=np.float32), self.items, self.indptr.copy()),
            shape=(len(self), n_items),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def padded(self, length: int, pad: int = -1) -> np.ndarray:
        """``(U, length)`` int64 matrix of each row's last ``length`` items, right-aligned, ``pad``
        on the left."""
        cut = self.last(length)
        out = np.full((len(cut), length), pad, dtype=np.int64)
        lengths = cut.lengths
        cols = np.arange(cut.n_interactions) - np.repeat(cut.indptr[:-1], lengths)
        cols += np.repeat(length - lengths, lengths)
        out[cut.row_ids(), cols] = cut.items
        return out


@dataclass(frozen=True)
class Split:
    """The output of a protocol: everything a benchmark needs, with internal ids.

    Attributes:
        protocol: ``"paper"`` or ``"fixed-split"``.
        item_ids: ``(V,)`` external id of each internal item index.
        train: one row per training user (time-ordered under the paper protocol).
        train_user_ids: ``(U_train,)`` external ids of the training rows.
        test_user_ids: ``(U_test,)`` external ids of the held-out users.
        test_history: ``(U_test rows)`` model input for each held-out user.
        test_truth: ``(U_test rows)`` ground-truth items of each held-out user (non-empty).
        test_exclude: items removed from each held-out user's ranking, or ``None``.
        valid_*: the same for validation users (empty when the protocol has none).
        n_interactions: interactions in the data set after filtering (train + held-out).
    """

    protocol: str
    item_ids: np.ndarray
    train: Sequences
    train_user_ids: np.ndarray
    test_user_ids: np.ndarray
    test_history: Sequences
    test_truth: Sequences
    test_exclude: Sequences | None
    valid_user_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    valid_history: Sequences | None = None
    valid_truth: Sequences | None = None
    valid_exclude: Sequences | None = None
    n_interactions: int = 0

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        """Distinct users across training and held-out sets."""
        return len(
            np.unique(
                np.concatenate([self.train_user_ids, self.test_user_ids, self.valid_user_ids])
            )
        )

    def fingerprint(self) -> str:
        """A short SHA-256 of what the split is: its protocol, item ids, training rows and
        held-out users. Two splits of one log agree exactly when they hold the same data the
        same way (another file version, filter or ``protocol.seed`` changes it)."""
        h = hashlib.sha256(self.protocol.encode())
        for arr in (self.item_ids, self.test_user_ids, self.valid_user_ids):
            h.update("\x1f".join(map(str, arr.tolist())).encode())
            h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.train.indptr, np.int64).tobytes())
        h.update(np.ascontiguousarray(self.train.items, np.int64).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, int]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": int(self.n_interactions),
            "n_train_users": len(self.train),
            "n_test_users": len(self.test_truth),
        }
