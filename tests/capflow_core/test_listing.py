"""Streamed listing of local folders and S3 prefixes (a real moto S3 server)."""

from __future__ import annotations

import uuid

import pytest

from capflow_core import listing
from capflow_core.config import S3Config, SourceConfig
from capflow_core.listing import list_source, modality_of, read_object_metadata

ODD_KEYS = [
    "a/b/one.jpg",
    "a/b2/two.jpg",
    "a/b/with space.png",
    "a/b/ünïcödé 画像.jpeg",
    "a/b/" + "l" * 200 + ".jpg",
    "a/b/clip.mp4",
    "a/b/notes.txt",
    "a/b/noext",
]


def s3_prefix(env: dict[str, str], keys: list[str], metadata: dict[str, dict] | None = None) -> str:
    """Upload ``keys`` (small bytes) under a fresh prefix of the test bucket; its URI."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]})
    prefix = f"capflow-test/{uuid.uuid4().hex[:8]}"
    for key in keys:
        extra = {"Metadata": metadata[key]} if metadata and key in metadata else {}
        fs.pipe_file(f"{prefix}/{key}", key.encode(), **extra)
    return f"s3://{prefix}"


def local_tree(root, keys: list[str]) -> str:
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(key.encode())
    return str(root)


def test_modality_from_extension():
    assert [modality_of(k) for k in ("x/A.JPG", "v.MOV", "n.txt", "dir.jpg/noext")] == [
        "image",
        "video",
        "unknown",
        "unknown",
    ]


@pytest.fixture(params=["local", "s3"])
def source_uri(request, tmp_path):
    if request.param == "local":
        return local_tree(tmp_path / "src", ODD_KEYS)
    return s3_prefix(request.getfixturevalue("moto_s3"), ODD_KEYS)


def test_odd_keys_all_listed_unknown_extensions_kept(source_uri):
    got = {e.key: e for e in list_source(SourceConfig(uri=source_uri), S3Config())}
    assert sorted(got) == sorted(ODD_KEYS)
    assert got["a/b/notes.txt"].modality == got["a/b/noext"].modality == "unknown"
    assert got["a/b/clip.mp4"].modality == "video"
    entry = got["a/b/with space.png"]
    assert entry.source_uri == source_uri + "/a/b/with space.png"
    assert entry.size == len(b"a/b/with space.png") and entry.etag and entry.mtime > 0


def test_globs_match_relative_keys_and_lookalike_prefixes(source_uri):
    src = SourceConfig(uri=source_uri, include=["a/b/*"], exclude=["*.png"], modality="image")
    keys = sorted(e.key for e in list_source(src, S3Config()))
    # a/b2/ is not under a/b/; the video is filtered; unknown extensions still pass
    assert keys == sorted(
        [
            "a/b/one.jpg",
            "a/b/ünïcödé 画像.jpeg",
            "a/b/" + "l" * 200 + ".jpg",
            "a/b/notes.txt",
            "a/b/noext",
        ]
    )


def test_lookalike_source_prefix_is_not_mixed(moto_s3):
    base = s3_prefix(moto_s3, ["a/b/x.jpg", "a/b2/y.jpg"])
    keys = [e.source_uri for e in list_source(SourceConfig(uri=base + "/a/b"), S3Config())]
    assert keys == [base + "/a/b/x.jpg"]


def test_s3_listing_is_paged(moto_s3, monkeypatch):
    keys = [f"k/{i:03d}.jpg" for i in range(25)]
    uri = s3_prefix(moto_s3, keys)
    monkeypatch.setattr(listing, "PAGE_SIZE", 10)
    stream = list_source(SourceConfig(uri=uri), S3Config())
    assert [e.key for e in stream] == keys


def test_license_from_config_wins_else_object_metadata(moto_s3):
    meta = {"m.jpg": {"license": "cc-by-4.0", "provenance": "museum scan"}}
    uri = s3_prefix(moto_s3, ["m.jpg", "plain.jpg"], meta)
    listed = list(list_source(SourceConfig(uri=uri), S3Config()))
    assert {e.license for e in listed} == {None}  # listing pages carry no user metadata
    by_key = {e.key: e for e in read_object_metadata(listed, S3Config())}
    assert (by_key["m.jpg"].license, by_key["m.jpg"].provenance) == ("cc-by-4.0", "museum scan")
    assert by_key["plain.jpg"].license is None
    configured = SourceConfig(uri=uri, license="cc0", provenance="crawl 2026")
    enriched = read_object_metadata(list(list_source(configured, S3Config())), S3Config())
    assert {(e.license, e.provenance) for e in enriched} == {("cc0", "crawl 2026")}
