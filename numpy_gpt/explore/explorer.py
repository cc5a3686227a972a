"""What the explore page shows, computed by numpy_gpt's own functions: ``Explorer(model, tokenizer)``.

Every number the page draws comes from here, as JSON-ready dicts; the page's JavaScript only draws
them. Each view is one function of the library the notebooks and the command line use:

* **tokens**: the tokenizer's ids for a text, and the piece of text each id stands for;
* **generation, one step at a time**: ``generate.generate_steps``, the loop ``generate`` itself
  runs, so a greedy run shows exactly ``generate``'s tokens. Each step shows the ten most likely
  next tokens under ``generate.sampling_logits`` (after temperature, top-k and top-p: the
  distribution the token is drawn from) and marks the one picked. At temperature 0 the pick is the
  argmax and the probabilities shown are the model's own (temperature 1), filtered the same way;
* **attention**: ``plots.attention_weights``, the weights the model's attention layers computed
  in a forward pass (each keeps them with ``MultiHeadAttention.keep_attn_weights``);
* **logit lens** (nostalgebraist, 2020): the residual stream after the embeddings and after each
  block, put through the model's own final norm and output head, as if the model stopped there:
  the top tokens each layer would predict. The last row is the model's prediction;
* **class probabilities** of a classifier (``finetune.classifier.class_probabilities``, as
  ``numpy-gpt classify``) and **fill-mask** candidates of an encoder (``mlm.fill_mask``).

Bad input raises ``ExploreError`` (a ValueError) with one line for the page. The model is shared by
the server's threads: every computation holds ``Explorer.lock``, a generation one step at a time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from numpy_gpt.encoder import EncoderClassifier, EncoderModel
from numpy_gpt.generate import generate_steps, sampling_logits
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import Module, no_grad
from numpy_gpt.nn.softmax import softmax
from numpy_gpt.plots import attention_weights

TOP = 10                  # next-token candidates shown at each step, fill-mask candidates per [MASK]
LENS_TOP = 5              # candidates per cell of the logit lens
LENS_POSITIONS = 16       # the logit lens reads at most this many positions (the last ones by default)
MAX_NEW_TOKENS = 1024     # the longest generation one request may ask for

LANGUAGE_MODEL, CLASSIFIER, ENCODER = "language model", "classifier", "encoder"


class ExploreError(ValueError):
    """Input the page cannot be answered for (an empty prompt, a layer that does not exist, ...): its
    message is one line to show on the page."""


def token_piece(tokenizer, token_id: int) -> str:
    """The text one token id stands for: WordPiece's own piece ("##ing", "[CLS]"); a byte-level BPE
    token's bytes, written as \\xNN escapes when they are part of a character; else ``decode``."""
    inverse = getattr(tokenizer, "inverse", None)                    # WordPiece
    if inverse is not None:
        return inverse[token_id] if 0 <= token_id < len(inverse) else f"<id {token_id}>"
    try:
        raw = tokenizer.token_bytes(token_id) if hasattr(tokenizer, "token_bytes") else None
        if raw is None:
            return tokenizer.decode([token_id])
    except (ValueError, KeyError, IndexError):
        return f"<id {token_id}>"                                     # the model's, not the tokenizer's
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02x}" for b in raw)                    # half a character


def model_kind(model: Module) -> tuple[str, int]:
    """What the model is, and the width of its head: (LANGUAGE_MODEL, vocab_size) for a GPT whose head
    predicts the vocabulary, (CLASSIFIER, classes) for a GPT with a class head or an EncoderClassifier,
    (ENCODER, vocab_size) for an EncoderModel with its masked-language-model head."""
    if isinstance(model, EncoderClassifier):
        return CLASSIFIER, model.num_classes
    if isinstance(model, EncoderModel):
        if model.mlm_head is None:
            raise ExploreError("this encoder has no masked-language-model head: there is nothing to predict")
        return ENCODER, model.cfg["vocab_size"]
    if isinstance(model, GPTModel):
        with no_grad():
            width = model(np.zeros((1, 1), np.int64)).shape[-1]      # the head's outputs, whatever the head
        return (LANGUAGE_MODEL if width == model.cfg["vocab_size"] else CLASSIFIER), width
    raise ExploreError(f"explore shows a GPTModel, an EncoderModel or an EncoderClassifier, "
                       f"not a {type(model).__name__}")


def _blocks(model: Module) -> list[Module]:
    if isinstance(model, EncoderClassifier):
        model = model.encoder
    return list(model.trf_blocks if isinstance(model, GPTModel) else model.blocks)


