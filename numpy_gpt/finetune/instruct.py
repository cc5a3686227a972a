"""Instruction fine-tuning (chapter 7 of the book): teach a pretrained GPT to follow instructions.

Each training example is an {instruction, input, output} entry turned into one text in the Alpaca
prompt format (``format_input`` plus ``"\\n\\n### Response:\\n" + output``). The model is trained on it
with the ordinary next-token loss of chapter 5, with two changes made by ``custom_collate_fn``:

* sequences are padded per batch with the end-of-text id 50256; the first end-of-text after a text is
  a target (the model must learn to stop), every later padding position is ``ignore_index`` (-100),
  which ``cross_entropy`` leaves out of the mean;
* optionally (the book's exercise 7.2) the prompt tokens are masked too, so only the response is
  learned.

After training, ``generate_responses`` answers the test entries and ``save_responses`` writes them with a
``model_response`` field for scoring (``numpy_gpt.finetune.judge``). ``response_loss`` measures the
model on the reference answers themselves: the mean cross-entropy of the response tokens (and the
end-of-text after them), whose exp is their perplexity. It moves smoothly while a tiny model's
generated answers are still wrong, so it shows progress that exact match and F1 cannot.

Any pretrained model works: the padding and stop id is its tokenizer's end-of-text
(``finetune/tokens.py``; GPT-2's 50256 by default). Texts longer than the model's context follow one
rule in training and in use, so that an answer starts at the same position in both (positions are
learned, and a model trained only on windows cut to exactly its context learns "the last position
is end-of-text"): a prompt keeps its last ``prompt_budget(context)`` tokens, half the context,
losing the fixed header first; the answer gets the rest, and an answer that still does not fit
loses its end, with no end-of-text learned where it was cut (``InstructionDataset(max_length=...)``,
``respond``). The book never meets
this case: GPT-2's 1,024 tokens hold every entry of its data. A model pretrained here with a
64-token context does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from numpy_gpt.data import DataLoader
from numpy_gpt.finetune.data import save_json
from numpy_gpt.generate import generate
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import inference

PROMPT_HEADER = ("Below is an instruction that describes a task. "
                 "Write a response that appropriately completes the request.")
RESPONSE_HEADER = "\n\n### Response:\n"


def prompt_budget(context_length: int) -> int:
    """How many prompt tokens a model with this context keeps (the last ones): half the context (the
    larger half), leaving the other half for the answer."""
    return context_length - context_length // 2


def format_input(entry: dict) -> str:
    """The Alpaca-style prompt: header, ``### Instruction:`` and, if the input is not empty,
    ``### Input:``. The response header is not included (see ``format_response``)."""
    instruction_text = f"{PROMPT_HEADER}\n\n### Instruction:\n{entry['instruction']}"
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_response(entry: dict) -> str:
    """What follows the prompt in a training text: ``\\n\\n### Response:\\n`` and the output."""
    return f"{RESPONSE_HEADER}{entry['output']}"


