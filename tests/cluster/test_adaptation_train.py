"""A real LoRA run on the prepared SmolLM2: the adapter is saved with its rank, learns, and changes the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from cluster.adaptation.dataset import TrainingPair, build_pairs
from cluster.adaptation.train import TrainingError, TrainSettings, TrainSummary, encode_pair, train_lora
from cluster.store.recording import RecordedExample

ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
SETTINGS = TrainSettings(rank=4, alpha=8, epochs=2, learning_rate=1e-3, max_length=256)


def add_example(i: int) -> RecordedExample:
    arguments = json.dumps({"a": i, "b": 7 * i})
    return RecordedExample(
        id=f"add-{i}", route="math", tier="fallback", created_at=float(i),
        request={"messages": [{"role": "user", "content": f"Add {i} and {7 * i}."}], "tools": [ADD],
                 "tool_choice": {"type": "function", "function": {"name": "add"}}},
        answer={"role": "assistant", "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "add", "arguments": arguments}}]},
    )


@pytest.fixture(scope="module")
def base_dir(prepared_slm: Path) -> Path:
    return prepared_slm


@pytest.fixture(scope="module")
def pairs() -> list[TrainingPair]:
    return build_pairs([add_example(i) for i in range(12)]).pairs


@pytest.fixture(scope="module")
def trained(base_dir: Path, pairs: list[TrainingPair], tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    out_dir = tmp_path_factory.mktemp("adapters") / "math"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("an older adapter")
    too_long = TrainingPair(id="long", messages=[{"role": "user", "content": "word " * 400}], target="{}")
    return train_lora(base_dir, [*pairs, too_long], SETTINGS, out_dir, progress=False)


def target_loss(model: torch.nn.Module, tokenizer, pair: TrainingPair) -> float:
    ids, labels = encode_pair(tokenizer, pair)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def test_adapter_is_saved_with_the_configured_rank_replacing_the_old_one(trained: TrainSummary) -> None:
    files = {path.name for path in trained.adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "stale.txt" not in files
    config = json.loads((trained.adapter_dir / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"]) == (4, 8)
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    weights = load_file(trained.adapter_dir / "adapter_model.safetensors")
    lora_a = [tensor for name, tensor in weights.items() if "lora_A" in name]
    assert lora_a and all(tensor.shape[0] == 4 for tensor in lora_a)
    assert [p.name for p in trained.adapter_dir.parent.iterdir()] == ["math"]  # no staging folder left


def test_training_lowers_the_loss(trained: TrainSummary) -> None:
    print(f"\nLoRA run: {trained}")
    assert (trained.examples, trained.too_long, trained.epochs, trained.steps, trained.rank) == (12, 1, 2, 6, 4)
    assert trained.last_loss < trained.first_loss


def test_adapted_model_predicts_the_training_targets_better(
    trained: TrainSummary, base_dir: Path, pairs: list[TrainingPair]
) -> None:
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    base_losses = [target_loss(base, tokenizer, pair) for pair in pairs[:3]]
    adapted = PeftModel.from_pretrained(base, trained.adapter_dir).eval()
    adapted_losses = [target_loss(adapted, tokenizer, pair) for pair in pairs[:3]]
    assert all(a < b for a, b in zip(adapted_losses, base_losses)), (adapted_losses, base_losses)


def test_a_run_that_fails_in_the_loop_leaves_the_old_adapter_untouched(
    base_dir: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    out_dir = tmp_path / "math"
    out_dir.mkdir()
    (out_dir / "adapter_config.json").write_text("{}")
    diverging = TrainSettings(epochs=1, batch_size=1, learning_rate=1e30)
    with pytest.raises(TrainingError, match="diverged"):
        train_lora(base_dir, pairs[:2], diverging, out_dir, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["math"]
    assert [p.name for p in out_dir.iterdir()] == ["adapter_config.json"]


def test_an_unwritable_destination_fails_before_training_and_leaves_nothing(
    base_dir: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(OSError):
        train_lora(base_dir, pairs, SETTINGS, tmp_path / "a-file" / "math", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]


def test_qlora_without_gpu_or_bitsandbytes_is_a_clear_error(
    base_dir: Path, pairs: list[TrainingPair], tmp_path: Path
) -> None:
    with pytest.raises(TrainingError, match="CUDA GPU|bitsandbytes"):
        train_lora(base_dir, pairs, TrainSettings(qlora=True), tmp_path / "math", progress=False)
    assert not (tmp_path / "math").exists()


def test_no_pair_within_max_length_is_a_clear_error(base_dir: Path, pairs: list[TrainingPair], tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="max_length=16"):
        train_lora(base_dir, pairs, TrainSettings(max_length=16), tmp_path / "math", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("field", "value"), [("rank", 0), ("dropout", 1.0), ("learning_rate", 0.0),
                                              ("batch_size", 0), ("target_modules", ())])
def test_settings_reject_impossible_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainSettings(**{field: value})
