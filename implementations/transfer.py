"""Transfer sets: rows without labels on which the distilled student learns the teacher's outputs,
beside the training rows (``TransferSpec``). Plain numpy, drawn from the job's seed on streams of
their own, so both frameworks get the very same rows.

Bucila, Caruana & Niculescu-Mizil (2006, "Model Compression") showed that a small network recovers
most of a large ensemble's quality when the ensemble labels a large transfer set, and that how the
rows are made matters; MUNGE is their generator.

Rows live in the prepared feature space: numeric columns standardised, each categorical column a
one-hot group (``Data.onehot_groups``). MUNGE and the Gaussian generator treat a group as one
attribute and keep it one-hot; mixup mixes groups like every column (a soft category).

A generated set has ``round(size * n)`` rows, built on the training rows in passes: each pass takes
every training row once, in an order drawn from the seed; the last pass may be partial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distillbench.implementations.spec import TransferSpec

_GENERATED = 3000  # the seed's streams: generated rows, and the rows that keep their labels
_LABELLED = 3001


@dataclass(frozen=True)
class TransferSet:
    """The distilled student's rows without labels and the teacher's targets on them (through the
    compressor), with the seconds spent making the rows and labelling them."""

    kind: str
    x: np.ndarray  # float32 (n, features)
    targets: np.ndarray  # the compressor's output on the teacher's outputs for x
    generate_seconds: float
    label_seconds: float


def generate(spec: TransferSpec, x: np.ndarray, onehot_groups, seed: int) -> np.ndarray:
    """The rows of a munge, mixup or gaussian transfer set made from the training rows ``x``:
    float32, ``round(spec.size * len(x))`` rows."""
    rng = np.random.default_rng([seed, _GENERATED])
    base = base_rows(len(x), round(spec.size * len(x)), rng)
    if not len(base):
        out = x[:0]
    elif spec.kind == "munge":
        out = munge(x, onehot_groups, base, spec.p, spec.s, rng)
    elif spec.kind == "mixup":
        out = mixup(x, base, spec.mixup_alpha, rng)
    elif spec.kind == "gaussian":
        out = gaussian(x, onehot_groups, base, spec.noise_sd, rng)
    else:
        raise ValueError(f"transfer kind {spec.kind!r} generates no rows")
    return np.ascontiguousarray(out, dtype=np.float32)


def base_rows(n_rows: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """The training row each generated row starts from: passes over all rows, each in a random order."""
    passes = -(-n_out // n_rows) if n_rows else 0
    return np.concatenate([rng.permutation(n_rows) for _ in range(passes)] or [np.zeros(0, np.int64)])[:n_out]


def attributes(n_columns: int, onehot_groups) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the attribute it belongs to (a one-hot group is one attribute, every other column
    one of its own), and whether it is continuous (not in a group)."""
    attribute, continuous = np.full(n_columns, -1), np.ones(n_columns, dtype=bool)
    for k, columns in enumerate(onehot_groups):
        attribute[columns], continuous[columns] = k, False
    attribute[continuous] = len(onehot_groups) + np.arange(continuous.sum())
    return attribute, continuous


# Up to this many columns a k-d tree finds the neighbours fastest (scipy's: 2-3x scikit-learn's; fried,
# 24,460 rows x 10: 1.27 -> 0.61 s), beyond it brute force does (splice, 1,914 x 283: 0.33 -> 0.06 s);
# scikit-learn's own "auto" rule draws the line at the same place.
KD_TREE_MAX_COLUMNS = 15
# Brute force compares blocks of this many rows with blocks of this many candidates: a block of
# distances (4 MB) small enough to stay in cache, large enough for one matrix product to do the work.
BLOCK_ROWS, BLOCK_CANDIDATES = 256, 2048


def nearest_neighbours(x: np.ndarray) -> np.ndarray:
    """Per row, the index of its nearest other row (Euclidean distance, in float64); itself when it is
    alone. Among rows at the same distance, which is chosen depends on the search
    (``KD_TREE_MAX_COLUMNS``)."""
    if len(x) < 2:
        return np.arange(len(x))
    rows = x.astype(np.float64)
    if x.shape[1] > KD_TREE_MAX_COLUMNS:
        return brute_force_neighbours(rows)
    from scipy.spatial import cKDTree

    tree = cKDTree(rows)
    # Queried in the tree's own order, one query's nodes are still in cache for the next (fried: -10%).
    found = np.empty((len(rows), 2), dtype=np.int64)
    found[tree.indices] = tree.query(rows[tree.indices], k=2)[1]
    # A row's first neighbour is itself unless a duplicate of it came first: then that duplicate.
    return np.where(found[:, 0] == np.arange(len(x)), found[:, 1], found[:, 0])