class InstructionDataset:
    """Pre-tokenized instruction examples: item i is the token ids (list of int) of
    ``format_input(entry) + format_response(entry)``.

    ``prompt_lengths[i]`` is the number of tokens of ``format_input(entry)`` alone (what
    ``custom_collate_fn`` masks when the prompt is left out of the loss). With ``max_length`` (the
    model's context), texts are cut as the module docstring says: a prompt keeps its last
    ``prompt_budget(max_length)`` tokens, then the whole text its first ``max_length`` + 1. The loader
    cuts batches to ``max_length`` columns, so the extra token is the last target of a cut answer
    and no end-of-text is appended there. ``num_truncated`` counts the examples cut, and
    ``context_needed`` is the smallest context that would cut none (twice the longest prompt, less
    one, or the longest text, whichever is larger).
    """

    def __init__(self, data: Sequence[dict], tokenizer, max_length: int | None = None):
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.data = list(data)
        self.max_length = max_length
        self.encoded_texts: list[list[int]] = []
        self.prompt_lengths: list[int] = []
        self.num_truncated = 0
        self.context_needed = 1
        for entry in self.data:
            prompt = format_input(entry)
            ids = list(tokenizer.encode(prompt + format_response(entry)))
            prompt_length = len(tokenizer.encode(prompt))
            self.context_needed = max(self.context_needed, 2 * prompt_length - 1, len(ids))
            if max_length is not None:
                cut = max(prompt_length - prompt_budget(max_length), 0)     # the prompt's first tokens
                self.num_truncated += cut > 0 or len(ids) > max_length
                ids, prompt_length = ids[cut:][:max_length + 1], prompt_length - cut
            self.encoded_texts.append(ids)
            self.prompt_lengths.append(prompt_length)

    def __getitem__(self, index: int) -> list[int]:
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def custom_collate_fn(batch: Sequence[Sequence[int]], pad_token_id: int = 50256, ignore_index: int = -100,
                      allowed_max_length: int | None = None,
                      prompt_lengths: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pad a list of token-id sequences into (inputs, targets), two int64 arrays (B, L).

    Each sequence gets one end-of-text token (``pad_token_id``) appended, then all are padded with it
    to the longest length in this batch plus one; inputs drop the last column and targets the first
    (targets are inputs shifted by one). In the targets, the appended end-of-text stays (the model
    learns to stop) and every later padding position becomes ``ignore_index``. The book finds these
    by value (every pad id after the first); here they are found by position, which is the same
    unless a text itself contains the pad id.

    With ``prompt_lengths`` (tokens of each prompt), the targets that are prompt tokens
    (positions 0 .. prompt_length - 2) are set to ``ignore_index`` too. ``allowed_max_length``
    truncates both arrays to that many columns.
    """
    if len(batch) == 0:
        raise ValueError("custom_collate_fn got an empty batch")
    lengths = np.array([len(item) for item in batch], dtype=np.int64)            # (B,)
    batch_max_length = int(lengths.max()) + 1
    padded = np.full((len(batch), batch_max_length), pad_token_id, dtype=np.int64)
    for row, item in zip(padded, batch, strict=True):
        row[:len(item)] = item
    inputs = padded[:, :-1]                                                       # (B, L)
    targets = padded[:, 1:].copy()                                                # (B, L)
    positions = np.arange(batch_max_length - 1)[None, :]                          # (1, L)
    targets[positions >= lengths[:, None]] = ignore_index       # keep target len-1 (the end-of-text)
    if prompt_lengths is not None:
        if len(prompt_lengths) != len(batch):
            raise ValueError(f"prompt_lengths has {len(prompt_lengths)} entries for a batch of {len(batch)}")
        prompt = np.asarray(prompt_lengths, dtype=np.int64)[:, None]               # (B, 1)
        targets[positions < prompt - 1] = ignore_index
    if allowed_max_length is not None:
        inputs, targets = inputs[:, :allowed_max_length], targets[:, :allowed_max_length]
    return np.ascontiguousarray(inputs), np.ascontiguousarray(targets)


class InstructionDataLoader(DataLoader):
    """Batches (inputs, targets) of an ``InstructionDataset``, each padded on its own by
    ``custom_collate_fn`` (the book's ``DataLoader(..., collate_fn=customized_collate_fn)``).

    Order, shuffling per epoch and ``len`` are those of ``numpy_gpt.data.DataLoader``.
    ``mask_prompt`` leaves the prompt tokens out of the loss (exercise 7.2). Batches are cut to
    ``allowed_max_length`` columns and to the dataset's ``max_length``, whichever is smaller.
    """

    def __init__(self, dataset: InstructionDataset, batch_size: int = 8, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 123, *, pad_token_id: int = 50256,
                 ignore_index: int = -100, allowed_max_length: int | None = None, mask_prompt: bool = False):
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        self.pad_token_id, self.ignore_index = pad_token_id, ignore_index
        limits = [n for n in (allowed_max_length, getattr(dataset, "max_length", None)) if n is not None]
        self.allowed_max_length, self.mask_prompt = min(limits, default=None), mask_prompt

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(self.epoch)
        for b in range(len(self)):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            prompt_lengths = [self.dataset.prompt_lengths[i] for i in indices] if self.mask_prompt else None
            yield custom_collate_fn([self.dataset[i] for i in indices], self.pad_token_id, self.ignore_index,
                                    self.allowed_max_length, prompt_lengths)
        self.epoch += 1


def response_loss(model, dataset: InstructionDataset, batch_size: int = 8, *,
                  pad_token_id: int = 50256) -> tuple[float, int]:
    """(mean cross-entropy per response token, number of those tokens) over the whole dataset.

    The response tokens are the answer and the end-of-text after it: the prompt is masked as in
    exercise 7.2 (``mask_prompt``). Each batch's mean is weighted by its token count, so this is
    the mean over all N tokens: loss = -(1/N) sum log p(token | what precedes it); exp(loss) is
    their perplexity. Runs in eval mode without gradients."""
    loader = InstructionDataLoader(dataset, batch_size, pad_token_id=pad_token_id, mask_prompt=True)
    total, count = 0.0, 0
    with inference(model):
        for inputs, targets in loader:                          # (B, L) each
            n = int((targets != -100).sum())
            if n:
                total += cross_entropy(model(inputs), targets)[0] * n
                count += n
    return (total / count if count else float("nan")), count


# -- answering ---------------------------------------------------------------------------------------
def extract_response(generated_text: str) -> str:
    """The answer in what the model wrote after the prompt: the ``### Response:`` header removed and
    the surrounding whitespace stripped (as the book does)."""
    return generated_text.replace("### Response:", "").strip()


def respond(model, tokenizer, entry: dict, max_new_tokens: int = 256, *, eos_id: int | None = 50256,
            temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
            seed: int | None = None) -> str:
    """Generate the model's answer to one {instruction, input} entry (greedy by default), stopping at
    ``eos_id``. The prompt is ``format_input(entry)``, cut to its last ``prompt_budget(context)``
    tokens as in training; only the new tokens are decoded."""
    new_ids = _answer_ids(model, tokenizer.encode(format_input(entry)), max_new_tokens, eos_id=eos_id,
                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return extract_response(tokenizer.decode(new_ids))


def respond_with_chat_template(model, tokenizer, messages: Sequence[dict], max_new_tokens: int = 256, *,
                               temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                               seed: int | None = None) -> str:
    """The answer of a model from a Hugging Face folder (``load_hf``) to a conversation,
    [{"role": "user", "content": ...}, ...]: the prompt is the model's own chat template
    (tokenizer_config.json's, rendered by tokenizers/chat_template.py, ending where the assistant's
    turn begins), and generation stops at the tokenizer's end-of-turn token. A folder without a
    template (a base model) gets the last message's text as a plain prompt to continue."""
    from numpy_gpt.tokenizers.chat_template import ChatTemplateError

    try:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(prompt, allowed_special="all")
    except ChatTemplateError:
        prompt_ids = tokenizer.encode(messages[-1]["content"])
    eos_id = getattr(tokenizer, "eot_token", None)
    new_ids = _answer_ids(model, prompt_ids, max_new_tokens, eos_id=eos_id, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed)
    return tokenizer.decode(new_ids).strip()


def _answer_ids(model, prompt: Sequence[int], max_new_tokens: int, *, eos_id: int | None,
                **sampling) -> list[int]:
    """The ids ``generate`` appends to ``prompt`` (cut to its last ``prompt_budget(context)`` ids, as
    in training), up to the first ``eos_id``."""
    context_size = model.cfg["context_length"]
    prompt_ids = np.asarray(prompt, dtype=np.int64)[None, -prompt_budget(context_size):]   # (1, T)
    token_ids = generate(model, prompt_ids, max_new_tokens, context_size, eos_id=eos_id, **sampling)
    new_ids = token_ids[0, prompt_ids.shape[1]:].tolist()
    if eos_id is not None and eos_id in new_ids:
        new_ids = new_ids[:new_ids.index(eos_id)]
    return new_ids


def generate_responses(model, tokenizer, entries: Sequence[dict], max_new_tokens: int = 256, *,
                       eos_id: int | None = 50256, progress: bool = False) -> list[dict]:
    """Copies of ``entries``, each with the model's greedy answer in ``model_response``."""
    out = []
    on_terminal = sys.stdout.isatty()          # a log file gets a line every 10 answers, not a \r stream
    for i, entry in enumerate(entries):
        answer = respond(model, tokenizer, entry, max_new_tokens, eos_id=eos_id)
        out.append({**entry, "model_response": answer})
        if progress and on_terminal:
            print(f"\rgenerated {i + 1}/{len(entries)} responses", end="", flush=True)
        elif progress and ((i + 1) % 10 == 0 or i + 1 == len(entries)):
            print(f"generated {i + 1}/{len(entries)} responses", flush=True)
    if progress and on_terminal:
        print()
    return out


def save_responses(entries: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write the entries with their ``model_response`` as indented JSON (atomically), as the book's
    ``instruction-data-with-response.json``."""
    missing = [i for i, e in enumerate(entries) if "model_response" not in e]
    if missing:
        raise ValueError(f"entries {missing[:10]} have no model_response; run generate_responses first")
    return save_json(list(entries), path)
