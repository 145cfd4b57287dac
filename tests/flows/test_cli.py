"""The `capflow` command line, run as a user would (subprocesses, the real tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from tests.flows.cli_runner import closed_port, run, write_config


def test_help_explains_commands():
    out = run("--help")
    assert out.returncode == 0
    for command in ("caption", "doctor", "tiny-model", "demo"):
        assert command in out.stdout


def test_caption_writes_one_record_per_input(tmp_path: Path, tiny_cfg: Path):
    good = tmp_path / "a.png"
    Image.new("RGB", (120, 90), (200, 40, 40)).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    out_file = tmp_path / "out.jsonl"
    res = run("caption", str(good), str(bad), "--config", str(tiny_cfg), "--out", str(out_file))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["source_uri"] for r in rows] == [str(good), str(bad)]
    assert rows[0]["caption"] and rows[0]["judge"]["scores"] and rows[0]["caption_id"]
    assert rows[1]["errors"]["load"].startswith(("corrupt", "truncated", "unsupported_format"))
    assert "captioning" in res.stderr  # the progress bar


def test_caption_single_mode_with_domain_to_stdout(tmp_path: Path, tiny_cfg: Path):
    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64), "white").save(img)
    res = run(
        "caption", str(img), "--config", str(tiny_cfg), "--mode", "single", "--domain", "natural"
    )
    assert res.returncode == 0, res.stderr
    (row,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert row["mode"] == "single" and row["domain"] == "natural" and row["agents"] == []


def test_bad_config_and_bad_domain_exit_2_with_the_fix(tmp_path: Path, tiny_cfg: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: {vlm: {backend: vllm}}\n")
    res = run("caption", "x.png", "--config", str(bad))
    assert res.returncode == 2 and "models.vlm" in res.stderr and "'openai'" in res.stderr
    res = run("caption", "x.png", "--config", str(tiny_cfg), "--domain", "pets")
    assert res.returncode == 2 and "known domains" in res.stderr


def test_unreachable_endpoint_fails_before_work_and_doctor_says_so(tmp_path: Path):
    spec = {
        "backend": "openai",
        "model": "m",
        "timeout_s": 2,
        "max_retries": 0,
        "endpoints": [
            {"url": f"http://127.0.0.1:{closed_port()}/v1", "structured_outputs": "none"}
        ],
    }
    cfg = write_config(tmp_path, {"vlm": spec, "llm": spec, "judge": spec})
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(img)
    res = run("caption", str(img), "--config", str(cfg))
    assert res.returncode == 2 and "models.vlm" in res.stderr and "reachable" in res.stderr
    doc = run("doctor", "--config", str(cfg))
    assert doc.returncode == 1 and "FAIL" in doc.stdout and "vllm serve" in doc.stdout


def test_doctor_passes_on_the_tiny_config(tiny_cfg: Path):
    res = run("doctor", "--config", str(tiny_cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "tesseract" in res.stdout and "models.vlm" in res.stdout


def test_tiny_model_command_is_deterministic(tmp_path: Path):
    a = run("tiny-model", str(tmp_path / "a"))
    b = run("tiny-model", str(tmp_path / "b"))
    assert a.returncode == b.returncode == 0
    assert a.stdout.split("revision")[1] == b.stdout.split("revision")[1]


def test_missing_model_folder_is_a_config_error_with_the_fix(tmp_path: Path):
    spec = {"backend": "transformers", "model": str(tmp_path / "nowhere"), "device": "cpu"}
    cfg = write_config(tmp_path, {"vlm": spec, "llm": spec, "judge": spec})
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(img)
    res = run("caption", str(img), "--config", str(cfg))
    assert res.returncode == 2 and "capflow tiny-model" in res.stderr and "nowhere" in res.stderr
    assert not res.stdout  # no half-made records
