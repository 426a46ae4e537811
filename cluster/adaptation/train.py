"""Fine-tune a LoRA adapter of an SLM on training pairs, and write it where vLLM can load it.

A plain torch loop rather than transformers' Trainer: the job is small (a few hundred pairs, one device), and
the loop makes the two details that matter visible: the loss is taken on the target tokens only (the prompt
is given at serving time, so learning to predict it would only spend capacity), and the target ends with the
tokenizer's EOS token (the engine stops there, so the adapter must learn to stop too). The adapter is written
to a staging folder and renamed into place, so a failed or interrupted run never leaves half an adapter that
serving would load.
"""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cluster.adaptation.dataset import TrainingPair

__all__ = ["TrainSettings", "TrainSummary", "TrainingError", "encode_pair", "train_lora"]

IGNORE_INDEX = -100  # labels torch's cross-entropy skips


class TrainingError(RuntimeError):
    """Training cannot run as configured (QLoRA without a GPU or bitsandbytes, no pair fits max_length) or
    diverged; the adapter is then not written."""


@dataclass(frozen=True)
class TrainSettings:
    """LoRA hyperparameters; the defaults suit a ~100M-parameter SLM and a few hundred pairs."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 4
    max_length: int = 1024
    seed: int = 0
    qlora: bool = False
    """Load the base in 4-bit NF4 (needs a CUDA GPU and bitsandbytes): for bases too big to train in float."""

    def __post_init__(self) -> None:
        for name in ("rank", "alpha", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


@dataclass(frozen=True)
class TrainSummary:
    """What a run did; first/last loss are means over the first and the last epoch (single steps are noisy)."""

    examples: int
    steps: int
    epochs: int
    first_loss: float
    last_loss: float
    seconds: float
    adapter_dir: Path
    rank: int
    too_long: int = 0
    """Pairs left out because prompt and target exceed max_length (cutting either would change the task)."""


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _require_qlora_support() -> None:
    import torch

    if not torch.cuda.is_available():
        raise TrainingError("QLoRA loads the base in 4-bit with bitsandbytes, which needs a CUDA GPU; none found")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError("QLoRA needs the bitsandbytes package, which is not installed (pip install bitsandbytes)")


def _load_model(base_model_dir: Path, settings: TrainSettings) -> Any:
    """The base with fresh LoRA layers; only those layers train."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if settings.qlora:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, quantization_config=quantization,
                                                     device_map={"": 0})
        model = prepare_model_for_kbit_training(model)
    else:
        model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).to(_device())
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def encode_pair(tokenizer: Any, pair: TrainingPair) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as the engine renders it, then the target and EOS; prompt labels masked.

    The two parts are tokenized separately because that is where the model takes over at serving time: the
    prompt ends with the generation prompt, and the first generated token starts the target.
    """
    prompt = tokenizer.apply_chat_template(pair.messages, tools=pair.tools, add_generation_prompt=True,
                                           tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = [*tokenizer(pair.target, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return [*prompt_ids, *target_ids], [IGNORE_INDEX] * len(prompt_ids) + target_ids


def _batches(encoded: list[tuple[list[int], list[int]]], batch_size: int, pad_id: int, rng: random.Random,
             device: str) -> list[dict[str, Any]]:
    """One epoch of right-padded batches in a seeded shuffled order."""
    import torch

    order = list(range(len(encoded)))
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [encoded[i] for i in order[start:start + batch_size]]
        width = max(len(ids) for ids, _ in chunk)
        ids = [row + [pad_id] * (width - len(row)) for row, _ in chunk]
        labels = [row + [IGNORE_INDEX] * (width - len(row)) for _, row in chunk]
        mask = [[1] * len(row) + [0] * (width - len(row)) for row, _ in chunk]
        batches.append({
            "input_ids": torch.tensor(ids, device=device),
            "labels": torch.tensor(labels, device=device),
            "attention_mask": torch.tensor(mask, device=device),
        })
    return batches


def _fit(model: Any, encoded: list[tuple[list[int], list[int]]], settings: TrainSettings, pad_id: int,
         progress: bool) -> list[float]:
    """Train the LoRA layers in place; returns the mean loss of each epoch."""
    import torch

    device = next(model.parameters()).device.type
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    rng = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(encoded) / settings.batch_size)
    epoch_losses = []
    model.train()
    with tqdm(total=steps_per_epoch * settings.epochs, desc="LoRA", unit="step", disable=not progress) as bar:
        for _ in range(settings.epochs):
            losses = []
            for batch in _batches(encoded, settings.batch_size, pad_id, rng, device):
                loss = model(**batch).loss
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss diverged ({loss.item()}); lower learning_rate")
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
            epoch_losses.append(sum(losses) / len(losses))
    return epoch_losses


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Move the finished adapter into place; an older adapter there is removed only once the new one is in."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    out_dir.rename(old / out_dir.name)
    try:
        staging.rename(out_dir)
    except OSError:
        (old / out_dir.name).rename(out_dir)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def train_lora(
    base_model_dir: Path,
    pairs: Sequence[TrainingPair],
    settings: TrainSettings,
    out_dir: Path,
    progress: bool = True,
) -> TrainSummary:
    """Train a LoRA adapter of the model in `base_model_dir` on `pairs` and save it to `out_dir`.

    Raises TrainingError when the run cannot start (QLoRA without support, no pair within max_length); any
    failure leaves `out_dir` as it was.
    """
    import torch
    from transformers import AutoTokenizer

    if not pairs:
        raise TrainingError("no training pairs")
    if settings.qlora:
        _require_qlora_support()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Created first, so an unwritable destination fails before any training time is spent.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
        all_encoded = [encode_pair(tokenizer, pair) for pair in pairs]
        encoded = [item for item in all_encoded if len(item[0]) <= settings.max_length]
        if not encoded:
            raise TrainingError(f"every pair is longer than max_length={settings.max_length} tokens")
        torch.manual_seed(settings.seed)
        model = _load_model(base_model_dir, settings)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        epoch_losses = _fit(model, encoded, settings, pad_id, progress)
        model.save_pretrained(staging)
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TrainSummary(
        examples=len(encoded),
        steps=math.ceil(len(encoded) / settings.batch_size) * settings.epochs,
        epochs=settings.epochs,
        first_loss=epoch_losses[0],
        last_loss=epoch_losses[-1],
        seconds=time.perf_counter() - started,
        adapter_dir=out_dir,
        rank=settings.rank,
        too_long=len(all_encoded) - len(encoded),
    )
