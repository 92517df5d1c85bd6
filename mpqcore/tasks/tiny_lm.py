"""``tiny-lm``: a GPT-2-style causal language model that mpq trains on Python's own documentation.

Text: the paragraphs of ``pydoc_data.topics`` (ships with Python; nothing is
downloaded), dedented, de-duplicated and shuffled with a fixed seed, then split by
paragraph into training, calibration and held-out text, pairwise disjoint.

Tokenizer: byte-level BPE (GPT-2's scheme) trained with Hugging Face ``tokenizers`` on
the training paragraphs only, ``vocab_size`` tokens, ``<|endoftext|>`` (id 0) between
paragraphs and as padding. Training it is deterministic; a hash of the trained
tokenizer is part of the model cache key, so a different tokenizer retrains.

Model: ``transformers.GPT2LMHeadModel`` from a small ``GPT2Config`` (by default 2 blocks of
width 128, 4 heads, 128 positions; the input embedding and ``lm_head`` share one weight,
as in GPT-2), a vocabulary of 1024: 0.54 M parameters. Trained with AdamW for 800 steps
of 16 random 128-token windows of the training stream (111 k tokens, so 15 epochs),
on one thread with fixed seeds, and cached (see :mod:`mpqcore.tasks._cache`); ``info``
has the training time: 103 s of CPU (129 s wall on a shared 2-core machine), held-out
perplexity 33.5 (1.84 bits per character).

Calibration: ``n_calibration`` held-apart paragraphs as Hugging Face dict batches
(``input_ids``, ``attention_mask``), right-padded, so the default loss is the per-token KL
divergence over the vocabulary with padding ignored (:mod:`mpqcore.divergence`).

Metric: perplexity on the held-out text (non-overlapping windows of ``context``
tokens), ``exp`` of the mean next-token cross-entropy; **lower is better**
(``higher_is_better=False``).
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from mpqcore.errors import ConfigError
from mpqcore.metrics import lower_is_better
from mpqcore.options import option
from mpqcore.tasks import Task, TaskBuilder, TaskOptions, _cache

__all__ = ["TinyLMOptions", "build", "load_paragraphs", "make_model", "perplexity_fn", "train_tokenizer"]

#: Bump when the architecture, the data or the training loop changes, so caches retrain.
TRAIN_VERSION = 1
#: Fixed shuffle seed of the paragraph split (independent of ``build(seed=...)``).
TEXT_SEED = 4321
#: The end-of-text token: between paragraphs, and the padding of calibration batches.
EOT = "<|endoftext|>"


def load_paragraphs() -> list[str]:
    """Every paragraph of ``pydoc_data.topics``, dedented, de-duplicated, in a fixed shuffled order."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            text = textwrap.dedent(para).strip()
            if len(text) >= 20:
                seen.setdefault(text)
    paragraphs = list(seen)
    random.Random(TEXT_SEED).shuffle(paragraphs)
    return paragraphs


def split_paragraphs(paragraphs: Sequence[str], n_calibration: int, heldout_fraction: float) -> tuple[list, list, list]:
    """``(train, calibration, heldout)``: held-out paragraphs first, up to ``heldout_fraction`` of the characters."""
    total = sum(len(p) for p in paragraphs)
    heldout, chars = [], 0
    for p in paragraphs:
        if chars >= heldout_fraction * total:
            break
        heldout.append(p)
        chars += len(p)
    rest = list(paragraphs[len(heldout) :])
    if n_calibration >= len(rest):
        raise ConfigError(f"n_calibration={n_calibration} leaves no training text; valid: below {len(rest)}")
    return rest[n_calibration:], rest[:n_calibration], heldout


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts``; ``<|endoftext|>`` is id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return tokenizer


