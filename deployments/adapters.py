"""LoRA adapters of a tier: fetched to a local folder, checked against the tier, and held by a replica.

vLLM checks little when it loads an adapter: one trained for a model of another width loads and answers without
complaint (vLLM 0.32 on the embedded SLM). Checking the files first turns each mistake an operator can make into a
message that names it. No Ray or vLLM import here: the replica's engine is reached through `AdapterEngine`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Protocol

from cluster.config import ADAPTER_NAME_PATTERN, LoraSettings
from cluster.store.models import cache_root

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT's names: `<module>.lora_A.weight` for linear layers, `<module>.lora_embedding_A` for embeddings.
_LORA_A = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>embedding_)?A(?P<suffix>\.weight)?$")


class AdapterError(ValueError):
    """An adapter cannot be served by this tier; the message names the adapter and what is wrong with it."""


class UnknownAdapterError(AdapterError):
    """The tier has no adapter by that name."""


def adapter_cache_dir(settings: LoraSettings) -> Path:
    return Path(settings.cache_dir) if settings.cache_dir else cache_root() / "adapters"


def fetch_adapter(name: str, source: str, cache_dir: Path) -> Path:
    """The adapter as a local folder: a local path as it is, a URI copied into the cache once.

    The copy is keyed by the URI and reused, so a URI must name immutable content (version it in the path).
    It is written beside its final place and renamed into it, so an interrupted copy is never reused; when
    two replicas copy at once, the first rename wins and the other copy is dropped.
    """
    if "://" not in source:
        return Path(source).expanduser()
    target = cache_dir / f"{name}-{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    if target.is_dir():
        return target
    from fsspec.core import url_to_fs  # comes with huggingface_hub; s3:// needs s3fs, gs:// gcsfs

    try:
        filesystem, path = url_to_fs(source)
    except (ValueError, ImportError) as error:  # an unknown scheme; a scheme whose filesystem is not installed
        raise AdapterError(f"adapter {name!r}: cannot read {source}: {error}") from None
    if not filesystem.isdir(path):
        raise AdapterError(f"adapter {name!r}: {source} does not exist or is not a folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=cache_dir))
    try:
        filesystem.get(path.rstrip("/") + "/", f"{staging}/", recursive=True)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def validate_adapter(name: str, folder: Path, *, max_rank: int, hidden_size: int) -> None:
    """Raise AdapterError unless `folder` holds a PEFT LoRA adapter this tier's engine can apply.

    Ranks and the base check come from the weights, not `adapter_config.json`: they are what vLLM loads, and
    `r` may be overridden per module (`rank_pattern`). The base check does not compare
    `base_model_name_or_path`: a tier's model is often a local folder (the prepared embedded models are) whose
    path means nothing to the name PEFT recorded. It checks that every adapted layer reads or writes the base
    model's hidden size, as each layer of a decoder does (q/k/v/gate/up read it, o/down write it), which an
    adapter trained for a model of another width cannot satisfy.
    """
    if not folder.is_dir():
        raise AdapterError(f"adapter {name!r}: {folder} does not exist or is not a folder")
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as error:
        raise AdapterError(f"adapter {name!r}: not a LoRA adapter: cannot read {ADAPTER_CONFIG} ({error})") from None
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != "LORA":
        raise AdapterError(f"adapter {name!r}: not a LoRA adapter (peft_type {peft_type!r})")
    layers = _lora_layers(name, folder / ADAPTER_WEIGHTS)
    rank = max(layer_rank for layer_rank, _, _ in layers.values())
    if rank > max_rank:
        raise AdapterError(f"adapter {name!r}: rank {rank} exceeds the tier's max_lora_rank {max_rank}")
    for module, (_, in_features, out_features) in sorted(layers.items()):
        if hidden_size not in (in_features, out_features):
            raise AdapterError(
                f"adapter {name!r} does not match the base model: layer {module} maps {in_features} -> "
                f"{out_features} features, but the base model's hidden size is {hidden_size}"
            )


def _lora_layers(name: str, weights: Path) -> dict[str, tuple[int, int, int]]:
    """Each adapted layer as (rank, in features, out features), read from the safetensors header only."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="numpy") as tensors:
            shapes = {key: tensors.get_slice(key).get_shape() for key in tensors.keys()}  # noqa: SIM118 - not iterable
    except (OSError, SafetensorError) as error:
        raise AdapterError(
            f"adapter {name!r}: cannot read {ADAPTER_WEIGHTS} ({error}); save adapters as safetensors (PEFT's default)"
        ) from None
    layers = {}
    for key, a_shape in shapes.items():
        match = _LORA_A.match(key)
        if match is None:
            continue
        b_shape = shapes.get(_LORA_A.sub(r"\g<module>.lora_\g<kind>B\g<suffix>", key))
        if b_shape is not None:  # A is (rank, in features), B is (out features, rank)
            layers[match["module"]] = (a_shape[0], a_shape[-1], b_shape[0])
    if not layers:
        raise AdapterError(f"adapter {name!r}: not a LoRA adapter: {ADAPTER_WEIGHTS} holds no LoRA A/B pairs")
    return layers


