"""From text to training batches: the sliding-window dataset and data loader of chapter 2.6.

A language model learns to predict the next token, so one training example is a window of
``max_length`` token ids and its target is the same window shifted one token to the right::

    token ids:  [ 40, 367, 2885, 1464, 1807, 3619,  402,  271, ...]
    input  x:   [ 40, 367, 2885, 1464]           (max_length = 4)
    target y:   [367, 2885, 1464, 1807]          y[t] is the token that follows x[t]
    next window starts ``stride`` tokens later (stride = max_length: windows do not overlap)

``GPTDatasetV1`` holds the token ids of a whole text once and cuts windows on demand (the book's class
stores every window; with a stride below max_length that multiplies memory). It also accepts token
ids directly, e.g. a large corpus tokenized once and saved as ``uint16`` with ``save_token_ids``,
then opened memory-mapped with ``load_token_ids``.

``DataLoader`` stands in for PyTorch's: it yields ``(inputs, targets)`` int64 arrays of shape
(batch_size, max_length). With ``shuffle`` the order of epoch ``e`` is the permutation drawn by
``np.random.default_rng([seed, e])``, so it depends only on the seed and the epoch number: a resumed
run sets ``loader.epoch`` and sees exactly the batches it would have seen.

``load_corpus`` (the registered texts and the offline ``stdlib-docs`` corpus) lives in corpora.py
and is re-exported here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.corpora import load_corpus
from numpy_gpt.fileio import atomic_write

__all__ = ["GPTDatasetV1", "DataLoader", "create_dataloader_v1", "train_val_split", "load_corpus",
           "save_token_ids", "load_token_ids", "encode_text"]


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """``tokenizer.encode(text)``, letting special tokens through when the tokenizer has that option.

    Works with any object with ``encode(text)``; tokenizers with tiktoken's ``allowed_special``
    (GPT2Tokenizer, BPETokenizer, tiktoken itself) encode ``<|endoftext|>`` in a corpus as the
    document separator it stands for, as the book's ``GPTDatasetV1`` does.
    """
    try:
        takes_allowed_special = "allowed_special" in inspect.signature(tokenizer.encode).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        takes_allowed_special = False
    if takes_allowed_special:
        return tokenizer.encode(text, allowed_special="all")
    return tokenizer.encode(text)


class GPTDatasetV1:
    """Input/target windows of ``max_length`` tokens, ``stride`` tokens apart, over one token stream.

    Args:
        txt: the text (encoded with ``tokenizer``), or the token ids themselves (a 1-D integer array
            or list; a memory-mapped array stays memory-mapped).
        tokenizer: anything with ``encode(text)``; needed only when ``txt`` is text.
        max_length: tokens per window (the model's context length at most).
        stride: distance between the starts of consecutive windows.

    Window i covers ids ``[i * stride, i * stride + max_length]`` (inputs: all but the last,
    targets: all but the first); every window whose target fits in the stream is kept.
    """

    def __init__(self, txt: str | np.ndarray | Sequence[int], tokenizer: Any = None, max_length: int = 256,
                 stride: int = 128) -> None:
        if int(max_length) < 1 or int(stride) < 1:
            raise ValueError(f"max_length and stride must be >= 1, got {max_length} and {stride}")
        self.max_length, self.stride = int(max_length), int(stride)
        if isinstance(txt, str):
            if tokenizer is None:
                raise ValueError("GPTDatasetV1 got text but no tokenizer to encode it with")
            self.token_ids = np.asarray(encode_text(tokenizer, txt), dtype=np.int64)
        else:
            self.token_ids = _as_token_array(txt)
        n_tokens = len(self.token_ids)
        # Start of each window; the last start s must leave room for the target's last id, s + max_length.
        self.starts = np.arange(0, n_tokens - self.max_length, self.stride, dtype=np.int64)
        if len(self.starts) == 0:
            raise ValueError(f"the text has {n_tokens} tokens, but one window of "
                             f"max_length={self.max_length} needs {self.max_length + 1} (inputs plus the "
                             f"shifted target); use a longer text or a smaller max_length")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids (T,), target_ids (T,)) of window ``idx``, int64."""
        if not -len(self) <= idx < len(self):
            raise IndexError(f"window {idx} out of range for {len(self)} windows")
        inputs, targets = self.get_batch(np.array([idx]))
        return inputs[0], targets[0]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows ``indices`` stacked: (inputs (B, T), targets (B, T)), int64, one gather."""
        offsets = np.arange(self.max_length + 1, dtype=np.int64)       # (T+1,)
        chunk = self.token_ids[self.starts[indices][:, None] + offsets]  # (B, T+1)
        chunk = chunk.astype(np.int64, copy=False)
        return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])


def _as_token_array(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """Check that ``ids`` is a 1-D sequence of non-negative integers and return it as an array."""
    array = ids if isinstance(ids, np.ndarray) else np.asarray(ids)
    if array.ndim != 1:
        raise ValueError(f"token ids must be a 1-D array, got shape {array.shape}")
    if len(array) and array.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "i" and len(array) and array.min() < 0:
        raise ValueError("token ids must be non-negative")
    return array


class DataLoader:
    """Batches of a dataset, in order or shuffled per epoch (a minimal ``torch.utils.data.DataLoader``).

    Iterating yields ``(inputs, targets)`` batches; ``len(loader)`` is the number of batches. Each
    complete pass increments ``epoch``; a pass abandoned halfway (``break``) does not.
    """

    def __init__(self, dataset: Any, batch_size: int = 4, shuffle: bool = False, drop_last: bool = False,
                 seed: int = 123) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last, self.seed = bool(shuffle), bool(drop_last), int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The order in which epoch ``epoch`` visits the dataset's items."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(self.epoch)
        for b in range(len(self)):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self._batch(indices)
        self.epoch += 1

    def _batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(indices)
        items = [self.dataset[int(i)] for i in indices]
        return tuple(np.stack(column) for column in zip(*items, strict=True))


def create_dataloader_v1(txt: str | np.ndarray | Sequence[int], batch_size: int = 4, max_length: int = 256,
                         stride: int = 128, shuffle: bool = True, drop_last: bool = True, seed: int = 123,
                         tokenizer: Any = None, *, num_workers: int = 0) -> DataLoader:
    """The book's ``create_dataloader_v1``: tokenize ``txt`` and batch its sliding windows.

    ``tokenizer`` defaults to GPT-2's (``get_gpt2_tokenizer()``, which downloads the vocabulary into
    ``data/gpt2`` once). ``txt`` may also be token ids. ``num_workers`` is accepted for the book's
    calls; batches are gathered in-process, so it must be 0.
    """
    if num_workers != 0:
        raise ValueError("num_workers must be 0: this DataLoader gathers batches in-process "
                         "(one NumPy indexing operation per batch)")
    if tokenizer is None and isinstance(txt, str):
        from numpy_gpt.corpora import get_gpt2_tokenizer

        tokenizer = get_gpt2_tokenizer()
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)


def train_val_split(data: str | np.ndarray | Sequence[int], train_ratio: float = 0.9) -> tuple[Any, Any]:
    """Split text (by characters, as the book) or token ids at ``train_ratio``: (train, val)."""
    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be strictly between 0 and 1, got {train_ratio}")
    split_idx = int(train_ratio * len(data))
    return data[:split_idx], data[split_idx:]


def save_token_ids(ids: np.ndarray | Sequence[int], path: str | Path) -> Path:
    """Save token ids as a ``.npy`` file: ``uint16`` when every id fits (GPT-2's do), else ``uint32``.

    Written atomically. Open it again with ``load_token_ids`` (memory-mapped, never unpickled).
    """
    array = _as_token_array(ids)
    top = int(array.max()) if len(array) else 0
    if top >= 2**32:
        raise ValueError(f"token id {top} does not fit in uint32")
    array = array.astype(np.uint16 if top < 2**16 else np.uint32)
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return path


def load_token_ids(path: str | Path, mmap: bool = True) -> np.ndarray:
    """Open a ``.npy`` of token ids (memory-mapped by default) and check it is a 1-D integer array."""
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise ValueError(f"{path} holds a {array.dtype} array of shape {array.shape}; token ids must be "
                         f"a 1-D integer array")
    return array
