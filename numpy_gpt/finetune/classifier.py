"""Fine-tuning a GPT as a spam classifier (chapter 6 of the book).

The recipe of the book, step by step:

1. ``SpamDataset`` tokenizes every message and pads it with the end-of-text id 50256 to one length
   (the longest training message, or a given ``max_length``, truncating longer ones).
2. ``add_classification_head`` replaces the (C, vocab_size) output head by a Linear(C, 2): the model
   now outputs two logits per position, "ham" (0) and "spam" (1).
3. ``set_trainable`` chooses what is trained: the book's last transformer block + final LayerNorm +
   head (``"last-block"``), the last N blocks (``"last-n"``), everything (``"all"``) or LoRA
   adapters only (``"lora"``, appendix E). Everything else is frozen. GPTModel.backward stops below
   the lowest part that has something trainable, and frozen layers form no weight gradients, so
   fine-tuning the last block costs a fraction of a pretraining step.
4. The loss is the cross-entropy of the *last* token's logits (the only position that has attended
   to the whole message): ``calc_loss_batch``, ``calc_accuracy_loader``, ``train_classifier_simple``.
5. ``classify_review`` labels a new text (``class_probabilities`` gives the probabilities behind it,
   ``classifier_input`` the padded ids it reads).

Truncation: a message longer than the padding length keeps its *first* tokens, in training
(``SpamDataset``) and in ``classify_review`` alike, as the book does; the padding length is at most
the model's context. Any pretrained model works: the padding id is its tokenizer's end-of-text
(``finetune/tokens.py``), GPT-2's 50256 by default.

Honest numbers: ``spam_baselines`` scores two rules that need no model on the same splits (always
the training set's majority class; a threshold on the message length in tokens, which a model can
read from where the padding starts), and ``finetune_spam_classifier`` reports full-split accuracies
(every message of train, validation and test) beside them, as the book's final table does. The
per-epoch accuracies of ``train_classifier_simple`` cover only ``eval_iter`` batches and say how
many messages that is.

``save_classifier`` / ``load_classifier`` keep a fine-tuned classifier in a numpy_gpt checkpoint,
with the head size and the padding length in its ``extra`` metadata.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from numpy_gpt import train
from numpy_gpt.checkpoint import save_checkpoint
from numpy_gpt.data import DataLoader
from numpy_gpt.fileio import atomic_write
from numpy_gpt.finetune.data import read_spam_csv
from numpy_gpt.model import GPTModel
from numpy_gpt.model_files import read_model_file
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.lora import LoRALayer, merge_lora, replace_linear_with_lora
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import Module, inference
from numpy_gpt.optim import AdamW
from numpy_gpt.run import TrainingRun

TRAINABLE_CHOICES = ("last-block", "last-n", "all", "lora")
LABELS = ("not spam", "spam")


class SpamDataset:
    """Messages of a ``Label,Text`` CSV as one padded int64 array.

    ``inputs`` (N, max_length) holds the token ids, right-padded with ``pad_token_id``; ``labels``
    (N,) the classes. Without ``max_length`` the longest encoded message sets it (the book then passes
    the training set's ``max_length`` to the validation and test sets); with it, longer messages keep
    their first ``max_length`` tokens. ``lengths`` (N,) are the encoded lengths before truncation.
    Item i is ``(inputs[i], labels[i])``.
    """

    def __init__(self, csv_file: str | os.PathLike | None, tokenizer, max_length: int | None = None,
                 pad_token_id: int = 50256, *, texts: Sequence[str] | None = None,
                 labels: Sequence[int] | None = None):
        if (csv_file is None) == (texts is None):
            raise ValueError("SpamDataset needs either csv_file or texts (with labels), not both")
        if csv_file is not None:
            texts, label_array = read_spam_csv(csv_file)
        else:
            if labels is None or len(labels) != len(texts):
                raise ValueError("SpamDataset(texts=...) needs one label per text")
            label_array = np.asarray(labels, dtype=np.int64)
        if len(texts) == 0:
            raise ValueError("SpamDataset got no messages")
        encoded = [list(tokenizer.encode(text)) for text in texts]
        if max_length is None:
            max_length = max(len(ids) for ids in encoded)
        elif max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.max_length = int(max_length)
        self.inputs = np.full((len(encoded), self.max_length), pad_token_id, dtype=np.int64)
        for row, ids in zip(self.inputs, encoded, strict=True):
            ids = ids[:self.max_length]
            row[:len(ids)] = ids
        self.labels = label_array
        self.texts = list(texts)
        self.lengths = np.array([len(ids) for ids in encoded], dtype=np.int64)            # (N,)

    @property
    def num_truncated(self) -> int:
        """How many messages lost tokens to ``max_length``."""
        return int((self.lengths > self.max_length).sum())

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        return self.inputs[index], self.labels[index]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs (B, max_length), labels (B,)) for ``numpy_gpt.data.DataLoader``."""
        return self.inputs[indices], self.labels[indices]

    def __len__(self) -> int:
        return len(self.labels)


# -- the model -------------------------------------------------------------------------------------
def add_classification_head(model: GPTModel, num_classes: int = 2, seed: int = 123) -> GPTModel:
    """Replace ``model.out_head`` by a fresh Linear(emb_dim, num_classes) with bias (as the book's
    ``torch.nn.Linear``), drawn from ``seed``; returns the model."""
    model.out_head = Linear(model.cfg["emb_dim"], num_classes, bias=True,
                            rng=np.random.default_rng(seed), dtype=model.dtype)
    return model


def set_trainable(model: GPTModel, trainable: str = "last-block", *, n_blocks: int = 1, lora_rank: int = 16,
                  lora_alpha: float = 16.0, seed: int = 123) -> GPTModel:
    """Freeze the model, then unfreeze what ``trainable`` names; returns the model.

    * ``"last-block"`` -- the last TransformerBlock, final_norm and out_head (the book's choice);
    * ``"last-n"``     -- the last ``n_blocks`` blocks (0 = only final_norm and the head), final_norm
      and out_head;
    * ``"all"``        -- every parameter, embeddings included;
    * ``"lora"``       -- every Linear, the head included, becomes a LinearWithLoRA of rank
      ``lora_rank`` and scale ``lora_alpha / lora_rank`` (A drawn from ``seed``); only the A and B
      matrices train (appendix E).
    """
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")
    n_layers = model.cfg["n_layers"]
    model.requires_grad_(trainable == "all")
    if trainable == "lora":
        replace_linear_with_lora(model, lora_rank, lora_alpha, seed=seed)
        for module in model.modules():                  # adapters added by an earlier call train too
            if isinstance(module, LoRALayer):
                module.requires_grad_(True)
    elif trainable in ("last-block", "last-n"):
        n = 1 if trainable == "last-block" else n_blocks
        if not 0 <= n <= n_layers:
            raise ValueError(f"n_blocks must be between 0 and n_layers={n_layers}, got {n}")
        for block in list(model.trf_blocks)[n_layers - n:]:
            block.requires_grad_(True)
        model.final_norm.requires_grad_(True)
        model.out_head.requires_grad_(True)
    return model


class PaddedSequenceClassifier(Module):
    """An encoder's classifier (``EncoderClassifier``, BERT's way: [CLS] text [SEP], the [CLS] state
    pooled) behind this chapter's interface, so one loop, one accuracy table, one set of baselines and
    ``classify`` serve the decoder and the encoder alike (``finetune-spam --arch encoder``).

    forward(ids (B, T)) -> logits (B, 1, num_classes): the one position stands for the GPT's last
    token, and the attention mask is read from the padding (ids != ``pad_id``), so the padded batches
    of ``SpamDataset`` need nothing else. backward(dlogits (B, 1, num_classes)).
    """

    def __init__(self, classifier, pad_id: int, cfg: dict[str, Any]):
        super().__init__()
        self.classifier = classifier
        self.pad_id = int(pad_id)
        self.cfg = dict(cfg)
        self.dtype = classifier.dtype
        self.dropout_rng = classifier.dropout_rng

    def set_dropout_seed(self, seed: int) -> None:
        """Reseed the shared dropout generator in place, as ``GPTModel.set_dropout_seed``."""
        self.dropout_rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state

    def forward(self, idx: np.ndarray) -> np.ndarray:
        mask = (np.asarray(idx) != self.pad_id).astype(np.int64)             # (B, T): 0 on padding
        return self.classifier(idx, None, mask)[:, None, :]                  # (B, 1, num_classes)

    def backward(self, dlogits: np.ndarray) -> None:
        self.classifier.backward(dlogits[:, -1, :])


# -- loss and accuracy on the last token -----------------------------------------------------------
def _last_token_logits(model: GPTModel, input_batch: np.ndarray) -> np.ndarray:
    return model(input_batch)[:, -1, :]                                   # (B, num_classes)


def last_token_cross_entropy(logits: np.ndarray, target_batch: np.ndarray) -> tuple[float, np.ndarray]:
    """Cross-entropy of the last position's logits against the labels, and its gradient.

    logits (B, T, num_classes), target_batch (B,) -> (loss, dlogits (B, T, num_classes)). Only the
    last position has a loss, so dlogits is zero at every other position.
    """
    loss, dlast = cross_entropy(logits[:, -1, :], target_batch)          # dlast (B, num_classes)
    dlogits = np.zeros_like(logits)
    dlogits[:, -1, :] = dlast
    return loss, dlogits


def calc_loss_batch(input_batch: np.ndarray, target_batch: np.ndarray, model: GPTModel, *,
                    backward: bool = False) -> float:
    """The loss of one batch (``last_token_cross_entropy``); with ``backward`` its gradient is also
    added into the model's trainable parameters."""
    logits = model(input_batch)                                           # (B, T, num_classes)
    if not backward:
        return cross_entropy(logits[:, -1, :], target_batch)[0]
    loss, dlogits = last_token_cross_entropy(logits, target_batch)
    model.backward(dlogits)
    return loss


def calc_loss_loader(data_loader: Iterable, model: GPTModel, num_batches: int | None = None) -> float:
    """Chapter 5's ``train.calc_loss_loader`` with this chapter's ``calc_loss_batch`` (the last
    token's loss): the mean over the first ``num_batches`` batches (all by default), without
    gradients; nan for an empty loader."""
    return train.calc_loss_loader(data_loader, model, num_batches, loss_fn=calc_loss_batch)


def calc_accuracy_loader(data_loader: Iterable, model: GPTModel, num_batches: int | None = None,
                         desc: str | None = None) -> float:
    """Fraction of examples whose last-token argmax equals the label, over the first ``num_batches``
    batches (all by default). Runs in eval mode without gradients; restores the model's mode.
    ``desc``: show a progress bar with that label (on a terminal)."""
    correct = total = 0
    batches = data_loader if desc is None else tqdm(data_loader, desc=desc, unit="batch", leave=False,
                                                    disable=not sys.stderr.isatty())
    with inference(model):
        for i, (input_batch, target_batch) in enumerate(batches):
            if num_batches is not None and i >= num_batches:
                break
            predicted = _last_token_logits(model, input_batch).argmax(axis=-1)   # (B,)
            correct += int((predicted == target_batch).sum())
            total += len(target_batch)
    return correct / total if total else float("nan")


def examples_covered(data_loader: DataLoader, num_batches: int | None = None) -> int:
    """How many examples the first ``num_batches`` batches of ``data_loader`` hold (all by default);
    a loader with ``drop_last`` never shows the last partial batch."""
    n_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    return min(n_batches * data_loader.batch_size, len(data_loader.dataset))


def evaluate_model(model: GPTModel, train_loader: Iterable, val_loader: Iterable,
                   eval_iter: int | None) -> tuple[float, float]:
    """(training loss, validation loss) over ``eval_iter`` batches each, in eval mode: chapter 5's
    ``train.evaluate_model`` with this chapter's ``calc_loss_batch``."""
    return train.evaluate_model(model, train_loader, val_loader, eval_iter, loss_fn=calc_loss_batch)


@dataclass
class ClassifierHistory:
    """What ``train_classifier_simple`` records (and returns, as the book's tuple); kept in its
    checkpoints so a resumed run continues it."""

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    train_accs: list[float] = field(default_factory=list)
    val_accs: list[float] = field(default_factory=list)
    examples_seen: int = 0


def train_classifier_simple(model: GPTModel, train_loader: DataLoader, val_loader: Iterable, optimizer,
                            num_epochs: int, eval_freq: int, eval_iter: int | None,
                            verbose: bool = True, *, checkpoint_path: str | os.PathLike | None = None,
                            checkpoint_freq: int | None = None,
                            resume_from: str | os.PathLike | None = None
                            ) -> tuple[list[float], list[float], list[float], list[float], int]:
    """The book's classification training loop.

    Each step: zero the gradients, loss and backward on one batch, one optimizer step. Every
    ``eval_freq`` steps the training and validation losses (``eval_iter`` batches each) are recorded;
    after each epoch the training and validation accuracies on the first ``eval_iter`` batches (the
    printed line says how many examples that is, of how many). Returns (train_losses, val_losses,
    train_accs, val_accs, examples_seen).

    Checkpoints, resumption and Ctrl-C are numpy_gpt/run.py's ``TrainingRun``: with a
    ``checkpoint_path`` the run is saved every ``checkpoint_freq`` steps (if given) and after the step
    during which Ctrl-C was pressed (then ``TrainingInterrupted`` is raised); ``resume_from`` that
    file continues the run exactly; the file is removed once the run is done. A nan or inf loss stops
    it before the weights change (``NonFiniteLossError``).
    """
    def covered(loader) -> str:
        return f"{examples_covered(loader, eval_iter)} of {len(loader.dataset)}"

    history = ClassifierHistory()
    layout = {"batches_per_epoch": len(train_loader), "batch_size": train_loader.batch_size}
    model.train()
    with TrainingRun(model, optimizer, history, checkpoint_path=checkpoint_path, resume_from=resume_from,
                     checkpoint_freq=checkpoint_freq, layout=layout, key="classifier_training",
                     keep_when_done=False) as run:
        batches = run.batches(train_loader)         # (epoch, batch), shuffled as in an unbroken run
        for global_step in run.steps(num_epochs * len(train_loader)):
            epoch, (input_batch, target_batch) = next(batches)
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, backward=True)
            run.check(loss)                         # nan or inf: stop before the weights change
            optimizer.step()
            history.examples_seen += input_batch.shape[0]
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                if verbose:
                    print(f"Ep {epoch + 1} (Step {global_step:06d}): "
                          f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            if (global_step + 1) % len(train_loader) == 0:        # the epoch's last step
                train_accuracy = calc_accuracy_loader(train_loader, model, num_batches=eval_iter)
                val_accuracy = calc_accuracy_loader(val_loader, model, num_batches=eval_iter)
                history.train_accs.append(train_accuracy)
                history.val_accs.append(val_accuracy)
                if verbose:
                    print(f"Training accuracy: {train_accuracy * 100:.2f}% ({covered(train_loader)} "
                          f"examples) | Validation accuracy: {val_accuracy * 100:.2f}% "
                          f"({covered(val_loader)} examples)")
    return (history.train_losses, history.val_losses, history.train_accs, history.val_accs,
            history.examples_seen)


def classify_review(text: str, model: GPTModel, tokenizer, max_length: int | None = None,
                    pad_token_id: int = 50256) -> str:
    """"spam" or "not spam" for one text, padded (or truncated) as the training data was.

    ``max_length`` is the training set's padding length; it is capped at the model's context length.
    Without it the text is used unpadded.
    """
    probabilities = class_probabilities(text, model, tokenizer, max_length, pad_token_id)
    predicted = int(probabilities.argmax())
    return LABELS[predicted] if predicted < len(LABELS) else str(predicted)


def class_probabilities(text: str, model: GPTModel, tokenizer, max_length: int | None = None,
                        pad_token_id: int = 50256) -> np.ndarray:
    """The classifier's probability of each class (num_classes,) for one text, padded or truncated
    as ``classify_review`` says (``classifier_input``): the softmax of the last position's logits."""
    ids = classifier_input(text, model, tokenizer, max_length, pad_token_id)
    with inference(model):
        logits = _last_token_logits(model, np.asarray([ids], dtype=np.int64))[0].astype(np.float64)
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def classifier_input(text: str, model: GPTModel, tokenizer, max_length: int | None = None,
                     pad_token_id: int = 50256) -> list[int]:
    """The ids the classifier reads for ``text``: its first ``max_length`` tokens (at most the model's
    context), padded with ``pad_token_id`` up to ``max_length``, as the training data was."""
    ids = list(tokenizer.encode(text))
    context_length = model.cfg["context_length"]
    length = context_length if max_length is None else min(max_length, context_length)
    ids = ids[:length]
    if max_length is not None:
        ids += [pad_token_id] * (length - len(ids))
    if not ids:
        raise ValueError("classify_review got an empty text and no max_length to pad it to")
    return ids


# -- plots -----------------------------------------------------------------------------------------
def draw_values(epochs_seen: Sequence[float], examples_seen: Sequence[float], train_values: Sequence[float],
                val_values: Sequence[float], label: str = "loss") -> Figure:
    """The book's figure: training and validation ``label`` (loss or accuracy) against epochs, with
    examples seen on the top axis. Returns the Figure."""
    fig = Figure(figsize=(5, 3), dpi=120)
    ax_epochs = fig.add_subplot()
    ax_epochs.plot(epochs_seen, train_values, label=f"Training {label}")
    ax_epochs.plot(epochs_seen, val_values, linestyle="-.", label=f"Validation {label}")
    ax_epochs.set_xlabel("Epochs")
    ax_epochs.set_ylabel(label.capitalize())
    ax_epochs.legend()
    ax_examples = ax_epochs.twiny()                  # invisible copy of the curve sets the top axis
    ax_examples.plot(examples_seen, train_values, alpha=0)
    ax_examples.set_xlabel("Examples seen")
    fig.tight_layout()
    return fig


def plot_values(epochs_seen: Sequence[float], examples_seen: Sequence[float], train_values: Sequence[float],
                val_values: Sequence[float], label: str = "loss",
                path: str | os.PathLike | None = None) -> Path:
    """``draw_values`` saved (PNG, or PDF by suffix) to ``path``, default ``{label}-plot.png``;
    returns the path."""
    path = Path(path if path is not None else f"{label}-plot.png")
    fig = draw_values(epochs_seen, examples_seen, train_values, val_values, label)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="pdf" if path.suffix.lower() == ".pdf" else "png")
    return path