class _StopForward(Exception):
    """Cuts a forward pass short once the outputs wanted are in (``outputs_of(stop_after=...)``)."""


@contextlib.contextmanager
def outputs_of(modules: Sequence[Module], stop_after: Module | None = None) -> Iterator[list[np.ndarray]]:
    """While inside, each of ``modules`` appends what its forward returns to the list this yields,
    in call order (PyTorch's forward hooks, in a few lines). ``Module.__call__`` calls
    ``self.forward``, so an instance attribute of that name stands in for the class's method until it
    is deleted again. With ``stop_after`` (one of ``modules``), the forward pass in the ``with`` body
    ends right after that module's output is kept: what comes after is not computed."""
    outputs: list[np.ndarray] = []

    def recording(module: Module):
        forward = module.forward

        def forward_and_keep(*args, **kwargs):
            outputs.append(forward(*args, **kwargs))
            if module is stop_after:
                raise _StopForward
            return outputs[-1]
        return forward_and_keep

    for module in modules:
        module.forward = recording(module)
    try:
        yield outputs
    except _StopForward:
        pass
    finally:
        for module in modules:
            del module.forward                                       # the class's forward again


def residual_streams(model: Module, idx: np.ndarray) -> list[np.ndarray]:
    """The residual stream (B, T, C) after the embeddings and after each block, from the model's own
    forward pass (so it holds for any family of blocks), cut short after the last block: the head's
    (T, vocab) logits are not computed."""
    blocks = _blocks(model)
    with no_grad(), outputs_of([model.drop_emb, *blocks], stop_after=blocks[-1]) as streams:
        model(idx)
    return streams


def _rounded(values: np.ndarray, digits: int = 6) -> list:
    return np.round(values.astype(np.float64), digits).tolist()