def brute_force_neighbours(rows: np.ndarray) -> np.ndarray:
    """``nearest_neighbours`` by comparing every pair, a block of pairs at a time: ``|b|^2 - 2 a.b``
    ranks the candidates ``b`` of a row ``a`` as the distance does (``|a|^2`` is the same for all), and
    a row is no candidate of its own. Against scikit-learn's brute force (which also computes in
    float64), on one thread: as fast where the matrix products are most of the work (pol, 9,000 x 48:
    0.31 s), faster where they are not (letter, 12,000 x 16: 0.36 -> 0.24 s; elevators 0.26 -> 0.18 s)."""
    norms = np.einsum("ij,ij->i", rows, rows)
    nearest = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = rows[start : start + BLOCK_ROWS]
        own, best = np.arange(start, start + len(block)), np.full(len(block), np.inf)
        for first in range(0, len(rows), BLOCK_CANDIDATES):
            score = block @ rows[first : first + BLOCK_CANDIDATES].T
            score *= -2.0
            score += norms[first : first + BLOCK_CANDIDATES]
            mine = (own >= first) & (own < first + score.shape[1])
            score[mine.nonzero()[0], own[mine] - first] = np.inf
            column = score.argmin(axis=1)
            value = score[np.arange(len(block)), column]
            closer = value < best
            best[closer], nearest[start + closer.nonzero()[0]] = value[closer], first + column[closer]
    return nearest


def munge(x: np.ndarray, onehot_groups, base: np.ndarray, p: float, s: float, rng: np.random.Generator) -> np.ndarray:
    """MUNGE (Bucila et al. 2006): each row ``a = x[base[i]]`` with its nearest neighbour ``b``;
    each attribute with probability ``p`` takes ``b``'s value: a continuous one drawn from a normal
    centred on ``b``'s value with sd ``|a - b| / s``, a one-hot group ``b``'s category. (The paper
    changes the neighbour too, symmetrically; here every row is the ``a`` of one draw per pass.)"""
    attribute, continuous = attributes(x.shape[1], onehot_groups)
    a = x[base].astype(np.float64)
    b = x[nearest_neighbours(x)[base]].astype(np.float64)
    swap = (rng.random((len(base), len(onehot_groups) + continuous.sum())) < p)[:, attribute]
    drawn = np.where(continuous, rng.normal(b, np.abs(a - b) / s), b)
    return np.where(swap, drawn, a)


def mixup(x: np.ndarray, base: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """``lam * x[base[i]] + (1 - lam) * x[j]`` with ``j`` a uniformly random row and ``lam ~
    Beta(alpha, alpha)``: a point of the segment between the two rows."""
    partner = rng.integers(0, len(x), size=len(base))
    lam = rng.beta(alpha, alpha, size=(len(base), 1))
    return lam * x[base].astype(np.float64) + (1.0 - lam) * x[partner].astype(np.float64)


def gaussian(x: np.ndarray, onehot_groups, base: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """``x[base[i]]`` plus normal noise of sd ``sd`` on every column (numeric columns are standardised,
    so ``sd`` is in units of each one's spread); each one-hot group is then snapped back to the
    nearest one-hot vector, the one at its largest value: with small noise a row keeps its category,
    with large noise it gets a uniformly random one."""
    out = x[base].astype(np.float64) + rng.normal(0.0, sd, size=(len(base), x.shape[1]))
    for columns in onehot_groups:
        out[:, columns] = np.arange(len(columns)) == out[:, columns].argmax(axis=1)[:, None]
    return out


def labelled_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """The ``unlabeled`` kind: which training rows keep their label (a boolean mask): the first
    ``round(fraction * n)`` of a permutation drawn from the seed, at least one."""
    keep = np.zeros(n_rows, dtype=bool)
    keep[np.random.default_rng([seed, _LABELLED]).permutation(n_rows)[: max(1, round(fraction * n_rows))]] = True
    return keep