def make_model(opts: TinyLMOptions) -> nn.Module:
    """An untrained ``GPT2LMHeadModel`` of ``opts``' size (no key/value cache: every call is a full pass)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    config = GPT2Config(
        vocab_size=opts.vocab_size,
        n_positions=opts.context,
        n_embd=opts.width,
        n_layer=opts.layers,
        n_head=opts.heads,
        resid_pdrop=opts.dropout,
        embd_pdrop=opts.dropout,
        attn_pdrop=opts.dropout,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return GPT2LMHeadModel(config)
    finally:
        hf_logging.set_verbosity(verbosity)


def _stream(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """The token ids of ``texts``, each followed by ``<|endoftext|>``, as one 1-D stream."""
    ids: list[int] = []
    for enc in tokenizer.encode_batch(list(texts)):
        ids.extend(enc.ids)
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long)


def _train(model: nn.Module, stream: torch.Tensor, opts: TinyLMOptions) -> dict[str, torch.Tensor]:
    """``opts.steps`` AdamW steps (linear warm-up, cosine decay) on random windows of ``stream``."""
    gen = torch.Generator().manual_seed(opts.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=0.01)
    warmup = max(1, opts.steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, opts.steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model.train()
    bar = None
    if opts.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=opts.steps, desc="tiny-lm", unit="step")
    for _ in range(opts.steps):
        starts = torch.randint(0, len(stream) - opts.context - 1, (opts.batch_size,), generator=gen)
        window = torch.stack([stream[s : s + opts.context + 1] for s in starts.tolist()])
        logits = model(input_ids=window[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    return model.state_dict()


def perplexity_fn(windows: torch.Tensor, *, batch_size: int = 32) -> Callable[[nn.Module], float]:
    """``metric(model) -> float``: perplexity of a causal LM on ``windows`` ``[W, T]`` (lower is better)."""
    windows = windows.detach().clone()

    def perplexity(model: nn.Module) -> float:
        device = _cache.model_device(model)
        nll, count = 0.0, 0
        with _cache.preserve_modes(model):
            for i in range(0, len(windows), batch_size):
                ids = windows[i : i + batch_size].to(device)
                logits = model(input_ids=ids).logits[:, :-1].float()
                target = ids[:, 1:]
                nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"))
                count += target.numel()
        return math.exp(nll / count)

    perplexity.__doc__ = f"perplexity on {windows.numel()} held-out tokens ({len(windows)} windows; lower is better)"
    return lower_is_better(perplexity)


def calibration_batches(tokenizer: Any, texts: Sequence[str], opts: TinyLMOptions) -> list[dict[str, torch.Tensor]]:
    """``texts`` as right-padded ``{input_ids, attention_mask}`` batches, similar lengths together."""
    encoded = sorted((enc.ids[: opts.context] for enc in tokenizer.encode_batch(list(texts))), key=len)
    batches = []
    for i in range(0, len(encoded), opts.calibration_batch_size):
        chunk = encoded[i : i + opts.calibration_batch_size]
        width = max(len(ids) for ids in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        batches.append({"input_ids": ids.to(opts.device), "attention_mask": mask.to(opts.device)})
    return batches


@attrs.frozen
class TinyLMOptions(TaskOptions):
    """The options of ``tiny-lm``; those that decide the trained weights are its cache key."""

    steps: int = option(int, default=800, minimum=1, help="training steps")
    lr: float = option(float, default=3e-3, greater_than=0.0, help="AdamW peak learning rate")
    batch_size: int = option(int, default=16, minimum=1, help="training windows per step")
    context: int = option(int, default=128, minimum=8, help="tokens per window (the model's positions)")
    vocab_size: int = option(int, default=1024, minimum=300, help="BPE vocabulary size")
    width: int = option(int, default=128, minimum=8, help="embedding width")
    layers: int = option(int, default=2, minimum=1, help="transformer blocks")
    heads: int = option(int, default=4, minimum=1, help="attention heads")
    dropout: float = option(float, default=0.0, minimum=0.0, help="dropout while training")
    threads: int = option(int, default=1, minimum=1, help="torch threads while training (part of the cache key)")
    n_calibration: int = option(int, default=32, minimum=1, help="calibration paragraphs")
    calibration_batch_size: int = option(int, default=8, minimum=1, help="paragraphs per calibration batch")
    heldout_fraction: float = option(float, default=0.1, greater_than=0.0, help="share of the text held out")
    eval_windows: int | None = option(int, default=None, minimum=1, optional=True, help="held-out windows scored")
    retrain: bool = option(bool, default=False, help="train again even when a cached model exists")

    def training_config(self, tokenizer_hash: str) -> dict[str, Any]:
        """The options that decide the trained weights, with the text and the tokenizer (the cache key)."""
        keys = ("seed", "steps", "lr", "batch_size", "context", "vocab_size", "width", "layers", "heads", "dropout")
        return {
            "task": "tiny-lm",
            "version": TRAIN_VERSION,
            **{k: getattr(self, k) for k in keys},
            "threads": self.threads,
            "n_calibration": self.n_calibration,
            "heldout_fraction": self.heldout_fraction,
            "tokenizer": tokenizer_hash,
        }


@TaskBuilder.taking(TinyLMOptions)
def build(opts: TinyLMOptions) -> Task:
    """GPT-2-style causal LM trained on Python's documentation; metric: held-out perplexity (lower is better)."""
    try:
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f'the tiny-lm task needs {exc.name}: pip install "mpqcore[lm]"') from exc
    if opts.width % opts.heads:
        raise ConfigError(f"width={opts.width} must be a multiple of heads={opts.heads}")
    t0 = time.perf_counter()
    train_text, cal_text, heldout_text = split_paragraphs(load_paragraphs(), opts.n_calibration, opts.heldout_fraction)
    tokenizer = train_tokenizer(train_text, opts.vocab_size)
    tokenizer_hash = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:16]
    config = opts.training_config(tokenizer_hash)
    train_stream = _stream(tokenizer, train_text)

    def train() -> dict[str, torch.Tensor]:
        with _cache.deterministic(opts.seed, threads=opts.threads):
            return _train(make_model(opts), train_stream, opts)

    state, meta = _cache.load_or_train("tiny-lm", config, train, cache_dir=opts.cache_dir, retrain=opts.retrain)
    model = make_model(opts)
    model.load_state_dict(state)
    model.eval().to(opts.device)

    heldout = _stream(tokenizer, heldout_text)
    n_windows = len(heldout) // opts.context
    if opts.eval_windows is not None:
        n_windows = min(n_windows, opts.eval_windows)
    windows = heldout[: n_windows * opts.context].reshape(n_windows, opts.context)
    metric = perplexity_fn(windows)
    float_metric = metric(model)
    calibration = calibration_batches(tokenizer, cal_text, opts)
    info = {
        **meta,
        "float_metric": float_metric,
        "n_params": _cache.count_params(model),
        "tokenizer": tokenizer,
        "tokenizer_hash": tokenizer_hash,
        "n_train_tokens": len(train_stream),
        "n_heldout_tokens": int(windows.numel()),
        "n_calibration": len(cal_text),
        "n_train_paragraphs": len(train_text),
        "n_heldout_paragraphs": len(heldout_text),
        "calibration_texts": cal_text,
        "tied_weights": [["transformer.wte", "lm_head"]],
        "build_time_s": time.perf_counter() - t0,
        "seed": opts.seed,
        "config": config,
    }
    return Task(
        name="tiny-lm",
        model=model,
        calibration=calibration,
        metric=metric,
        metric_name="perplexity",
        higher_is_better=False,
        description=(
            f"GPT-2-style causal LM ({opts.layers} blocks, width {opts.width}, {info['n_params'] / 1e6:.2f} M "
            f"parameters) trained on Python's documentation; perplexity on {windows.numel()} held-out tokens, "
            f"lower is better (float: {float_metric:.2f})"
        ),
        info=info,
    )
