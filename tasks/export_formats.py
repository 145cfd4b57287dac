"""Writers of the three export formats: LLaVA/InternVL JSON, Hugging Face parquet, WebDataset.

Each writer takes :class:`ExportItem` s one at a time (media bytes in hand, nothing kept
but small counters) and, on :meth:`close`, returns the data files it wrote, relative to its
folder. Every format carries the same flat metadata (license, provenance, ids, scores,
dataset version).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capflow_core.training_examples import instruction_for

FORMATS = ("llava", "parquet", "webdataset")

# parquet columns besides the media; judge_scores is a JSON object (criteria differ by modality)
_COLUMNS = {
    name: kind
    for kind, names in (
        ("string", "id asset_id caption_id caption domain modality license provenance"),
        ("string", "source_uri judge_scores judge_rule fingerprint run_id created_at"),
        ("bool", "accepted"),
        ("int32", "width height source_width source_height num_frames"),
        ("float64", "duration_s"),
        ("int64", "dataset_version"),
    )
    for name in names.split()
}


@dataclass
class ExportItem:
    """One exported sample: its key (the asset id), media file and flat metadata."""

    key: str
    modality: str
    media: bytes
    caption: str
    meta: dict[str, Any]

    @property
    def ext(self) -> str:
        return "mp4" if self.modality == "video" else "jpg"

    @property
    def media_path(self) -> str:
        folder = "videos" if self.modality == "video" else "images"
        return f"{folder}/{self.key}.{self.ext}"


def _write_media(folder: Path, item: ExportItem) -> None:
    path = folder / item.media_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(item.media)


class LlavaWriter:
    """``data.json``: a JSON list of conversation records; media under images/ and videos/."""

    def __init__(self, folder: Path, shard_size: int) -> None:
        self.folder = folder
        self._file = (folder / "data.json").open("w", encoding="utf-8")
        self._file.write("[")
        self._count = self.media_files = 0

    def add(self, item: ExportItem) -> None:
        _write_media(self.folder, item)
        self.media_files += 1
        token = "<video>" if item.modality == "video" else "<image>"
        human = f"{token}\n{instruction_for(item.key, item.modality)}"
        record = {
            "id": item.key,
            item.modality if item.modality == "video" else "image": item.media_path,
            "conversations": [
                {"from": "human", "value": human},
                {"from": "gpt", "value": item.caption},
            ],
            **{k: v for k, v in item.meta.items() if k != "id"},
        }
        self._file.write(
            ("," if self._count else "") + "\n" + json.dumps(record, ensure_ascii=False)
        )
        self._count += 1

    def close(self) -> list[str]:
        self._file.write("\n]\n")
        self._file.close()
        return ["data.json"]


class ParquetWriter:
    """``data/train-NNNNN-of-MMMMM.parquet`` with an HF ``Image`` column; videos as files."""

    _BATCH = 32  # rows buffered before a row group is written (media bytes are large)

    def __init__(self, folder: Path, shard_size: int) -> None:
        import pyarrow as pa

        self.folder, self.shard_size = folder, shard_size
        (folder / "data").mkdir()
        fields = [pa.field(n, pa.type_for_alias(t)) for n, t in _COLUMNS.items()]
        image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        fields += [pa.field("image", image), pa.field("video", pa.string())]
        features = {n: {"dtype": t, "_type": "Value"} for n, t in _COLUMNS.items()}
        features |= {"image": {"_type": "Image"}, "video": {"dtype": "string", "_type": "Value"}}
        meta = {"huggingface": json.dumps({"info": {"features": features}})}
        self.schema = pa.schema(fields, metadata=meta)
        self._writer: Any = None
        self._rows: list[dict[str, Any]] = []
        self._parts: list[Path] = []
        self._in_part = self.media_files = 0

    def add(self, item: ExportItem) -> None:
        row = {n: item.meta.get(n) for n in _COLUMNS}
        row["caption"], row["judge_scores"] = item.caption, json.dumps(item.meta["judge_scores"])
        if item.modality == "video":
            _write_media(self.folder, item)
            self.media_files += 1
            row |= {"image": None, "video": item.media_path}
        else:
            row |= {"image": {"bytes": item.media, "path": f"{item.key}.jpg"}, "video": None}
        if self._in_part == self.shard_size:
            self._flush(close=True)
        self._rows.append(row)
        self._in_part += 1
        if len(self._rows) >= self._BATCH:
            self._flush()

    def _flush(self, close: bool = False) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._rows:
            if self._writer is None:
                self._parts.append(self.folder / f"data/part-{len(self._parts):05d}.parquet")
                self._writer = pq.ParquetWriter(self._parts[-1], self.schema)
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []
        if close and self._writer is not None:
            self._writer.close()
            self._writer, self._in_part = None, 0

    def close(self) -> list[str]:
        self._flush(close=True)
        if not self._parts:  # an empty export still loads: one file with the schema
            import pyarrow.parquet as pq

            self._parts.append(self.folder / "data/part-00000.parquet")
            pq.write_table(self.schema.empty_table(), self._parts[0])
        names = []
        for i, part in enumerate(self._parts):
            name = f"data/train-{i:05d}-of-{len(self._parts):05d}.parquet"
            part.rename(self.folder / name)
            names.append(name)
        return names


class WebDatasetWriter:
    """``shard-NNNNNN.tar``: ``<key>.jpg|.mp4``, ``<key>.txt`` (caption), ``<key>.json``.

    Members are written in key order within a sample (media, txt, json), as WebDataset
    readers group consecutive members by key.
    """

    def __init__(self, folder: Path, shard_size: int) -> None:
        self.folder, self.shard_size = folder, shard_size
        self._tar: tarfile.TarFile | None = None
        self._names: list[str] = []
        self._in_shard = self.media_files = 0

    def add(self, item: ExportItem) -> None:
        if self._tar is None or self._in_shard == self.shard_size:
            self._close_shard()
            self._names.append(f"shard-{len(self._names):06d}.tar")
            self._tar = tarfile.open(self.folder / self._names[-1], "w")  # noqa: SIM115
        meta = json.dumps(item.meta, ensure_ascii=False, sort_keys=True).encode()
        for suffix, data in (
            (item.ext, item.media),
            ("txt", item.caption.encode()),
            ("json", meta),
        ):
            info = tarfile.TarInfo(f"{item.key}.{suffix}")
            info.size, info.mode = len(data), 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._in_shard += 1
        self.media_files += 1

    def _close_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        self._tar, self._in_shard = None, 0

    def close(self) -> list[str]:
        self._close_shard()
        return list(self._names)


WRITERS = {"llava": LlavaWriter, "parquet": ParquetWriter, "webdataset": WebDatasetWriter}
