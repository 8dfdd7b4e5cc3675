"""Turn the SmolLM2 GGUF into a plain float32 Hugging Face Llama folder (weights, config, tokenizer).

transformers' own GGUF reader parses the config and dequantizes the Q4_1/Q8_0 tensors (through the `gguf`
package). We call that reader directly instead of `from_pretrained(gguf_file=...)`, because transformers 4.57
refuses the latter without `accelerate`; the tensors and names are the same ones `from_pretrained` would load.
A GGUF-loaded model cannot be `save_pretrained`-ed, so a plain `LlamaForCausalLM` is built from the config and
given the state dict.

Pitfall guarded here: `rope_theta` (100000 for SmolLM2) must be written into config.json, and the saved
folder is reloaded and its logits compared with the in-memory model before anything is exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

# SmolLM2's special tokens (ids 0, 1, 2 in the GGUF vocabulary).
UNK_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
GGUF_TOKEN_TYPE_CONTROL = 3

# Tolerance between the in-memory model and the same model reloaded from the saved folder: both are float32
# on CPU with the same kernels, so anything above rounding noise means the folder lost something
# (e.g. rope_theta).
RELOAD_ATOL = 1e-4


class HfFolderError(RuntimeError):
    """The Hugging Face folder built from the GGUF does not reproduce the GGUF model."""


def read_gguf_metadata(gguf_path: Path) -> dict[str, dict[str, Any]]:
    """Parse the GGUF metadata with transformers' reader: keys `config`, `tokenizer`, `tokenizer_config`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return load_gguf_checkpoint(str(gguf_path), return_tensors=False)


def build_config(metadata: dict[str, dict[str, Any]]) -> LlamaConfig:
    """The Llama config that `AutoConfig.from_pretrained(gguf_file=...)` would build, made explicit."""
    fields = dict(metadata["config"])
    if fields.get("model_type") != "llama":
        raise HfFolderError(f"expected a llama GGUF, got model_type {fields.get('model_type')!r}")
    if "rope_theta" not in fields:
        raise HfFolderError("the GGUF has no llama.rope.freq_base; refusing to fall back to rope_theta 10000")
    fields.pop("_model_name_or_path", None)
    config = LlamaConfig.from_dict(fields)
    config.architectures = ["LlamaForCausalLM"]
    config.torch_dtype = torch.float32
    config.use_cache = True
    return config


def load_float_model(gguf_path: Path, config: LlamaConfig) -> LlamaForCausalLM:
    """Dequantize the GGUF tensors into a plain float32 LlamaForCausalLM (eval mode)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    tensors = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=model)["tensors"]
    state = {name: torch.as_tensor(value, dtype=torch.float32) for name, value in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # lm_head is tied to the embedding (the GGUF has no output.weight), so only it may be missing.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise HfFolderError(f"GGUF tensors do not fit the config: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    # Non-persistent buffers (rotary inv_freq) were created on the meta device: recompute them on CPU.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise HfFolderError(f"tensors left without values after loading the GGUF: {on_meta}")
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise HfFolderError("lm_head is not tied to embed_tokens after tie_weights()")
    return model.eval()


def build_tokenizer(metadata: dict[str, dict[str, Any]]) -> PreTrainedTokenizerFast:
    """SmolLM2's byte-level BPE tokenizer, built from the GGUF vocabulary and merges.

    transformers' own GGUF conversion wraps this vocabulary as a Llama/SentencePiece tokenizer that always
    prepends `<|im_start|>` and decodes through a `▁` replacement, and it is slow (~25 s). The GGUF says
    `add_bos_token = False` and `pre = smollm` (llama.cpp: split every digit, then the GPT-2 regex), so we
    build exactly that: Digits(individual) + ByteLevel pre-tokenizer, ByteLevel decoder, no BOS added.
    Control tokens (token_type 3) become special added tokens.
    """
    fields = metadata["tokenizer"]
    if fields.get("tokenizer_type") != "gpt2":
        raise HfFolderError(
            f"expected a gpt2 (byte-level BPE) GGUF tokenizer, got {fields.get('tokenizer_type')!r}"
        )
    tokens: list[str] = list(fields["tokens"])
    merges = [tuple(merge.split(" ", 1)) for merge in fields["merges"]]
    backend = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(tokens)}, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.decoder = decoders.ByteLevel()
    control = [tokens[i] for i, kind in enumerate(fields["token_type"]) if kind == GGUF_TOKEN_TYPE_CONTROL]
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in control])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=int(metadata["config"]["max_position_embeddings"]),
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = metadata["tokenizer_config"].get("chat_template")
    for token, id_key in (
        (UNK_TOKEN, "unk_token_id"),
        (BOS_TOKEN, "bos_token_id"),
        (EOS_TOKEN, "eos_token_id"),
    ):
        got_id = tokenizer.convert_tokens_to_ids(token)
        if got_id != fields[id_key]:
            raise HfFolderError(f"{token} has id {got_id}, the GGUF says {fields[id_key]}")
    return tokenizer


def check_reload(folder: Path, model: LlamaForCausalLM) -> float:
    """Reload `folder` as transformers will and return the max |logit| difference against `model`."""
    reloaded = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if float(reloaded.config.rope_theta) != float(model.config.rope_theta):
        raise HfFolderError(f"{folder}/config.json reloads with rope_theta {reloaded.config.rope_theta}")
    ids = torch.arange(3, 3 + 48, dtype=torch.long).reshape(1, -1) * 97 % model.config.vocab_size
    with torch.no_grad():
        diff = (reloaded(ids).logits - model(ids).logits).abs().max().item()
    if not diff <= RELOAD_ATOL:
        raise HfFolderError(
            f"{folder} reloads with logits {diff:.3g} away from the GGUF model (> {RELOAD_ATOL})"
        )
    return diff


def write_hf_folder(gguf_path: Path, folder: Path) -> LlamaForCausalLM:
    """Write float32 weights, config.json (with rope_theta) and tokenizer files; return the GGUF model."""
    metadata = read_gguf_metadata(gguf_path)
    config = build_config(metadata)
    model = load_float_model(gguf_path, config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    build_tokenizer(metadata).save_pretrained(str(folder))
    config_path = folder / "config.json"
    saved = json.loads(config_path.read_text())
    saved["rope_theta"] = config.rope_theta  # explicit, for readers that ignore rope_parameters
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    check_reload(folder, model)
    return model
