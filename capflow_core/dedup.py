"""Exact (same sha256) and near (phash Hamming distance) duplicate removal.

Candidates are visited in winner order: earliest ``first_seen_run``, then smallest source
URI. Known assets (already ``active`` in the ``assets`` table) are committed winners: a
candidate matching one loses to it. Each loser becomes a :class:`Rejection` naming its
winner (``duplicate`` or ``near_duplicate``). Near-duplicates are compared between images
only (a video carries no phash).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capflow_core.prepare import PreparedItem, Rejection


@dataclass(frozen=True)
class KnownAsset:
    """An asset already in the dataset: the winner of any later duplicate."""

    asset_id: str
    source_uri: str
    phash: str | None = None


class _Winners:
    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}
        self.hashes: list[int] = []
        self.hash_uris: list[str] = []
        self._array = np.zeros(0, dtype=np.uint64)

    def add(self, asset_id: str, uri: str, phash: str | None) -> None:
        self.by_id.setdefault(asset_id, uri)
        if phash:
            self.hashes.append(int(phash, 16))
            self.hash_uris.append(uri)

    def nearest(self, phash: str) -> tuple[int, str] | None:
        if not self.hashes:
            return None
        if len(self._array) != len(self.hashes):
            self._array = np.array(self.hashes, dtype=np.uint64)
        dist = np.bitwise_count(self._array ^ np.uint64(int(phash, 16)))
        best = int(np.argmin(dist))
        return int(dist[best]), self.hash_uris[best]


def dedup(
    items: list[PreparedItem],
    *,
    first_seen: dict[str, str],
    known: list[KnownAsset],
    distance: int,
) -> tuple[list[PreparedItem], list[Rejection]]:
    """Split prepared items into winners and duplicate rejections.

    Args:
        items: this shard's prepared items.
        first_seen: ``first_seen_run`` by source URI (a missing URI sorts last).
        known: active assets of earlier shards and runs (same-URI rows are skipped: a
            changed object is not a duplicate of its own old version).
        distance: the largest phash Hamming distance that counts as a near-duplicate.

    Returns:
        ``(kept, rejections)``; ``kept`` keeps the input order.
    """
    winners = _Winners()
    uris = {i.source_uri for i in items}
    for k in known:
        if k.source_uri not in uris:
            winners.add(k.asset_id, k.source_uri, k.phash)
    order = sorted(items, key=lambda i: (first_seen.get(i.source_uri, "\uffff"), i.source_uri))
    lost: dict[str, Rejection] = {}
    for item in order:
        if (winner := winners.by_id.get(item.asset_id)) is not None:
            lost[item.source_uri] = _loser(item, "duplicate", f"same bytes as {winner}")
            continue
        if item.phash and (near := winners.nearest(item.phash)) and near[0] <= distance:
            detail = f"phash within {near[0]} bits of {near[1]}"
            lost[item.source_uri] = _loser(item, "near_duplicate", detail)
            continue
        winners.add(item.asset_id, item.source_uri, item.phash)
    kept = [i for i in items if i.source_uri not in lost]
    return kept, [lost[i.source_uri] for i in items if i.source_uri in lost]


def _loser(item: PreparedItem, code: str, detail: str) -> Rejection:
    return Rejection(item.source_uri, code, f"{item.source_uri}: {detail}", item.asset_id, "dedup")
