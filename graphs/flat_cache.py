"""A torch wrapper that gives a Hugging Face causal LM flat tensor inputs and outputs.

The torch exporters (dynamo and TorchScript) need positional tensors, not a Cache object.
Names follow optimum's convention so all fixtures look alike to the pass:
inputs  `input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key|value`
outputs `logits`, `present.{i}.key|value`; cache tensors are [B, Hkv, T, Dh].
"""

from __future__ import annotations

from typing import Any

import torch


def past_name(layer: int, kind: str) -> str:
    return f"past_key_values.{layer}.{kind}"


def present_name(layer: int, kind: str) -> str:
    return f"present.{layer}.{kind}"


def cache_input_names(num_layers: int) -> list[str]:
    return [past_name(i, k) for i in range(num_layers) for k in ("key", "value")]


def cache_output_names(num_layers: int) -> list[str]:
    return [present_name(i, k) for i in range(num_layers) for k in ("key", "value")]


def make_dynamic_cache(flat_past: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> Any:
    """A DynamicCache holding full-length layers (a sliding window is then enforced by the mask).

    The layers are filled directly rather than through `cache.update`, which would concatenate
    the past onto an empty tensor and leave an extra Concat per cache input in traced graphs.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache()
    layers = []
    for layer in range(len(flat_past) // 2):
        entry = DynamicLayer()
        entry.lazy_initialization(flat_past[2 * layer])
        entry.keys, entry.values = flat_past[2 * layer], flat_past[2 * layer + 1]
        layers.append(entry)
    if layers:
        cache.layers = layers
    return cache


def flatten_cache(cache: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    for layer in cache.layers:
        out += [layer.keys, layer.values]
    return out


class FlatCacheLM(torch.nn.Module):
    """forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)."""

    def __init__(self, model: torch.nn.Module, use_position_ids: bool = True) -> None:
        super().__init__()
        self.model = model
        self.use_position_ids = use_position_ids

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        kwargs: dict[str, Any] = {"position_ids": position_ids} if self.use_position_ids else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=make_dynamic_cache(past),
            use_cache=True,
            **kwargs,
        )
        return (out.logits, *flatten_cache(out.past_key_values))


class NoCacheLM(torch.nn.Module):
    """forward(input_ids, attention_mask) -> logits, with use_cache=False (a negative fixture)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
