"""The one identity-split rule: an identity's split from a hash of (seed, identity) alone.

The hash, read as a fraction in [0, 1), is cut at the cumulative fractions. It depends on nothing else (not on the
order or number of identities, nor on how many clips each has), so any lab gets the same split for the same person,
and a dataset that grows (new clips, new people) never moves an existing identity to another split. The price: the
fractions hold approximately, per identity and not per sample (a person with many clips weighs as much as one with
few, and with few identities the shares scatter like coin tosses).

The dataset adapters write `split_of(identity)` into every sample (samples.parquet's `split` column);
`posetalk-data manifest split` applies the same function, so with its default seed and fractions it gives exactly
that column.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

SPLIT_SEED = "posetalk-split-v1"
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def check_fractions(fractions: Sequence[tuple[str, float]]) -> None:
    """One non-negative fraction per named split, some positive, names distinct (ValueError otherwise)."""
    names = [name for name, _ in fractions]
    if not fractions or len(set(names)) != len(names):
        raise ValueError(f"splits {names}: give at least one, each name once")
    if min(f for _, f in fractions) < 0 or sum(f for _, f in fractions) <= 0:
        raise ValueError(f"fractions {[f for _, f in fractions]} must be non-negative and not all zero")


def split_of(identity: str, seed: str | int = SPLIT_SEED,
             fractions: Sequence[tuple[str, float]] = SPLIT_FRACTIONS) -> str:
    """The split of an identity: (name, fraction) pairs, fractions relative to their sum."""
    digest = hashlib.sha256(f"{seed}\0{identity}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2 ** 64
    total = sum(fraction for _, fraction in fractions)
    edge = 0.0
    for name, fraction in fractions:
        edge += fraction / total
        if u < edge:
            return name
    return [name for name, fraction in fractions if fraction > 0][-1]   # u just under 1, past a rounded-down sum