class Explorer:
    """A model and its tokenizer, and every view the explore page asks for (module docstring).

    ``labels`` name a classifier's classes ("not spam", "spam" by default for two); ``max_length``
    and ``pad_token_id`` pad a text as the classifier was trained (a finetune-spam checkpoint records
    both). ``name`` says on the page which model this is, ``prompt`` is the text the page starts with
    (a pretrain run records the prompt of its samples)."""

    def __init__(self, model: Module, tokenizer, *, name: str = "", prompt: str | None = None,
                 labels: Sequence[str] | None = None, max_length: int | None = None,
                 pad_token_id: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.prompt = prompt
        self.kind, self.head_width = model_kind(model)
        self.cfg = model.cfg
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.labels = list(labels) if labels is not None else None
        self.lock = threading.Lock()

    # -- what the page needs to know first ------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """The model's kind, name and sizes (the page builds its controls from them)."""
        c = self.cfg
        return {"kind": self.kind, "name": self.name, "prompt": self.prompt, "n_layers": c["n_layers"],
                "n_heads": c["n_heads"], "context_length": c["context_length"], "vocab_size": c["vocab_size"],
                "emb_dim": c["emb_dim"],
                "parameters": int(sum(p.size for p in self.model.parameters())),
                "labels": self.class_labels() if self.kind == CLASSIFIER else None,
                "mask_token": "[MASK]" if self.kind == ENCODER else None,
                "top": TOP, "lens_positions": LENS_POSITIONS, "max_new_tokens": MAX_NEW_TOKENS}

    def class_labels(self) -> list[str]:
        """A classifier's class names: ``labels``, or finetune-spam's two, or "class i"."""
        n = self.head_width
        if self.labels is not None and len(self.labels) == n:
            return self.labels
        return ["not spam", "spam"] if n == 2 else [f"class {i}" for i in range(n)]

    # -- tokens -------------------------------------------------------------------------------------
    def token(self, token_id: int) -> dict[str, Any]:
        return {"id": int(token_id), "piece": token_piece(self.tokenizer, int(token_id))}

    def encode(self, text: str, what: str = "the text") -> list[int]:
        """The ids of ``text``; an empty text is an ExploreError (``what`` names it)."""
        if not isinstance(text, str) or not text:
            raise ExploreError(f"{what} is empty: type a few words")
        return [int(i) for i in self.tokenizer.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, as the tokenizer decodes it."""
        return self.tokenizer.decode(list(ids))

    def tokens(self, text: str) -> dict[str, Any]:
        """``text`` as the tokenizer splits it: [{"id", "piece"}, ...]."""
        return {"tokens": [self.token(i) for i in self.encode(text)]}

    def check_ids(self, ids: object) -> np.ndarray:
        """``ids`` (a list of integers from the page) as a (1, T) array the model can read, or an
        ExploreError naming the first problem: empty, longer than the context, an unknown id."""
        if not isinstance(ids, list) or not ids:
            raise ExploreError("ids must be a non-empty list of token ids")
        bad = next((i for i in ids if type(i) is not int), None)
        if bad is not None:
            raise ExploreError(f"token ids are whole numbers, got {bad!r}")
        context, vocab = self.cfg["context_length"], self.cfg["vocab_size"]
        if len(ids) > context:
            raise ExploreError(f"{len(ids)} tokens are more than the model's context of {context}: "
                               f"send the last {context}")
        unknown = next((i for i in ids if not 0 <= i < vocab), None)
        if unknown is not None:
            raise ExploreError(f"token id {unknown} is not in the vocabulary (ids 0 to {vocab - 1})")
        return np.asarray([ids], dtype=np.int64)

    # -- generation -----------------------------------------------------------------------------------
    def generate(self, prompt: str, max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None
                 ) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
        """The prompt's tokens, and an iterator over the generation's steps, each
        {"step", "id", "piece", "prob", "rank", "top": [{"id", "piece", "prob"}, ...]}: the token
        picked, its probability and rank, and the TOP most likely tokens. Everything is checked
        before the first step, so bad input raises here and never halfway through a stream."""
        if self.kind != LANGUAGE_MODEL:
            raise ExploreError(f"this model is a {self.kind}: it does not generate text")
        ids = self.encode(prompt, "the prompt")
        context = self.cfg["context_length"]
        if len(ids) > context:
            raise ExploreError(f"the prompt is {len(ids)} tokens, more than the model's context of {context} "
                               f"tokens: shorten it")
        if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ExploreError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS}, got {max_new_tokens}")
        if seed is None:                             # chosen here and shown, so that a link repeats the run
            seed = int(np.random.default_rng().integers(2**31))
        try:
            steps = generate_steps(self.model, np.asarray([ids], dtype=np.int64), max_new_tokens, context,
                                   temperature, top_k, top_p, seed=seed)
        except (TypeError, ValueError) as err:
            raise ExploreError(str(err)) from None
        prompt_view = {"tokens": [self.token(i) for i in ids], "greedy": temperature == 0, "seed": seed}
        return prompt_view, self._steps(steps, temperature, top_k, top_p)

    def _steps(self, steps: Iterator, temperature: float, top_k: int | None, top_p: float | None
               ) -> Iterator[dict[str, Any]]:
        step = 0
        while True:
            with self.lock:                          # one step at a time: other requests get their turn
                item = next(steps, None)
                if item is None:
                    return
                logits, next_ids = item
                # the distribution the token is drawn from; greedy shows the model's own (temperature 1)
                probs = softmax(sampling_logits(logits, temperature or 1.0, top_k, top_p))[0]   # (V,)
            yield {"step": step, **self._candidates(probs, int(next_ids[0]))}
            step += 1

    def _candidates(self, probs: np.ndarray, chosen: int) -> dict[str, Any]:
        top = np.argpartition(-probs, TOP - 1)[:TOP] if probs.size > TOP else np.arange(probs.size)
        top = top[np.argsort(-probs[top], kind="stable")]
        return {**self.token(chosen), "prob": round(float(probs[chosen]), 6),
                "rank": int((probs > probs[chosen]).sum()) + 1,
                "top": [{**self.token(i), "prob": round(float(probs[i]), 6)} for i in top if probs[i] > 0]}

    # -- attention -----------------------------------------------------------------------------------
    def attention(self, ids: object, layer: int, head: int) -> dict[str, Any]:
        """The attention weights (T, T) of ``head`` in ``layer`` over the tokens ``ids``: row i is how
        much token i attends to each token j (a causal layer gives the future 0)."""
        idx = self.check_ids(ids)
        n_layers, n_heads = self.cfg["n_layers"], self.cfg["n_heads"]
        if not 0 <= layer < n_layers:
            raise ExploreError(f"layer {layer} does not exist: this model has layers 0 to {n_layers - 1}")
        if not 0 <= head < n_heads:
            raise ExploreError(f"head {head} does not exist: each layer has heads 0 to {n_heads - 1}")
        with self.lock:
            weights = attention_weights(self.model, idx)[layer, 0, head]       # (T, T), the layer's own
        return {"layer": layer, "head": head, "tokens": [self.token(i) for i in idx[0]],
                "causal": self.kind != ENCODER and not isinstance(self.model, EncoderClassifier),
                "weights": _rounded(weights)}

    # -- logit lens ----------------------------------------------------------------------------------
    def logit_lens(self, ids: object, positions: object = None) -> dict[str, Any]:
        """For the residual stream after the embeddings and after each block: the LENS_TOP most likely
        tokens (classes, for a classifier) at each of ``positions`` (default: the last LENS_POSITIONS)
        through the model's final norm and head. Rows: "embeddings", "block 0", ...; the last row is
        what the model predicts."""
        idx = self.check_ids(ids)
        if isinstance(self.model, EncoderClassifier):
            raise ExploreError("the logit lens reads a head that predicts from every position; this "
                               "classifier pools its tokens first")
        t = idx.shape[1]
        if positions is None:
            positions = list(range(max(0, t - LENS_POSITIONS), t))
        if (not isinstance(positions, list) or not positions or len(positions) > LENS_POSITIONS
                or any(type(p) is not int or not 0 <= p < t for p in positions)):
            raise ExploreError(f"positions must list 1 to {LENS_POSITIONS} token positions between 0 and "
                               f"{t - 1}")
        model = self.model
        with self.lock, no_grad():
            streams = residual_streams(model, idx)                            # embeddings, then each block
            residual = np.stack([s[0, positions] for s in streams])           # (L+1, P, C)
            if isinstance(model, GPTModel):
                logits = model.out_head(model.final_norm(residual))           # (L+1, P, V)
            else:                                                             # the encoder's MLM head
                h = residual if model.final_norm is None else model.final_norm(residual)
                logits = model.mlm_head(h)
            probs = softmax(logits.astype(np.float64))
        top = min(LENS_TOP, probs.shape[-1])
        best = np.argsort(-probs, axis=-1, kind="stable")[..., :top]          # (L+1, P, top)
        name = self._label if self.kind == CLASSIFIER else self.token
        rows = [[[{**name(int(i)), "prob": round(float(probs[r, p, i]), 6)} for i in best[r, p]]
                 for p in range(len(positions))] for r in range(probs.shape[0])]
        return {"positions": positions, "tokens": [self.token(i) for i in idx[0]],
                "layers": ["embeddings", *(f"block {i}" for i in range(len(rows) - 1))], "rows": rows}

    def _label(self, i: int) -> dict[str, Any]:
        return {"id": i, "piece": self.class_labels()[i]}

    # -- classifier and encoder ----------------------------------------------------------------------
    def classify(self, text: str) -> dict[str, Any]:
        """A classifier's class probabilities for ``text``, and the tokens it reads: padded as in
        training (``classify``'s way), so ``padding`` pad tokens end them and the last one is read."""
        if self.kind != CLASSIFIER:
            raise ExploreError(f"this model is a {self.kind}, not a classifier")
        ids = self.encode(text)
        with self.lock:
            if isinstance(self.model, EncoderClassifier):
                self.check_ids(ids)
                with no_grad():
                    probs = softmax(self.model(np.asarray([ids])).astype(np.float64))[0]
                padding = 0
            else:
                from numpy_gpt.finetune.classifier import class_probabilities, classifier_input

                pad = self.pad_token_id
                if pad is None:                         # finetune-spam pads with the end-of-text id
                    pad = getattr(self.tokenizer, "eot_token", None) or 0
                read = classifier_input(text, self.model, self.tokenizer, self.max_length, pad)
                padding = len(read) - min(len(ids), len(read))
                ids = read
                probs = class_probabilities(text, self.model, self.tokenizer, self.max_length, pad)
        labels = self.class_labels()
        return {"tokens": [self.token(i) for i in ids], "padding": padding,
                "classes": [{"label": label, "prob": round(float(p), 6)} for label, p in zip(labels, probs,
                                                                                              strict=True)]}

    def fill_mask(self, text: str) -> dict[str, Any]:
        """An encoder's TOP candidates for each [MASK] in ``text`` (``mlm.fill_mask``)."""
        from numpy_gpt.mlm import fill_mask

        if self.kind != ENCODER:
            raise ExploreError(f"this model is a {self.kind}: fill-mask needs an encoder (pretrain-mlm)")
        ids = self.encode(text)
        with self.lock:
            try:
                filled = fill_mask(self.model, self.tokenizer, text, top_k=TOP)
            except ValueError as err:                   # no [MASK], or longer than the context
                raise ExploreError(str(err)) from None
        masks = [i for i, t in enumerate(ids) if t == self.tokenizer.mask_id]
        return {"tokens": [self.token(i) for i in ids],
                "masks": [{"position": p, "candidates": [{"piece": piece, "prob": round(prob, 6)}
                                                         for piece, prob in candidates]}
                          for p, candidates in zip(masks, filled, strict=True)]}
