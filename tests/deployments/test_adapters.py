"""LoRA adapter sources and residency: real PEFT adapters of the embedded SLM, no Ray and no engine."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cluster.config import LoraSettings, TierConfig
from deployments.adapters import (
    AdapterError,
    ResidentAdapters,
    UnknownAdapterError,
    fetch_adapter,
    prepare_adapter,
    validate_adapter,
)
from deployments.vllm_engine import engine_cli_args

SLM = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="module")
def base_dir(prepared_slm: Path) -> Path:
    return prepared_slm


@pytest.fixture(scope="module")
def hidden_size(base_dir: Path) -> int:
    return json.loads((base_dir / "config.json").read_text())["hidden_size"]


def _save_adapter(model: object, folder: Path, peft_config: object) -> Path:
    from peft import get_peft_model

    get_peft_model(model, peft_config).save_pretrained(folder)
    return folder


def _lora(rank: int) -> object:
    from peft import LoraConfig

    return LoraConfig(r=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)


@pytest.fixture(scope="module")
def adapters(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Rank 8 and 16 adapters of the SLM, a LoRA of a narrower model, and an IA3 (not LoRA) adapter."""
    from peft import IA3Config
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    narrow = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256)
    return {
        "rank8": _save_adapter(AutoModelForCausalLM.from_pretrained(base_dir), root / "rank8", _lora(8)),
        "rank16": _save_adapter(AutoModelForCausalLM.from_pretrained(base_dir), root / "rank16", _lora(16)),
        "narrow": _save_adapter(LlamaForCausalLM(narrow), root / "narrow", _lora(8)),
        "ia3": _save_adapter(LlamaForCausalLM(narrow), root / "ia3",
                             IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"])),
    }


def _settings(tmp_path: Path, **adapters: str) -> LoraSettings:
    return LoraSettings(max_lora_rank=8, adapters=adapters, cache_dir=str(tmp_path / "cache"))


def test_a_local_adapter_within_the_rank_limit_is_used_in_place(
    adapters: dict[str, Path], hidden_size: int, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, math=str(adapters["rank8"]))
    assert prepare_adapter("math", settings, hidden_size) == adapters["rank8"]
    assert not (tmp_path / "cache").exists()


def test_rank_above_the_tier_maximum_is_refused(adapters: dict[str, Path], hidden_size: int) -> None:
    with pytest.raises(AdapterError, match=r"adapter 'big': rank 16 exceeds the tier's max_lora_rank 8"):
        validate_adapter("big", adapters["rank16"], max_rank=8, hidden_size=hidden_size)
    validate_adapter("big", adapters["rank16"], max_rank=16, hidden_size=hidden_size)


def test_missing_folder_is_refused(tmp_path: Path, hidden_size: int) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        validate_adapter("gone", tmp_path / "nowhere", max_rank=8, hidden_size=hidden_size)


def test_a_model_folder_is_not_a_lora_adapter(base_dir: Path, hidden_size: int) -> None:
    with pytest.raises(AdapterError, match=r"not a LoRA adapter: cannot read adapter_config.json"):
        validate_adapter("model", base_dir, max_rank=8, hidden_size=hidden_size)


def test_another_peft_method_is_not_a_lora_adapter(adapters: dict[str, Path]) -> None:
    with pytest.raises(AdapterError, match=r"not a LoRA adapter \(peft_type 'IA3'\)"):
        validate_adapter("ia3", adapters["ia3"], max_rank=8, hidden_size=64)


def test_an_adapter_of_a_model_with_another_hidden_size_does_not_match(
    adapters: dict[str, Path], hidden_size: int
) -> None:
    with pytest.raises(AdapterError, match=rf"does not match the base model: .*q_proj maps 64 -> 64 .* {hidden_size}"):
        validate_adapter("narrow", adapters["narrow"], max_rank=8, hidden_size=hidden_size)
    validate_adapter("narrow", adapters["narrow"], max_rank=8, hidden_size=64)


def test_a_file_uri_is_copied_into_the_cache_once(adapters: dict[str, Path], hidden_size: int, tmp_path: Path) -> None:
    settings = _settings(tmp_path, math=adapters["rank8"].as_uri())
    local = prepare_adapter("math", settings, hidden_size)
    assert local.parent == tmp_path / "cache" and local.name.startswith("math-")
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in adapters["rank8"].iterdir())
    assert [p.name for p in local.parent.iterdir()] == [local.name], "no partial copy is left behind"
    (local / "marker").touch()
    assert prepare_adapter("math", settings, hidden_size) == local and (local / "marker").exists()


def test_unreadable_uris_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="does not exist"):
        fetch_adapter("gone", (tmp_path / "nowhere").as_uri(), tmp_path / "cache")
    with pytest.raises(AdapterError, match="cannot read nope://bucket/a"):
        fetch_adapter("odd", "nope://bucket/a", tmp_path / "cache")


def test_a_name_the_tier_does_not_serve_is_unknown(tmp_path: Path, hidden_size: int) -> None:
    with pytest.raises(UnknownAdapterError, match=r"no adapter 'other'; this tier serves \['math'\]"):
        prepare_adapter("other", _settings(tmp_path, math="/x"), hidden_size)


def test_a_tier_with_adapters_gets_vllm_lora_flags() -> None:
    tier = TierConfig(name="slm", model="some/model", lora={"max_loras": 2, "max_lora_rank": 16})
    flags = " ".join(engine_cli_args(tier))
    assert "--enable-lora --max-loras 2 --max-lora-rank 16 --max-cpu-loras 4" in flags
    assert "lora" not in " ".join(engine_cli_args(TierConfig(name="slm", model="some/model")))


class FakeEngine:
    """Records what ResidentAdapters asks of an engine."""

    def __init__(self, hidden_size: int) -> None:
        self.hidden_size = hidden_size
        self.loaded: dict[str, Path] = {}
        self.calls: list[str] = []

    def has_adapter(self, name: str) -> bool:
        return name in self.loaded

    async def load_adapter(self, name: str, local_dir: Path) -> None:
        self.calls.append(f"load {name}")
        self.loaded[name] = local_dir

    async def unload_adapter(self, name: str) -> None:
        self.calls.append(f"unload {name}")
        del self.loaded[name]


async def _evict(handle: object) -> None:
    """What Serve's multiplexer does to the least recently used model (ray/serve/multiplex.py)."""
    await handle.__del__()


def test_serve_eviction_unloads_an_idle_adapter_and_defers_a_busy_one(
    adapters: dict[str, Path], hidden_size: int, tmp_path: Path
) -> None:
    async def scenario() -> None:
        engine = FakeEngine(hidden_size)
        resident = ResidentAdapters(engine, _settings(tmp_path, a=str(adapters["rank8"]), b=str(adapters["rank8"])))
        handle_a = await resident.hold("a")
        handle_b = await resident.hold("b")
        assert resident.held == ["a", "b"] and engine.calls == ["load a", "load b"]

        await _evict(handle_b)
        assert resident.held == ["a"] and "b" not in engine.loaded

        async with resident.in_use("a"):
            await _evict(handle_a)  # evicted mid-request: vLLM would not find it when it resolves the name
            assert resident.held == [] and "a" in engine.loaded
            handle_a = await resident.hold("a")  # asked for again before the request ended: no reload
        assert engine.calls == ["load a", "load b", "unload b"] and resident.held == ["a"]

        async with resident.in_use("a"):
            await _evict(handle_a)
        assert engine.calls[-1] == "unload a" and not engine.loaded

        with pytest.raises(UnknownAdapterError):
            async with resident.in_use("c"):
                pass

    asyncio.run(scenario())
