"""Duplicate removal: deterministic winners, exact and near duplicates, known assets."""

from __future__ import annotations

from capflow_core.dedup import KnownAsset, dedup
from capflow_core.prepare import PreparedItem


def _item(uri: str, asset_id: str, phash: str | None = None) -> PreparedItem:
    return PreparedItem(asset_id, uri, "image", 800, 600, phash=phash)


def test_exact_duplicate_loses_to_the_earliest_seen_then_smallest_uri():
    items = [_item("s3://b/z.jpg", "x"), _item("s3://b/a.jpg", "x"), _item("s3://b/m.jpg", "x")]
    first_seen = {"s3://b/z.jpg": "r1", "s3://b/a.jpg": "r2", "s3://b/m.jpg": "r2"}
    kept, lost = dedup(items, first_seen=first_seen, known=[], distance=4)
    assert [i.source_uri for i in kept] == ["s3://b/z.jpg"]
    assert [(r.source_uri, r.reason_code) for r in lost] == [
        ("s3://b/a.jpg", "duplicate"),
        ("s3://b/m.jpg", "duplicate"),
    ]
    assert all("s3://b/z.jpg" in r.detail for r in lost)


def test_near_duplicates_by_hamming_distance():
    base = "ffff0000ffff0000"
    four_off = "ffff0000ffff000f"  # 4 bits differ
    five_off = "ffff0000ffff001f"  # 5 bits differ
    items = [
        _item("b.jpg", "1", four_off),
        _item("a.jpg", "2", base),
        _item("c.jpg", "3", five_off),
    ]
    kept, lost = dedup(items, first_seen={}, known=[], distance=4)
    assert [i.source_uri for i in kept] == ["a.jpg", "c.jpg"]
    assert [(r.source_uri, r.reason_code) for r in lost] == [("b.jpg", "near_duplicate")]
    assert "a.jpg" in lost[0].detail and lost[0].asset_id == "1"


def test_known_assets_win_but_not_against_their_own_uri():
    known = [KnownAsset("old", "k.jpg", "0000000000000000"), KnownAsset("v1", "same.jpg", None)]
    items = [
        _item("a.jpg", "old"),
        _item("n.jpg", "9", "0000000000000001"),
        _item("same.jpg", "v1"),
    ]
    kept, lost = dedup(items, first_seen={}, known=known, distance=4)
    assert [i.source_uri for i in kept] == ["same.jpg"]
    assert {r.source_uri: r.reason_code for r in lost} == {
        "a.jpg": "duplicate",
        "n.jpg": "near_duplicate",
    }
