"""Embedded model preparation: real GGUF -> safetensors conversion, idempotent, verified, interrupt-safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.store import models
from cluster.store.models import (
    MANIFEST_NAME,
    ModelPreparationError,
    is_prepared,
    model_dir,
    prepare_model,
    resolve_model,
)

SLM = "smollm2-135m-instruct"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    return tmp_path


@pytest.fixture()
def prepared(cache: Path) -> Path:
    steps: list[str] = []
    folder = prepare_model(SLM, steps.append)
    assert steps[-1] == "done" and "converting to safetensors" in steps
    return folder


def test_prepared_folder_is_a_loadable_model_with_a_manifest(prepared: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    assert AutoConfig.from_pretrained(prepared).model_type == "llama"
    tokenizer = AutoTokenizer.from_pretrained(prepared)
    assert tokenizer.chat_template, "vLLM needs a chat template to serve chat completions"
    manifest = json.loads((prepared / MANIFEST_NAME).read_text())
    assert "model.safetensors" in manifest["files"]
    assert "quantization_config" not in json.loads((prepared / "config.json").read_text())
    assert resolve_model(f"embedded:{SLM}") == str(prepared)


def test_second_prepare_is_a_verified_no_op(prepared: Path) -> None:
    before = (prepared / "model.safetensors").stat().st_mtime_ns
    steps: list[str] = []
    prepare_model(SLM, steps.append)
    assert steps == ["already prepared"]
    assert (prepared / "model.safetensors").stat().st_mtime_ns == before


def test_corrupted_file_is_detected_and_repaired(prepared: Path) -> None:
    with (prepared / "config.json").open("a") as stream:
        stream.write(" ")
    assert not is_prepared(SLM)
    prepare_model(SLM)
    assert is_prepared(SLM)


def test_interrupted_run_leaves_nothing_that_is_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare_model(SLM)
    assert not model_dir(SLM).exists()
    assert list((cache / "models").iterdir()) == []
    with pytest.raises(ModelPreparationError, match="cascade models prepare"):
        resolve_model(f"embedded:{SLM}")


def test_checksum_mismatch_is_refused(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF but not the one we ship")
    spec = models.EMBEDDED_MODELS[SLM]
    monkeypatch.setitem(models.EMBEDDED_MODELS, SLM, models.EmbeddedModel(
        spec.name, spec.package, spec.gguf_sha256, lambda: fake))
    with pytest.raises(ModelPreparationError, match="expected"):
        prepare_model(SLM)


def test_unknown_embedded_model_names_the_known_ones() -> None:
    with pytest.raises(ModelPreparationError, match=SLM):
        resolve_model("embedded:llama-9000")


def test_plain_model_ids_and_paths_pass_through() -> None:
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
