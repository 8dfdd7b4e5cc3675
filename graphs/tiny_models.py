"""Tiny random-weight causal LMs built from transformers configs (no model hub).

Every architecture is ~2 layers, hidden 128, head_dim 32, vocab 160, seeded, so the exported
fixtures stay small and are bit-for-bit reproducible. Where the architecture supports grouped
query attention it gets 4 query heads and 2 KV heads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NUM_LAYERS = 2
HIDDEN = 128
HEAD_DIM = 32
NUM_HEADS = HIDDEN // HEAD_DIM  # 4
NUM_KV_HEADS_GQA = 2
INTERMEDIATE = 64
VOCAB = (
    160  # != any Linear width: the genai builder takes any Linear with out_features == vocab for the LM head
)
MAX_POSITIONS = 64
GEMMA2_SLIDING_WINDOW = 8
SEED = 1234


@dataclass(frozen=True)
class TinyArch:
    """One architecture: how to build its config, and the facts the catalog records."""

    name: str
    model_type: str
    num_kv_heads: int
    has_softcap: bool
    sliding_window: int | None
    make_config: Callable[[], Any]
    note: str
    # Gemma-style RMSNorm scales by (1 + weight): its stored weight is the gain minus one.
    norm_weight_is_offset: bool = False


def _llama() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS_GQA,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
    )


def _qwen2() -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS_GQA,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        use_sliding_window=False,
    )


def _mistral() -> Any:
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS_GQA,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        sliding_window=None,
    )


def _phi3() -> Any:
    from transformers import Phi3Config

    return Phi3Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS_GQA,
        max_position_embeddings=MAX_POSITIONS,
        original_max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        sliding_window=None,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def _gemma2() -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS_GQA,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        query_pre_attn_scalar=HEAD_DIM,
        sliding_window=GEMMA2_SLIDING_WINDOW,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        layer_types=["sliding_attention", "full_attention"],
        attn_implementation="eager",
    )


def _gpt2() -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=NUM_LAYERS,
        n_head=NUM_HEADS,
        n_inner=INTERMEDIATE,
        n_positions=MAX_POSITIONS,
        bos_token_id=1,
        eos_token_id=2,
    )


def _gpt_neox() -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        rotary_pct=0.25,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        use_parallel_residual=True,
        bos_token_id=1,
        eos_token_id=2,
    )


def _opt() -> Any:
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        word_embed_proj_dim=HIDDEN,
        ffn_dim=INTERMEDIATE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


ARCHS: dict[str, TinyArch] = {
    a.name: a
    for a in [
        TinyArch("llama", "llama", NUM_KV_HEADS_GQA, False, None, _llama, "GQA 4q/2kv, RoPE"),
        TinyArch("qwen2", "qwen2", NUM_KV_HEADS_GQA, False, None, _qwen2, "GQA, q/k/v bias"),
        TinyArch(
            "mistral",
            "mistral",
            NUM_KV_HEADS_GQA,
            False,
            None,
            _mistral,
            "GQA, sliding_window=None (Llama-like)",
        ),
        TinyArch("phi3", "phi3", NUM_KV_HEADS_GQA, False, None, _phi3, "GQA, fused qkv_proj"),
        TinyArch(
            "gemma2",
            "gemma2",
            NUM_KV_HEADS_GQA,
            True,
            GEMMA2_SLIDING_WINDOW,
            _gemma2,
            "GQA, attn softcap 50, final softcap 30, layer 0 sliding window 8, eager",
            norm_weight_is_offset=True,
        ),
        TinyArch("gpt2", "gpt2", NUM_HEADS, False, None, _gpt2, "MHA, fused c_attn, learned positions"),
        TinyArch(
            "gpt_neox",
            "gpt_neox",
            NUM_HEADS,
            False,
            None,
            _gpt_neox,
            "MHA, fused qkv, partial rotary (8 of 32 dims)",
        ),
        TinyArch("opt", "opt", NUM_HEADS, False, None, _opt, "MHA, learned positions offset 2"),
    ]
}


def build_model(arch: str, attn_implementation: str = "sdpa", seed: int = SEED) -> Any:
    """Return the seeded tiny model in eval mode (fp32, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    spec = ARCHS[arch]
    config = spec.make_config()
    if spec.has_softcap:
        attn_implementation = "eager"  # HF applies the logit softcap only in eager attention
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    # HF init gives zero biases and unit norms, which would hide a missing bias or norm weight in
    # a graph; draw every parameter instead, seeded per (arch, name) so the result does not depend
    # on construction order. Norm gains are 1 + 0.1 N(0, 1) in every architecture: Gemma2 stores
    # gain - 1 (its RMSNorm multiplies by 1 + weight), so its stored weights are drawn around 0.
    norm_base = 0.0 if spec.norm_weight_is_offset else 1.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = torch.Generator().manual_seed(seed + hash_name(f"{arch}/{name}"))
            if p.dim() >= 2:
                p.normal_(0.0, 0.08, generator=g)
            elif name.endswith("weight"):  # 1-D weights are norm scales
                p.copy_(norm_base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.normal_(0.0, 0.05, generator=g)
    return model.eval()


def hash_name(name: str) -> int:
    """A stable (process-independent) small integer for a parameter name."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 100_003


def save_model_dir(arch: str, out_dir: Path) -> Path:
    """Save the tiny model as a Hugging Face folder (config.json + safetensors) for file-based exporters."""
    model = build_model(arch)
    model.save_pretrained(out_dir)
    return out_dir
