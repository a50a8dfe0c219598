"""A sentence-transformers text encoder run by ONNX Runtime on the CPU.

The model's transformer is exported once, in memory, when the embedder loads
(under a second for MiniLM), and ONNX Runtime runs it; tokenisation, mean or
CLS pooling and normalisation stay as sentence-transformers does them, so the
vectors equal the torch path's (cosine > 0.99999 on the search benchmark's
queries). On a 2-core VM one short query took 5.3 ms against 13.3 ms through
``SentenceTransformer.encode`` on one thread (``benchmarks/embed_latency.py``).

Only ``Transformer -> Pooling(mean | cls) [-> Normalize]`` pipelines are
supported; :func:`supports` says whether a loaded model is one.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OnnxEncoder", "supports"]


def _pooling_mode(st: Any) -> str | None:
    mods = list(st)
    names = [type(m).__name__ for m in mods]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        return None
    mode = mods[1].get_config_dict().get("pooling_mode")
    return mode if mode in ("mean", "cls") else None


def supports(st: Any) -> bool:
    """Whether the SentenceTransformer ``st`` can run as an :class:`OnnxEncoder`."""
    return _pooling_mode(st) is not None


class OnnxEncoder:
    """Encodes texts with the exported transformer of ``st`` (a SentenceTransformer).

    ``threads``: ONNX Runtime intra-op threads (0: one per core).
    """

    def __init__(self, st: Any, threads: int = 1) -> None:
        import onnxruntime as ort
        import torch

        mode = _pooling_mode(st)
        if mode is None:
            raise ValueError("only Transformer + mean/CLS Pooling models can run on ONNX Runtime")
        self._mode = mode
        self._tokenizer = st.tokenizer
        self._max_len = int(st.max_seq_length)
        self._inputs = [
            n
            for n in ("input_ids", "attention_mask", "token_type_ids")
            if n in self._tokenizer.model_input_names
        ]
        encoder = st[0].auto_model

        class _Hidden(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = encoder

            def forward(self, *args: torch.Tensor) -> torch.Tensor:
                kwargs = dict(zip(names, args, strict=True))
                return self.encoder(**kwargs).last_hidden_state  # type: ignore[no-any-return]

        names = self._inputs
        sample = self._tokenizer(["a sample"], return_tensors="pt")
        blob = io.BytesIO()
        axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]}
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden().eval(),
                tuple(sample[n] for n in names),
                blob,  # type: ignore[arg-type]  # an in-memory file works as well as a path
                input_names=names,
                output_names=["hidden"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            blob.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
        """``(len(texts), dim)`` L2-normalised float32 vectors, ``batch_size`` at a time."""
        parts = [self._encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        enc = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._max_len,
            return_tensors="np",
        )
        feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in self._inputs}
        hidden = self._session.run(None, feeds)[0]
        if self._mode == "cls":
            vecs = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12), dtype=np.float32)