def _adapter_dir_entries(settings: LoraSettings) -> dict[str, str]:
    """Sub-folders of `adapter_dir` that hold an adapter, by folder name (names a request may use)."""
    if settings.adapter_dir is None:
        return {}
    root = Path(settings.adapter_dir).expanduser()
    if not root.is_dir():
        return {}
    return {folder.name: str(folder) for folder in sorted(root.iterdir())
            if re.fullmatch(ADAPTER_NAME_PATTERN, folder.name) and (folder / ADAPTER_CONFIG).is_file()}


def available_adapters(settings: LoraSettings) -> list[str]:
    """Every adapter name the tier serves now: configured ones, then those found in `adapter_dir`."""
    return sorted(set(settings.adapters) | set(_adapter_dir_entries(settings)))


def adapter_source(settings: LoraSettings, name: str) -> str:
    """Where the tier's adapter `name` comes from; UnknownAdapterError for a name the tier does not serve.

    Configured names win; otherwise `adapter_dir/<name>` when it holds an adapter, read at request time, so an
    adapter written there (by `cascade adapt`) is served without a restart.
    """
    if name in settings.adapters:
        return settings.adapters[name]
    found = _adapter_dir_entries(settings).get(name)
    if found is None:
        raise UnknownAdapterError(f"no adapter {name!r}; this tier serves {available_adapters(settings)}")
    return found


def prepare_adapter(name: str, settings: LoraSettings, hidden_size: int) -> Path:
    """The local folder of the tier's adapter `name`, fetched and checked; blocking (files, network)."""
    folder = fetch_adapter(name, adapter_source(settings, name), adapter_cache_dir(settings))
    validate_adapter(name, folder, max_rank=settings.max_lora_rank, hidden_size=hidden_size)
    return folder


class AdapterEngine(Protocol):
    """What a replica's engine offers for adapters (VllmChatEngine)."""

    @property
    def hidden_size(self) -> int: ...

    def has_adapter(self, name: str) -> bool: ...

    async def load_adapter(self, name: str, local_dir: Path) -> None: ...

    async def unload_adapter(self, name: str) -> None: ...


class ResidentAdapters:
    """The adapters one replica holds for Ray Serve's model multiplexing, and when each may leave the engine.

    Serve decides what a replica holds (at most `max_loras`, least recently used out) and evicts an adapter by
    awaiting `__del__` on the object its loader returned. A request may still be using that adapter: vLLM looks
    the name up again after rendering the prompt, so unloading it then would fail a request Serve routed
    correctly. An evicted adapter therefore leaves the engine with its last request.
    """

    def __init__(self, engine: AdapterEngine, settings: LoraSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._held: set[str] = set()
        self._in_use: Counter[str] = Counter()

    @property
    def held(self) -> list[str]:
        """The adapters Serve currently holds on this replica (what it routes by)."""
        return sorted(self._held)

    async def hold(self, name: str) -> object:
        """Serve's loader: load the adapter unless the engine still has it, and return Serve's eviction handle."""
        if not self._engine.has_adapter(name):
            folder = await asyncio.to_thread(prepare_adapter, name, self._settings, self._engine.hidden_size)
            await self._engine.load_adapter(name, folder)
        self._held.add(name)
        return _EvictionHandle(partial(self._evict, name))

    @asynccontextmanager
    async def in_use(self, name: str) -> AsyncIterator[None]:
        """Keeps `name` in the engine for one request, from before it is loaded until the request ends.

        An unknown name fails here, before Serve's loader, which would first evict a held adapter to make room.
        """
        adapter_source(self._settings, name)
        self._in_use[name] += 1
        try:
            yield
        finally:
            self._in_use[name] -= 1
            await self._unload_if_idle(name)

    async def _evict(self, name: str) -> None:
        self._held.discard(name)
        await self._unload_if_idle(name)

    async def _unload_if_idle(self, name: str) -> None:
        if name not in self._held and not self._in_use[name] and self._engine.has_adapter(name):
            await self._engine.unload_adapter(name)


class _EvictionHandle:
    """The object Serve's multiplexer keeps per adapter; Serve awaits its `__del__` when it evicts the adapter.

    `__del__` is set on the instance: the garbage collector only calls a class's `__del__`, and would otherwise
    call this coroutine function again at collection and leave the coroutine unawaited.
    """

    def __init__(self, evict: Callable[[], Awaitable[None]]) -> None:
        self.__del__ = evict