# -- checkpoints -----------------------------------------------------------------------------------
def save_classifier(path: str | os.PathLike, model: GPTModel, *, max_length: int,
                    pad_token_id: int = 50256, extra: dict[str, Any] | None = None) -> Path:
    """Save a classifier as a numpy_gpt checkpoint. LoRA adapters are merged into their weights
    first (the model is changed in place), so the file holds a plain GPTModel with a small head."""
    if isinstance(model, PaddedSequenceClassifier):          # the encoder's classifier, as itself
        inner = model.classifier
        info = {"task": "classifier", "num_classes": inner.num_classes, "pooling": inner.pooling,
                "max_length": int(max_length), "pad_token_id": int(pad_token_id), **(extra or {})}
        return save_checkpoint(path, inner, extra=info)
    merge_lora(model)
    info = {"task": "classifier", "num_classes": int(model.out_head.out_features),
            "max_length": int(max_length), "pad_token_id": int(pad_token_id), **(extra or {})}
    return save_checkpoint(path, model, extra=info)


def load_classifier(path: str | os.PathLike) -> tuple[GPTModel, dict[str, Any]]:
    """Load a checkpoint written by ``save_classifier``; returns (model in eval mode, its extra dict
    with ``num_classes``, ``max_length`` and ``pad_token_id``).

    The way ``numpy_gpt.load`` goes (model_files.py): the metadata (read with a size limit) and the
    head size are checked against the shapes stored in the file before the model is built, then every
    array is read and checked. Another kind of file is refused, with the command that takes it."""
    file = read_model_file(path, expect=("classifier",), use="load_classifier")
    return file.load_model(), file.extra


