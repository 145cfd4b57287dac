"""`capflow ingest` as a user runs it: a subprocess against moto S3 with AWS env vars."""

from __future__ import annotations

import uuid

import yaml

from tests.capflow_core.test_listing import s3_prefix
from tests.flows.cli_runner import ROOT, run


def test_ingest_command_on_s3(moto_s3, tmp_path):
    src = s3_prefix(moto_s3, ["a.jpg", "b/c d.png", "v.mp4"])
    root = f"s3://capflow-test/roots/{uuid.uuid4().hex[:8]}"
    data = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    data |= {"storage": {"root": root}, "sources": [{"uri": src, "modality": "image"}]}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))

    dry = run("ingest", "--config", str(cfg), "--dry-run", env=moto_s3)
    assert dry.returncode == 0, dry.stderr
    assert "new 2, changed 0, unchanged 0, removed 0" in dry.stdout
    assert "nothing written" in dry.stdout

    first = run("ingest", "--config", str(cfg), "--run-id", "r1", env=moto_s3)
    assert first.returncode == 0, first.stderr
    assert "new 2, changed 0, unchanged 0, removed 0" in first.stdout
    assert f"-> {root}/staging/r1/manifests" in first.stdout
    assert moto_s3["AWS_SECRET_ACCESS_KEY"] not in first.stdout + first.stderr

    again = run("ingest", "--config", str(cfg), "--source", src, "--run-id", "r2", env=moto_s3)
    assert "new 1, changed 0, unchanged 2, removed 0" in again.stdout  # modality any: v.mp4
    assert "nothing new" not in again.stdout


def test_ingest_without_sources_or_with_a_bad_one_is_a_config_error(tmp_path):
    data = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data | {"storage": {"root": str(tmp_path / "root")}}))
    none = run("ingest", "--config", str(cfg))
    assert none.returncode == 2 and "no sources" in none.stderr
    bad = run("ingest", "--config", str(cfg), "--source", "gs://bucket/x")
    assert bad.returncode == 2 and "sources.0.uri" in bad.stderr
    missing = run("ingest", "--config", str(cfg), "--source", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    assert not (tmp_path / "root").exists()
