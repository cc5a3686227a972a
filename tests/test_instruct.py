"""Tests for numpy_gpt/finetune/instruct.py: the Alpaca format, custom_collate_fn's padding and masking
(hand-made batches and hypothesis), the loader, and a tiny model that learns a synthetic instruction
task ("Reverse the letters") from scratch."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.finetune.instruct import (
    InstructionDataLoader,
    InstructionDataset,
    custom_collate_fn,
    extract_response,
    format_input,
    generate_responses,
    prompt_budget,
    respond,
    response_loss,
    save_responses,
)
from numpy_gpt.finetune.judge import evaluate_responses
from numpy_gpt.model import GPTModel
from numpy_gpt.optim import AdamW
from numpy_gpt.train import train_model_simple

torch = reference("torch")


class WordTokenizer:
    """Words and punctuation marks (each with the space before it, as GPT-2's BPE does) and other
    whitespace characters as tokens; decode joins them back exactly. Id 0 is the end-of-text token."""

    EOS = "<|endoftext|>"
    PATTERN = re.compile(r" ?\w+| ?[^\w\s]|\s")

    def __init__(self, texts):
        pieces = sorted({p for t in texts for p in self.PATTERN.findall(t)})
        self.vocab = [self.EOS, *pieces]
        self.ids = {p: i for i, p in enumerate(self.vocab)}
        self.eos_id = 0

    def encode(self, text):
        return [self.ids[p] for p in self.PATTERN.findall(text)]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


# -- the prompt format --------------------------------------------------------------------------
def test_format_input_is_the_alpaca_format():
    entry = {"instruction": "Identify the correct spelling.", "input": "Ocassion", "output": "Occasion"}
    assert format_input(entry) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\nIdentify the correct spelling.\n\n### Input:\nOcassion")
    assert format_input({**entry, "input": ""}) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes "
        "the request.\n\n### Instruction:\nIdentify the correct spelling.")
    assert extract_response("\n\n### Response:\nOccasion.\n") == "Occasion."


# -- custom_collate_fn --------------------------------------------------------------------------
def test_collate_the_books_example():
    inputs, targets = custom_collate_fn([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(inputs, [[0, 1, 2, 3, 4],
                                           [5, 6, 50256, 50256, 50256],
                                           [7, 8, 9, 50256, 50256]])
    np.testing.assert_array_equal(targets, [[1, 2, 3, 4, 50256],
                                            [6, 50256, -100, -100, -100],
                                            [8, 9, 50256, -100, -100]])
    assert inputs.dtype == targets.dtype == np.int64


def test_collate_masks_prompts_and_truncates_by_hand():
    batch = [[10, 11, 12, 13, 14], [20, 21, 22]]
    inputs, targets = custom_collate_fn(batch, pad_token_id=0, prompt_lengths=[3, 2], allowed_max_length=4)
    # full targets before truncation: [11, 12, 13, 14, 0] and [21, 22, 0, -100, -100]; a prompt of p
    # tokens hides the first p - 1 targets (those predict prompt tokens)
    np.testing.assert_array_equal(inputs, [[10, 11, 12, 13], [20, 21, 22, 0]])
    np.testing.assert_array_equal(targets, [[-100, -100, 13, 14], [-100, 22, 0, -100]])
    with pytest.raises(ValueError, match="empty batch"):
        custom_collate_fn([])
    with pytest.raises(ValueError, match="prompt_lengths"):
        custom_collate_fn(batch, prompt_lengths=[1])


def reference_collate(batch, pad, ignore, allowed, prompt_lengths):
    """Row by row, as the book writes it (with the pad id absent from the texts, finding the padding by
    value is the same as by position)."""
    width = max(len(item) for item in batch) + 1
    rows_in, rows_t = [], []
    for k, item in enumerate(batch):
        padded = list(item) + [pad] * (width - len(item))
        inputs, targets = padded[:-1], padded[1:]
        pads = [j for j, t in enumerate(targets) if t == pad]
        for j in pads[1:]:
            targets[j] = ignore
        if prompt_lengths is not None:
            for j in range(prompt_lengths[k] - 1):
                targets[j] = ignore
        if allowed is not None:
            inputs, targets = inputs[:allowed], targets[:allowed]
        rows_in.append(inputs)
        rows_t.append(targets)
    return np.array(rows_in), np.array(rows_t)


@given(st.lists(st.lists(st.integers(0, 999), min_size=1, max_size=12), min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(1, 14)), st.booleans(), st.data())
def test_collate_matches_the_row_by_row_reference(batch, allowed, mask, data):
    prompt_lengths = ([data.draw(st.integers(1, len(item))) for item in batch] if mask else None)
    inputs, targets = custom_collate_fn(batch, pad_token_id=50256, ignore_index=-100,
                                        allowed_max_length=allowed, prompt_lengths=prompt_lengths)
    ref_inputs, ref_targets = reference_collate(batch, 50256, -100, allowed, prompt_lengths)
    np.testing.assert_array_equal(inputs, ref_inputs)
    np.testing.assert_array_equal(targets, ref_targets)
    kept = (targets != -100).sum(axis=1)
    if allowed is None and not mask:
        assert kept.tolist() == [len(item) for item in batch]   # every real next token + one end-of-text


# -- dataset and loader -------------------------------------------------------------------------
ENTRIES = [{"instruction": "Reverse the letters.", "input": "b c d", "output": "d c b"},
           {"instruction": "Say hi.", "input": "", "output": "hi"},
           {"instruction": "Reverse the letters.", "input": "e f", "output": "f e"}]


def test_dataset_and_loader():
    tok = WordTokenizer([format_input(e) + "\n\n### Response:\n" + e["output"] for e in ENTRIES])
    ds = InstructionDataset(ENTRIES, tok)
    assert len(ds) == 3
    for entry, ids, n_prompt in zip(ENTRIES, ds.encoded_texts, ds.prompt_lengths, strict=True):
        assert tok.decode(ids) == format_input(entry) + "\n\n### Response:\n" + entry["output"]
        assert ids[:n_prompt] == tok.encode(format_input(entry))
    loader = InstructionDataLoader(ds, batch_size=2, shuffle=True, seed=1, pad_token_id=tok.eos_id,
                                   mask_prompt=True)
    assert len(loader) == 2
    first = [x.tolist() for x, _ in loader]
    assert loader.epoch == 1 and [len(x) for x in first] == [2, 1]
    again = InstructionDataLoader(ds, batch_size=2, shuffle=True, seed=1, pad_token_id=tok.eos_id)
    assert [x.tolist() for x, _ in again] == first                 # same seed and epoch, same order
    orders = {tuple(tuple(map(tuple, x)) for x, _ in loader) for _ in range(6)}
    assert len(orders) > 1                                        # a new order in later epochs
    for inputs, targets in loader:
        assert inputs.shape == targets.shape
    _, targets = next(iter(InstructionDataLoader(ds, batch_size=3, pad_token_id=tok.eos_id,
                                                 mask_prompt=True)))
    for row, n_prompt, ids in zip(targets, ds.prompt_lengths, ds.encoded_texts, strict=True):
        kept = row[row != -100]
        assert kept.tolist() == ids[n_prompt:] + [tok.eos_id]      # only the response and the end
    assert len(InstructionDataLoader(ds, batch_size=2, drop_last=True)) == 1


# -- a tiny model learns an instruction task ----------------------------------------------------
LETTERS = "bcdfghjk"


def reverse_task(rng, n):
    entries = []
    for _ in range(n):
        word = rng.choice(list(LETTERS), size=3)
        entries.append({"instruction": "Reverse the letters.", "input": " ".join(word),
                        "output": " ".join(word[::-1])})
    return entries


def test_tiny_model_learns_to_reverse(tmp_path):
    rng = np.random.default_rng(0)
    entries = reverse_task(rng, 300)
    train, test = entries[:260], entries[260:]
    tok = WordTokenizer([format_input(e) + "\n\n### Response:\n" + e["output"] for e in entries])
    # One attention layer is enough: the prompt has a fixed length, so the k-th answer letter copies
    # the token at a fixed position. Learning that takes ~150 steps (seeds 1, 7, 42, 123 all reach
    # exact match 1.0 within 12 epochs with these settings).
    cfg = {"vocab_size": len(tok.vocab), "context_length": 64, "emb_dim": 48, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    model = GPTModel(cfg, seed=123)
    # prompts of 41 tokens keep their last 32 (prompt_budget(64)), as generate_responses cuts them
    train_loader = InstructionDataLoader(InstructionDataset(train, tok, max_length=64), batch_size=16,
                                         shuffle=True, drop_last=True, pad_token_id=tok.eos_id,
                                         mask_prompt=True)
    val_loader = InstructionDataLoader(InstructionDataset(test, tok, max_length=64), batch_size=20,
                                       pad_token_id=tok.eos_id, mask_prompt=True)
    optimizer = AdamW(model.parameters(), lr=5e-3, weight_decay=0.1)
    train_losses, val_losses, _ = train_model_simple(
        model, train_loader, val_loader, optimizer, num_epochs=12, eval_freq=48, eval_iter=2,
        start_context=format_input(test[0]), tokenizer=tok, progress=False)
    assert val_losses[-1] < 0.2 * val_losses[0]

    answered = generate_responses(model, tok, test, max_new_tokens=20, eos_id=tok.eos_id)
    scores = evaluate_responses(answered)
    assert scores["exact_match"] >= 0.9, answered[:5]
    path = save_responses(answered, tmp_path / "responses.json")
    assert '"model_response"' in path.read_text(encoding="utf-8")


# -- the command line ---------------------------------------------------------------------------
def run_cli(argv):
    """The command through numpy_gpt.cli.main: its flag checks and its one-line error path."""
    from numpy_gpt.cli import main
    return main(argv)


def test_cli_finetune_instruct_then_chat(tmp_path, gpt2_vocab_dir, monkeypatch, capsys):
    import io
    import json
    import socket

    data = reverse_task(np.random.default_rng(1), 40)
    (tmp_path / "data.json").write_text(json.dumps(data), encoding="utf-8")
    with socket.socket() as s:                        # a port where no Ollama answers
        s.bind(("127.0.0.1", 0))
        no_server = f"http://127.0.0.1:{s.getsockname()[1]}/api/chat"
    out = tmp_path / "out"
    vocab = ["--vocab-dir", str(gpt2_vocab_dir)]
    rc = run_cli(["finetune-instruct", "--init", "scratch", "--preset", "tiny", "--data",
                  str(tmp_path / "data.json"), "--limit", "8", "--out", str(out), "--epochs", "1",
                  "--batch-size", "4", "--lr", "1e-3", "--eval-freq", "1", "--eval-iter", "1",
                  "--max-new-tokens", "4", "--mask-prompt", "--ollama-url", no_server, *vocab])
    assert rc == 0
    assert "skipping the LLM judge" in capsys.readouterr().out
    responses = json.loads((out / "instruction-data-with-response.json").read_text(encoding="utf-8"))
    assert len(responses) == 4 and all("model_response" in r for r in responses)    # 10 % of 40
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["offline"]["n"] == 4 and 0 <= metrics["offline"]["f1"] <= 1 and "ollama" not in metrics

    chat = ["chat", "--checkpoint", str(out / "instruct.npz"), "--max-new-tokens", "3", *vocab]
    assert run_cli([*chat, "--instruction", "Reverse the letters.", "--input", "b c d"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("Reverse the letters.\nb c d\nquit\n"))
    assert run_cli(chat) == 0
    assert capsys.readouterr().out.count("Instruction> ") == 2


def test_long_prompts_keep_their_last_tokens_and_answers_their_first():
    """The stated rule: a prompt keeps its last prompt_budget(context) tokens, then the text its first
    context tokens; respond() cuts the prompt the same way, so answers start at the same position."""
    entry = {"instruction": "Reverse the letters.", "input": "b c d", "output": "d c b"}
    tok = WordTokenizer([format_input(entry) + "\n\n### Response:\n" + entry["output"]])
    full = tok.encode(format_input(entry) + "\n\n### Response:\n" + entry["output"])
    prompt = len(tok.encode(format_input(entry)))                       # 41 of 52 tokens
    assert prompt_budget(82) == 41 and prompt_budget(30) == 15 and prompt_budget(41) == 21
    whole = InstructionDataset([entry], tok, max_length=82)             # fits: unchanged
    assert whole[0] == full and whole.prompt_lengths[0] == prompt and whole.num_truncated == 0
    cut = InstructionDataset([entry], tok, max_length=30)               # prompt 41 -> its last 15
    assert cut[0] == full[prompt - 15:] and cut.prompt_lengths[0] == 15 and cut.num_truncated == 1
    assert tok.decode(cut[0]).endswith("d c b")
    inputs, targets = next(iter(InstructionDataLoader(cut, 1, pad_token_id=0)))
    assert inputs.shape == (1, 26) and targets[0, -1] == 0              # the end-of-text is still learned
    short = InstructionDataset([entry], tok, max_length=20)             # 10 prompt tokens, then the
    assert short[0] == full[prompt - 10:][:21]                          # answer's end is cut
    inputs, targets = next(iter(InstructionDataLoader(short, 1, pad_token_id=0)))
    # 20 inputs, and the last target is the answer's next token, not an end-of-text
    assert inputs[0].tolist() == short[0][:20] and targets[0].tolist() == short[0][1:21]

    class Recorder(GPTModel):                                          # what the model is given
        def forward(self, idx, **kwargs):
            self.seen = idx
            return super().forward(idx, **kwargs)
    cfg = {"vocab_size": len(tok.vocab), "context_length": 41, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    model = Recorder(cfg, seed=0)
    respond(model, tok, entry, max_new_tokens=1, eos_id=None)
    assert model.seen[0].tolist() == tok.encode(format_input(entry))[-21:]


def test_response_loss_matches_pytorch():
    rng = np.random.default_rng(4)
    entries = reverse_task(rng, 7)
    tok = WordTokenizer([format_input(e) + "\n\n### Response:\n" + e["output"] for e in entries])
    cfg = {"vocab_size": len(tok.vocab), "context_length": 64, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    model = GPTModel(cfg, seed=1)
    dataset = InstructionDataset(entries, tok)
    loss, count = response_loss(model, dataset, batch_size=3, pad_token_id=0)
    total, n = 0.0, 0                         # reference: sum over all response tokens in torch
    for i in range(len(dataset)):
        ids = dataset[i] + [0]
        start = dataset.prompt_lengths[i]     # targets from the first response token on
        logits = torch.tensor(model(np.asarray([ids[:-1]]))[0], dtype=torch.float64)
        targets = torch.tensor(ids[1:])
        targets[:start - 1] = -100
        total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
        n += int((targets != -100).sum())
    assert count == n and loss == pytest.approx(total / n, rel=1e-5)