def format_accuracies(accuracies: dict[str, float]) -> str:
    """{"train": 0.9721, ...} -> "train 97.21%, ..." """
    return ", ".join(f"{name} {value * 100:.2f}%" for name, value in accuracies.items())


def naive_bayes(train_texts: Sequence[str], train_labels: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """Predicted labels (N,) of ``texts`` by a multinomial naive Bayes over lower-cased words, fitted
    on the training texts: log P(class) + sum over the words of log P(word | class), the word
    probabilities counted with add-one smoothing; words never seen in training are ignored."""
    def words(text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())

    vocab = {w: i for i, w in enumerate(sorted({w for t in train_texts for w in words(t)}))}

    def counts(batch: Sequence[str]) -> np.ndarray:                   # (N, V) word counts
        out = np.zeros((len(batch), len(vocab) + 1), dtype=np.float64)  # the last column: unseen words
        for row, text in enumerate(batch):
            np.add.at(out[row], [vocab.get(w, len(vocab)) for w in words(text)], 1.0)
        return out[:, :-1]

    x, y = counts(train_texts), np.asarray(train_labels)
    classes = np.arange(2)
    word_counts = np.stack([x[y == c].sum(axis=0) for c in classes]) + 1.0            # (2, V)
    log_word = np.log(word_counts / word_counts.sum(axis=1, keepdims=True))           # (2, V)
    log_prior = np.log(np.array([(y == c).sum() + 1.0 for c in classes]) / (len(y) + 2.0))
    return (counts(texts) @ log_word.T + log_prior).argmax(axis=1)                     # (N,)


def spam_baselines(datasets: dict[str, SpamDataset]) -> dict[str, dict[str, Any]]:
    """Accuracies of three rules that use no neural model, chosen on ``datasets["train"]`` and scored on
    every split (fractions), each with its ``rule`` in words:

    * ``majority_class``: always the training set's most frequent label (about 50 % on the book's
      balanced data);
    * ``length_threshold``: "spam" when a message is longer than t tokens (or at most t, whichever
      direction fits), t chosen for the best training accuracy. Lengths are counted as the model
      sees them, after truncation to ``max_length``: a model can read the length from where the
      padding starts, so a fine-tuned model is only better than this rule where it beats it;
    * ``naive_bayes``: a bag-of-words naive Bayes fitted on the training messages (``naive_bayes``),
      the classic spam filter: what counting words alone reaches.
    """
    train = datasets["train"]
    majority = int(np.bincount(train.labels, minlength=2).argmax())
    seen = {name: np.minimum(ds.lengths, ds.max_length) for name, ds in datasets.items()}     # (N,) each
    best = (-1.0, 0, True)
    for threshold in np.unique(seen["train"]):
        for longer in (True, False):
            predicted = seen["train"] > threshold if longer else seen["train"] <= threshold
            accuracy = float((predicted == train.labels).mean())
            if accuracy > best[0]:
                best = (accuracy, int(threshold), longer)
    _, threshold, longer = best

    def length_rule(lengths: np.ndarray) -> np.ndarray:
        return (lengths > threshold if longer else lengths <= threshold).astype(np.int64)

    return {
        "majority_class": {"rule": f"always '{LABELS[majority]}'",
                           **{name: float((ds.labels == majority).mean()) for name, ds in datasets.items()}},
        "length_threshold": {"rule": f"'spam' if {'more than' if longer else 'at most'} {threshold} tokens",
                             **{name: float((length_rule(seen[name]) == ds.labels).mean())
                                for name, ds in datasets.items()}},
        "naive_bayes": {"rule": "bag-of-words naive Bayes fitted on train",
                        **{name: float((naive_bayes(train.texts, train.labels, ds.texts) == ds.labels).mean())
                           for name, ds in datasets.items()}}}


def format_accuracy_table(rows: dict[str, dict[str, float]], splits: Sequence[str]) -> str:
    """One line per row name, one column per split, accuracies in percent."""
    width = max(len(name) for name in rows) + 2
    lines = [" " * width + "".join(f"{split:>12}" for split in splits)]
    lines += [f"{name:<{width}}" + "".join(f"{values[split] * 100:>11.2f}%" for split in splits)
              for name, values in rows.items()]
    return "\n".join(lines)


# -- the whole of chapter 6 in one call ------------------------------------------------------------
@dataclass
class SpamFinetuneResult:
    """What ``finetune_spam_classifier`` did: the fine-tuned model, the padding length, the accuracies
    (fractions) on every message of the train/validation/test splits before and after training, the
    curves of ``train_classifier_simple`` and the training time in seconds (evaluation included, as
    the book times it). ``baselines`` are ``spam_baselines`` on the same splits, ``split_sizes`` the
    messages per split and ``truncated`` how many of them lost tokens to ``max_length``."""

    model: GPTModel
    max_length: int
    accuracy_before: dict[str, float]
    accuracy_after: dict[str, float]
    train_losses: list[float]
    val_losses: list[float]
    train_accs: list[float]
    val_accs: list[float]
    examples_seen: int
    train_seconds: float
    num_epochs: int
    trainable_parameters: int = 0
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    split_sizes: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def finetune_spam_classifier(model: GPTModel, tokenizer, csv_paths: dict[str, str | os.PathLike], *,
                             trainable: str = "last-block", n_blocks: int = 1, lora_rank: int = 16,
                             lora_alpha: float = 16.0, num_epochs: int = 5, lr: float = 5e-5,
                             weight_decay: float = 0.1, batch_size: int = 8, eval_freq: int = 50,
                             eval_iter: int | None = 5, max_length: int | None = None,
                             pad_token_id: int = 50256, seed: int = 123, verbose: bool = True,
                             checkpoint_path: str | os.PathLike | None = None,
                             checkpoint_freq: int | None = None,
                             resume_from: str | os.PathLike | None = None) -> SpamFinetuneResult:
    """Chapter 6 end to end on the ``train``/``validation``/``test`` CSVs of ``prepare_spam_data``:
    datasets padded to the longest training message (or ``max_length``), a 2-class head, the chosen
    trainable part, accuracy before, ``train_classifier_simple`` with AdamW (the book's settings are
    the defaults), accuracy after, and the ``spam_baselines``. The model is changed in place and
    returned in the result.

    The padding length is at most the model's context length: longer messages keep their first
    tokens (the book's rule), and the number cut is printed and returned. Accuracies before and
    after are computed on every message of each split (the training loader drops its last partial
    batch and shuffles; the final table does neither)."""
    context_length = model.cfg["context_length"]
    if max_length is not None:
        max_length = min(max_length, context_length)
    train_ds = SpamDataset(csv_paths["train"], tokenizer, max_length, pad_token_id)
    if train_ds.max_length > context_length:
        train_ds = SpamDataset(csv_paths["train"], tokenizer, context_length, pad_token_id)
    datasets = {"train": train_ds, **{name: SpamDataset(csv_paths[name], tokenizer, train_ds.max_length,
                                                        pad_token_id) for name in ("validation", "test")}}
    split_sizes = {name: len(ds) for name, ds in datasets.items()}
    truncated = {name: ds.num_truncated for name, ds in datasets.items()}
    longest = int(max(ds.lengths.max() for ds in datasets.values()))
    if verbose:
        cut = ", ".join(f"{n} of {split_sizes[name]} {name}" for name, n in truncated.items())
        print(f"Messages padded to {train_ds.max_length} tokens with id {pad_token_id}; "
              f"longer ones keep their first {train_ds.max_length} tokens (the book's rule, at most the "
              f"model's context of {context_length}): {cut} messages cut"
              + (f"; the longest has {longest} tokens" if longest > train_ds.max_length else ""))
    train_loader = DataLoader(train_ds, batch_size, shuffle=True, drop_last=True, seed=seed)
    if len(train_loader) == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(train_ds)} training messages: "
                         f"no full batch to train on")
    full = {name: DataLoader(ds, batch_size) for name, ds in datasets.items()}     # every message, in order

    if not isinstance(model, PaddedSequenceClassifier):      # the encoder's comes with its head
        add_classification_head(model, 2, seed=seed)
    set_trainable(model, trainable, n_blocks=n_blocks, lora_rank=lora_rank, lora_alpha=lora_alpha, seed=seed)
    if verbose:
        print(f"Accuracy before fine-tuning, on every message ({sum(split_sizes.values()):,})...", flush=True)
    accuracy_before = {name: calc_accuracy_loader(loader, model, desc=f"accuracy before, {name}")
                       for name, loader in full.items()}
    if verbose:
        print(f"Accuracy before fine-tuning: {format_accuracies(accuracy_before)}")

    model.set_dropout_seed(seed)
    optimizer = AdamW(model.parameters(trainable_only=True), lr=lr, weight_decay=weight_decay)
    start = time.perf_counter()
    curves = train_classifier_simple(model, train_loader, full["validation"], optimizer, num_epochs,
                                     eval_freq, eval_iter, verbose=verbose, checkpoint_path=checkpoint_path,
                                     checkpoint_freq=checkpoint_freq, resume_from=resume_from)
    train_seconds = time.perf_counter() - start
    accuracy_after = {name: calc_accuracy_loader(loader, model, desc=f"accuracy after, {name}")
                      for name, loader in full.items()}
    baselines = spam_baselines(datasets)
    if verbose:
        print(f"Training completed in {train_seconds / 60:.2f} minutes.")
        rows = {f"majority class: {baselines['majority_class']['rule']}": baselines["majority_class"],
                f"length baseline: {baselines['length_threshold']['rule']}": baselines["length_threshold"],
                f"word counts: {baselines['naive_bayes']['rule']}": baselines["naive_bayes"],
                "model before fine-tuning": accuracy_before, "model after fine-tuning": accuracy_after}
        print("Accuracy on every message of each split ("
              + ", ".join(f"{name} {n:,}" for name, n in split_sizes.items()) + "):")
        print(format_accuracy_table(rows, list(datasets)))
    return SpamFinetuneResult(model, train_ds.max_length, accuracy_before, accuracy_after, *curves,
                              train_seconds=train_seconds, num_epochs=num_epochs,
                              trainable_parameters=model.num_parameters(trainable_only=True),
                              baselines=baselines, split_sizes=split_sizes, truncated=truncated)
