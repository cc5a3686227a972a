"""Sliding-window dataset and data loader: the book's printed batches, then invariants as properties."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.data import (
    DataLoader,
    GPTDatasetV1,
    create_dataloader_v1,
    load_token_ids,
    save_token_ids,
    train_val_split,
)
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
from numpy_gpt.tokenizers.simple import SimpleTokenizerV2

tiktoken = reference("tiktoken")
data_gym_to_mergeable_bpe_ranks = reference("tiktoken.load", "data_gym_to_mergeable_bpe_ranks")
openai_public = reference("tiktoken_ext.openai_public")


@pytest.fixture(scope="module")
def tok(gpt2_vocab_dir):
    return GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")


@pytest.fixture(scope="module")
def raw_text(verdict_path):
    return verdict_path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the book's numbers (section 2.6)
def test_book_batches_stride_1(raw_text, tok):
    loader = create_dataloader_v1(raw_text, batch_size=1, max_length=4, stride=1, shuffle=False,
                                  tokenizer=tok)
    batches = iter(loader)
    x, y = next(batches)
    assert x.tolist() == [[40, 367, 2885, 1464]] and y.tolist() == [[367, 2885, 1464, 1807]]
    x, y = next(batches)
    assert x.tolist() == [[367, 2885, 1464, 1807]] and y.tolist() == [[2885, 1464, 1807, 3619]]
    assert x.dtype == np.int64 and y.dtype == np.int64


def test_book_batches_stride_4(raw_text, tok):
    loader = create_dataloader_v1(raw_text, batch_size=8, max_length=4, stride=4, shuffle=False,
                                  tokenizer=tok)
    x, y = next(iter(loader))
    assert x.tolist() == [[40, 367, 2885, 1464], [1807, 3619, 402, 271], [10899, 2138, 257, 7026],
                          [15632, 438, 2016, 257], [922, 5891, 1576, 438], [568, 340, 373, 645],
                          [1049, 5975, 284, 502], [284, 3285, 326, 11]]
    assert y.tolist()[0] == [367, 2885, 1464, 1807]
    assert len(loader.dataset.token_ids) == 5145  # "Total number of tokens" in the book


def test_book_split_and_chapter5_loaders(raw_text, tok):
    train_text, val_text = train_val_split(raw_text, 0.9)
    split = int(0.9 * len(raw_text))
    assert train_text == raw_text[:split] and val_text == raw_text[split:]
    train = create_dataloader_v1(train_text, batch_size=2, max_length=256, stride=256, tokenizer=tok)
    val = create_dataloader_v1(val_text, batch_size=2, max_length=256, stride=256, shuffle=False,
                               drop_last=False, tokenizer=tok)
    assert (len(train), len(val)) == (9, 1)  # chapter 5 prints 9 training and 1 validation batches
    assert sum(x.size for x, _ in train) == 4608  # and "Training tokens: 4608"


# ---------------------------------------------------------------- invariants
@st.composite
def streams(draw):
    n = draw(st.integers(2, 120))
    ids = draw(st.lists(st.integers(0, 50256), min_size=n, max_size=n))
    max_length = draw(st.integers(1, n - 1))
    stride = draw(st.integers(1, n))
    return np.array(ids, dtype=np.uint16), max_length, stride


@given(streams())
def test_windows_are_shifted_by_one_and_stay_inside(stream):
    ids, max_length, stride = stream
    dataset = GPTDatasetV1(ids, max_length=max_length, stride=stride)
    assert len(dataset) == len(range(0, len(ids) - max_length, stride))
    for i in range(len(dataset)):
        x, y = dataset[i]
        start = i * stride
        assert x.shape == y.shape == (max_length,) and x.dtype == y.dtype == np.int64
        assert x.tolist() == ids[start:start + max_length].tolist()
        assert y.tolist() == ids[start + 1:start + max_length + 1].tolist()  # target = next token
        assert start + max_length < len(ids)  # the target's last token exists
    # no window that would still fit was dropped
    assert (len(dataset) - 1) * stride + stride + max_length >= len(ids)


@given(streams(), st.integers(1, 7), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_loader_batches(stream, batch_size, shuffle, drop_last, seed):
    ids, max_length, stride = stream
    dataset = GPTDatasetV1(ids, max_length=max_length, stride=stride)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
    n = len(dataset)
    assert len(loader) == (n // batch_size if drop_last else -(-n // batch_size))
    batches = list(loader)
    assert len(batches) == len(loader) and loader.epoch == 1
    assert all(x.shape == (batch_size, max_length) for x, _ in batches[:n // batch_size])
    seen = [tuple(row) for x, _ in batches for row in x.tolist()]
    windows = [tuple(dataset[i][0].tolist()) for i in range(n)]
    if drop_last:
        assert len(seen) == n // batch_size * batch_size
    else:
        assert sorted(seen) == sorted(windows)  # every window once: a permutation
    if not shuffle:
        assert seen == windows[:len(seen)]
    for x, y in batches:
        assert np.array_equal(x[:, 1:], y[:, :-1])


def test_shuffle_is_seeded_per_epoch_and_resumable():
    dataset = GPTDatasetV1(np.arange(1000), max_length=4, stride=4)
    a = DataLoader(dataset, batch_size=5, shuffle=True, seed=7)
    b = DataLoader(dataset, batch_size=5, shuffle=True, seed=7)
    epoch0 = [x for x, _ in a]
    epoch1 = [x for x, _ in a]
    assert a.epoch == 2
    assert all(np.array_equal(p, q) for p, q in zip(epoch0, [x for x, _ in b], strict=True))
    assert not np.array_equal(np.concatenate(epoch0), np.concatenate(epoch1))
    assert sorted(np.concatenate(epoch0)[:, 0]) == sorted(np.concatenate(epoch1)[:, 0])
    resumed = DataLoader(dataset, batch_size=5, shuffle=True, seed=7)
    resumed.epoch = 1
    assert all(np.array_equal(p, q) for p, q in zip(epoch1, [x for x, _ in resumed], strict=True))
    other_seed = DataLoader(dataset, batch_size=5, shuffle=True, seed=8)
    assert not np.array_equal(np.concatenate(epoch0), np.concatenate([x for x, _ in other_seed]))
    np.testing.assert_array_equal(a.order(3), np.random.default_rng([7, 3]).permutation(len(dataset)))


def test_abandoned_pass_does_not_advance_the_epoch():
    loader = DataLoader(GPTDatasetV1(np.arange(100), max_length=4, stride=4), batch_size=2, shuffle=True)
    for _ in loader:
        break
    assert loader.epoch == 0


# ---------------------------------------------------------------- token-id files and tokenizers
def test_uint16_token_file_memory_mapped(tmp_path, raw_text, tok):
    ids = tok.encode(raw_text)
    path = save_token_ids(ids, tmp_path / "verdict.npy")
    stored = load_token_ids(path)
    assert stored.dtype == np.uint16 and isinstance(stored, np.memmap)
    from_ids = create_dataloader_v1(stored, batch_size=4, max_length=32, stride=32, shuffle=False)
    from_text = create_dataloader_v1(raw_text, batch_size=4, max_length=32, stride=32, shuffle=False,
                                     tokenizer=tok)
    for (x1, y1), (x2, y2) in zip(from_ids, from_text, strict=True):
        assert x1.dtype == np.int64
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    save_token_ids([70000], tmp_path / "big.npy")
    assert load_token_ids(tmp_path / "big.npy").dtype == np.uint32


def test_other_tokenizers_work(raw_text):
    simple = SimpleTokenizerV2.from_text(raw_text)
    loader = create_dataloader_v1(raw_text + " <|endoftext|> " + raw_text, batch_size=2, max_length=8,
                                  stride=8, tokenizer=simple)
    assert simple.eot_token in loader.dataset.token_ids


def test_tiktoken_itself_works_and_special_tokens_pass(gpt2_vocab_dir, tok):
    ranks = data_gym_to_mergeable_bpe_ranks(str(gpt2_vocab_dir / "vocab.bpe"),
                                            str(gpt2_vocab_dir / "encoder.json"))
    enc = tiktoken.Encoding("gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})
    text = "one document<|endoftext|>another document, a bit longer than the first"
    ours = GPTDatasetV1(text, tok, max_length=4, stride=1)
    theirs = GPTDatasetV1(text, enc, max_length=4, stride=1)
    np.testing.assert_array_equal(ours.token_ids, theirs.token_ids)
    assert 50256 in ours.token_ids


def test_default_tokenizer_is_gpt2_from_data_dir(tmp_path, monkeypatch, gpt2_vocab_dir, raw_text, tok):
    (tmp_path / "data" / "gpt2").mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / "data" / "gpt2" / name).symlink_to(gpt2_vocab_dir / name)
    monkeypatch.chdir(tmp_path)
    loader = create_dataloader_v1(raw_text, batch_size=1, max_length=4, stride=4, shuffle=False)
    assert loader.dataset.token_ids[:4].tolist() == [40, 367, 2885, 1464]


def test_bad_input(tok, tmp_path):
    with pytest.raises(ValueError, match="needs 5"):
        GPTDatasetV1("Hi there", tok, max_length=4, stride=1)
    with pytest.raises(ValueError, match="no tokenizer"):
        GPTDatasetV1("some text", None, max_length=1, stride=1)
    with pytest.raises(ValueError, match="1-D"):
        GPTDatasetV1(np.zeros((3, 4), dtype=np.int64), max_length=2, stride=1)
    with pytest.raises(ValueError, match="integers"):
        GPTDatasetV1(np.zeros(10), max_length=2, stride=1)
    with pytest.raises(ValueError, match="non-negative"):
        GPTDatasetV1(np.array([1, -2, 3]), max_length=1, stride=1)
    with pytest.raises(ValueError, match=">= 1"):
        GPTDatasetV1(np.arange(10), max_length=4, stride=0)
    with pytest.raises(ValueError, match="num_workers"):
        create_dataloader_v1(np.arange(10), max_length=2, stride=2, num_workers=2)
    with pytest.raises(ValueError, match="train_ratio"):
        train_val_split("abc", 1.0)
    np.save(tmp_path / "floats.npy", np.zeros(3))
    with pytest.raises(ValueError, match="1-D integer"):
        load_token_ids(tmp_path / "floats.npy")
