"""Real PEFT LoRA adapters of the bundled SmolLM2 for tests: random (non-zero) weights, so they change answers."""

from __future__ import annotations

from pathlib import Path


def make_random_adapter(folder: Path, seed: int, rank: int = 8) -> Path:
    """A rank-`rank` adapter on q_proj/v_proj with random A and B (PEFT's default B is zero: a no-op adapter)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cluster.store.models import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("embedded:smollm2-135m-instruct"),
                                                torch_dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    model.save_pretrained(folder)
    return folder
