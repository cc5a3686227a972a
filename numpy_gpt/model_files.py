"""Every model file numpy_gpt writes, and one way to load it: ``numpy_gpt.load(path) -> (model, tokenizer)``.

Chapter 5 saves a checkpoint and builds the model by hand before loading it back; the later chapters
make more kinds of model, and a learner should not have to remember which loader goes with which
file. So ``load`` reads what a file holds from its metadata alone (``read_model_file``: no weight is
read), builds the model that description calls for, loads the weights into it (all or nothing,
checked as checkpoint.py checks them) and rebuilds the tokenizer the model was trained with
(``checkpoint_tokenizer``: the one way from a checkpoint to its tokenizer, which every command uses).

What a file holds, its *kind* (``KINDS``), and the command that takes it:

    gpt                 a GPT language model          pretrain, convert  -> generate, evaluate, chat, --init
    instruct            an instruction-tuned GPT      finetune-instruct  -> chat, finetune-dpo --checkpoint
    dpo                 a preference-tuned GPT        finetune-dpo       -> chat
    classifier          a GPT spam classifier         finetune-spam      -> classify
    classifier-run      an interrupted finetune-spam  finetune-spam      -> finetune-spam --resume
    encoder             a BERT-style encoder          pretrain-mlm       -> fill-mask, attention-heatmap
    encoder-classifier  a BERT sequence classifier    finetune-spam --arch encoder, transformers -> classify

A command that is handed the wrong kind says what the file is and which command takes it
(``WrongKindError``). A training checkpoint that keeps its LoRA adapters beside the weights
(``--trainable lora`` before the run ends) loads with them (``LinearWithLoRA`` layers, their alpha read
from the metadata); a finished run merges them, and its file holds plain weights.

How a file stores its model, its *format* (``FORMATS``), is one entry each: a test on the path, a
reader of the metadata, a loader of the weights.

    npz          numpy_gpt's checkpoint (checkpoint.py)                         this module
    safetensors  a GPT-2 .safetensors file, or a folder holding model.safetensors  gpt2/convert.py adds it
    openai       OpenAI's TensorFlow GPT-2 folder                                gpt2/convert.py adds it
    bert         a transformers BERT folder (config.json + model.safetensors)    gpt2/bert.py adds it

A reader of more Hugging Face folders (``load_hf``: Llama, Qwen3) is one more ``add_format(Format(...))``.
The modules that add formats import this one (it never imports them), and ``numpy_gpt`` imports them
all, so every format is known once ``numpy_gpt`` is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.checkpoint import (
    GPT_CLASS,
    CheckpointError,
    CheckpointHeader,
    gpt_parameter_shapes,
    load_checkpoint,
    read_checkpoint_header,
)
from numpy_gpt.encoder import (
    EncoderClassifier,
    EncoderModel,
    encoder_parameter_shapes,
    validate_encoder_config,
)
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.linear import Linear, skip_init
from numpy_gpt.nn.lora import LinearWithLoRA
from numpy_gpt.nn.module import Module
from numpy_gpt.tokenizers.spec import check_tokenizer_spec, tokenizer_from_spec

GPT2_VOCAB_SIZE = 50257
GPT2_SPEC = {"kind": "gpt2"}
# Where the first encoder checkpoints (pretrain-mlm before the one tokenizer schema) kept their config
# and vocabulary; still read. Today's keep the config as every model does (``cfg``) and the vocabulary
# in extra["tokenizer"] as {"kind": "wordpiece", ...}.
OLD_ENCODER_CONFIG_KEY = "encoder_config"
OLD_WORDPIECE_KEY = "wordpiece"


# -- kinds ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """What a model file holds, in words: ``what`` it is, the ``family`` a command asks for, and the
    command that takes it (``{path}`` is filled in)."""

    what: str
    family: str
    takes_it: str


_LM = "a GPT language model"
KINDS = {
    "gpt": Kind(_LM, _LM, "`numpy-gpt generate --checkpoint {path}` takes it (so do evaluate, chat, convert "
                          "and the fine-tuning commands' --init)"),
    "instruct": Kind("an instruction-tuned GPT", _LM, "`numpy-gpt chat --checkpoint {path}` takes it (so do "
                                                      "generate, evaluate and finetune-dpo --checkpoint)"),
    "dpo": Kind("a preference-tuned (DPO) GPT", _LM, "`numpy-gpt chat --checkpoint {path}` takes it (so do "
                                                     "generate and evaluate)"),
    "classifier": Kind("a GPT spam classifier (written by finetune-spam)", "a GPT spam classifier",
                       "`numpy-gpt classify --checkpoint {path} TEXT` takes it"),
    "classifier-run": Kind("the training state of an interrupted finetune-spam run", "a GPT spam classifier",
                           "`numpy-gpt finetune-spam --resume` continues it, and classify takes the "
                           "spam-classifier.npz it writes at the end"),
    "encoder": Kind("a BERT-style encoder (written by pretrain-mlm)", "a BERT-style encoder",
                    "`numpy-gpt fill-mask --checkpoint {path} TEXT` takes it (so does attention-heatmap "
                    "--checkpoint)"),
    "encoder-classifier": Kind("a BERT sequence classifier", "a BERT sequence classifier",
                               "`numpy-gpt classify --checkpoint {path} TEXT` takes the one finetune-spam "
                               "--arch encoder writes (numpy_gpt.load_bert loads a transformers folder)"),
}
LANGUAGE_MODELS = ("gpt", "instruct", "dpo")
ENCODERS = ("encoder", "encoder-classifier")


class WrongKindError(CheckpointError):
    """A model file of another kind than the one asked for: the message says what the file is and
    which command takes it."""


class NotAModelError(CheckpointError):
    """A file that holds no model in any format numpy_gpt reads: the message says what it looks like."""


# -- formats and the files they describe ---------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    """One way a model can be stored. ``matches(path)`` looks at the path (a few bytes at most);
    ``read(path)`` returns its ``ModelFile`` from the metadata alone; ``load(file, drop_rate, dtype)``
    builds the model and reads every weight into it, all or nothing."""

    name: str
    description: str
    matches: Callable[[Path], bool]
    read: Callable[[Path], ModelFile]
    load: Callable[[ModelFile, float, np.dtype | None], Module]


@dataclass(frozen=True)
class ModelFile:
    """What a model file holds, read without its weights.

    ``kind`` is a key of ``KINDS``; ``cfg`` the checked config of the model; ``tokenizer_spec`` the
    checked tokenizer description it records (tokenizers/spec.py), or None; ``extra`` a numpy_gpt
    checkpoint's free metadata ({} for other formats); ``build`` what the format's loader needs besides
    (dtype, head size, LoRA adapters, ...)."""

    path: Path
    format: Format
    kind: str
    cfg: dict[str, Any]
    tokenizer_spec: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)

    def expect(self, kinds: Iterable[str], use: str | None = None) -> ModelFile:
        """This file, if its kind is one of ``kinds``; else ``WrongKindError`` saying what the file is,
        what ``use`` (a command, a function) needs and which command takes the file."""
        kinds = tuple(kinds)
        if self.kind in kinds:
            return self
        kind = KINDS[self.kind]
        wanted = " or ".join(dict.fromkeys(KINDS[k].family for k in kinds))
        needs = f", which {use} needs" if use else ""
        raise WrongKindError(f"{self.path} is {kind.what}, not {wanted}{needs}: "
                             f"{kind.takes_it.format(path=self.path)}")

    def load_model(self, *, drop_rate: float = 0.0, dtype: np.dtype | type | None = None) -> Module:
        """The model, every weight read and checked, in eval mode (``.train()`` before training it).

        ``drop_rate`` applies where the file records none (GPT-2's safetensors and OpenAI folders; a
        BERT folder's config.json has its own), ``dtype`` (float32 by default) to every format but a
        numpy_gpt checkpoint, which keeps the config and dtype it was saved with."""
        model = self.format.load(self, drop_rate, None if dtype is None else np.dtype(dtype))
        return model.eval()

    def tokenizer_description(self, required: bool = False) -> dict[str, Any] | None:
        """The tokenizer this file records; GPT-2's for a GPT of GPT-2's vocabulary that records none
        (OpenAI's and Hugging Face's files record none). When it is unknown: None, or with ``required``
        a CheckpointError that says so."""
        if self.tokenizer_spec is not None:
            return self.tokenizer_spec
        vocab_size = self.cfg["vocab_size"]
        if self.kind not in ENCODERS and vocab_size == GPT2_VOCAB_SIZE:
            return dict(GPT2_SPEC)
        if not required:
            return None
        why = "" if self.kind in ENCODERS else f" and its vocabulary of {vocab_size:,} ids is not GPT-2's"
        raise CheckpointError(f"{self.path} does not record its tokenizer{why}: the text it was trained on "
                              f"cannot be encoded (the files numpy-gpt writes record it)")


FORMATS: list[Format] = []


def add_format(fmt: Format) -> None:
    """Make ``read_model_file`` (and so ``load``) know one more way of storing a model."""
    FORMATS[:] = [f for f in FORMATS if f.name != fmt.name] + [fmt]


def _looks_like(path: Path) -> str:
    if path.is_dir():
        return "a folder without a model in it"
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    text = b"\x00" not in head and head.decode("utf-8", "replace").count("\ufffd") <= 1   # a cut last char
    return "text" if text else "binary data of an unknown format"


def file_format(path: str | os.PathLike) -> Format:
    """The format that stores the model at ``path``, from its name and first bytes (nothing else is
    read). A path that does not exist, or a folder of none of them, is a FileNotFoundError; a file of
    none of them a ``NotAModelError`` saying what it looks like."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist" +
                                ("" if path.suffix else " (checkpoints are .npz files: add the suffix?)"))
    fmt = next((f for f in FORMATS if f.matches(path)), None)
    if fmt is None:
        expected = "; ".join(f.description for f in FORMATS)
        error = FileNotFoundError if path.is_dir() else NotAModelError
        raise error(f"{path} is not a model checkpoint (it is {_looks_like(path)}): numpy_gpt reads "
                    f"{expected}")
    return fmt


def read_model_file(path: str | os.PathLike, *, expect: Iterable[str] | None = None,
                    use: str | None = None) -> ModelFile:
    """What the model file or folder ``path`` holds (its ``ModelFile``), read without its weights.

    With ``expect`` (kinds, e.g. ``LANGUAGE_MODELS``) a file of another kind is a ``WrongKindError``
    that says what the file is and which command takes it; ``use`` names who asks (a command)."""
    file = file_format(path).read(Path(path))
    return file if expect is None else file.expect(expect, use)


def checkpoint_tokenizer(source: str | os.PathLike | ModelFile | None, *,
                         data_dir: str | os.PathLike = "data", vocab_dir: str | os.PathLike | None = None):
    """The tokenizer the model of ``source`` (a path or a ``ModelFile``) was trained with; GPT-2's for
    ``None`` (OpenAI's weights or a new model of GPT-2's vocabulary). The one way from a checkpoint to
    its tokenizer: every command comes here.

    Char, BPE and WordPiece tokenizers are rebuilt from the description the file records; GPT-2's is
    read from ``vocab_dir`` or ``data_dir/gpt2`` (downloaded there once). A file that records none and
    whose vocabulary is not GPT-2's, or a tokenizer that makes ids the model has no embedding for, is
    a ``CheckpointError``."""
    from numpy_gpt.corpora import get_gpt2_tokenizer

    if source is None:
        return get_gpt2_tokenizer(data_dir, vocab_dir=vocab_dir)
    file = source if isinstance(source, ModelFile) else read_model_file(source)
    spec = file.tokenizer_description(required=True)
    vocab_size = file.cfg["vocab_size"]
    tokenizer = tokenizer_from_spec(spec, data_dir, vocab_dir=vocab_dir, where=f"{file.path}'s tokenizer")
    if tokenizer.n_vocab > vocab_size:
        raise CheckpointError(f"{file.path}: its {spec['kind']} tokenizer makes ids up to "
                              f"{tokenizer.n_vocab - 1:,}, but the model has embeddings for {vocab_size:,}")
    return tokenizer


def load(path: str | os.PathLike, *, expect: Iterable[str] | None = None, use: str | None = None,
         data_dir: str | os.PathLike = "data", vocab_dir: str | os.PathLike | None = None,
         drop_rate: float = 0.0) -> tuple[Module, Any]:
    """``(model in eval mode, tokenizer)`` from any model file numpy_gpt writes (see the kinds and
    formats above): a pretrained GPT, an encoder, a classifier, an instruction- or preference-tuned
    model, with LoRA adapters kept or merged, a .npz or a safetensors file.

    The metadata is read first and decides the model; the tokenizer comes next (``checkpoint_tokenizer``,
    GPT-2's from ``vocab_dir`` or ``data_dir``); the weights last, all or nothing. ``expect`` and ``use``
    as in ``read_model_file``; ``drop_rate`` as in ``ModelFile.load_model``."""
    file = read_model_file(path, expect=expect, use=use)
    tokenizer = checkpoint_tokenizer(file, data_dir=data_dir, vocab_dir=vocab_dir)
    return file.load_model(drop_rate=drop_rate), tokenizer


# -- the .npz format ----------------------------------------------------------------------------------
def _is_npz(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix == ".npz":
        return True                          # even a broken one: the checkpoint reader says what is wrong
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _recorded_spec(header: CheckpointHeader) -> dict[str, Any] | None:
    """The tokenizer description a checkpoint records (checked), in today's schema."""
    extra = header.meta.get("extra") or {}
    spec = extra.get("tokenizer")
    if spec is None and OLD_WORDPIECE_KEY in extra:
        old = extra[OLD_WORDPIECE_KEY]
        spec = {"kind": "wordpiece", "lowercase": True, **old} if isinstance(old, dict) else old
    if spec is not None:
        check_tokenizer_spec(spec, f"{header.path}'s tokenizer description")
    return spec


def _lora_adapters(header: CheckpointHeader) -> dict[str, tuple[int, float]]:
    """{layer name: (rank, alpha)} of the LoRA adapters a checkpoint keeps: the rank from A's shape,
    the alpha from the metadata (``lora``; finetune-dpo's first files kept one for all in extra)."""
    path, extra = header.path, header.meta.get("extra") or {}
    layers = sorted(name[:-len(".lora.A")] for name in header.shapes if name.endswith(".lora.A"))
    alphas = header.meta.get("lora") or {}
    if set(alphas) - set(layers):
        raise CheckpointError(f"{path}: its metadata lists LoRA adapters the file does not store: "
                              f"{sorted(set(alphas) - set(layers))[:5]}")
    shared = extra.get("lora")
    shared = shared.get("alpha") if isinstance(shared, dict) else None
    adapters = {}
    for name in layers:
        alpha = alphas.get(name, shared)
        shape = header.shapes[f"{name}.lora.A"]
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise CheckpointError(f"{path} keeps LoRA adapters ({name}, ...) but not their alpha (an older "
                                  f"training checkpoint): finish its run with --resume, which merges them")
        if len(shape) != 2 or shape[1] < 1:
            raise CheckpointError(f"{path}: LoRA matrix {name}.lora.A has shape {shape}, not (in, rank)")
        adapters[name] = (shape[1], float(alpha))
    return adapters


def _with_lora(path: Path, shapes: dict[str, tuple[int, ...]], adapters: dict[str, tuple[int, float]]
               ) -> dict[str, tuple[int, ...]]:
    """The parameter shapes once each adapted Linear is wrapped (``LinearWithLoRA``)."""
    shapes = dict(shapes)
    for name, (rank, _) in adapters.items():
        if f"{name}.weight" not in shapes:
            raise CheckpointError(f"{path}: LoRA adapter {name!r} wraps no layer of the model")
        fan_in, fan_out = shapes[f"{name}.linear.weight"] = shapes.pop(f"{name}.weight")
        if f"{name}.bias" in shapes:
            shapes[f"{name}.linear.bias"] = shapes.pop(f"{name}.bias")
        shapes.update({f"{name}.lora.A": (fan_in, rank), f"{name}.lora.B": (rank, fan_out)})
    return shapes


def _classifier_head(header: CheckpointHeader) -> int | None:
    """The number of classes of a GPT classifier's head, or None for a language model."""
    extra, shapes = header.meta.get("extra") or {}, header.shapes
    is_classifier = (extra.get("task") == "classifier" or "classifier_training" in extra
                     or "out_head.bias" in shapes or "out_head.linear.bias" in shapes)
    if not is_classifier:
        return None
    if extra.get("task") == "classifier":                     # the finished file says what it is
        for key in ("num_classes", "max_length", "pad_token_id"):
            value, least = extra.get(key), 0 if key == "pad_token_id" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise CheckpointError(f"checkpoint {header.path}: extra field {key!r} must be an integer >= "
                                      f"{least}, got {value!r:.100}")
        return extra["num_classes"]
    head = shapes.get("out_head.weight", shapes.get("out_head.linear.weight"))
    if head is None or len(head) != 2:
        raise CheckpointError(f"{header.path} holds a GPT classifier without its head (out_head.weight)")
    return head[1]


def _read_npz(path: Path) -> ModelFile:
    header = read_checkpoint_header(path)
    meta = header.meta
    extra = meta.get("extra") or {}
    model_class = meta.get("model_class", GPT_CLASS)
    adapters = _lora_adapters(header)
    if model_class == "EncoderClassifier":                      # finetune-spam --arch encoder
        try:
            cfg = validate_encoder_config(meta.get("cfg"))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: the stored encoder config is invalid: {err}") from None
        num_classes, pooling = extra.get("num_classes"), extra.get("pooling")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1 or \
                pooling not in ("cls", "mean"):
            raise CheckpointError(f"{path}: an encoder classifier needs extra num_classes (an integer >= "
                                  f"1) and pooling ('cls' or 'mean'), got {num_classes!r:.40} and "
                                  f"{pooling!r:.40}")
        C = cfg["emb_dim"]                                                   # noqa: N806
        shapes = {f"encoder.{k}": v for k, v in encoder_parameter_shapes(cfg, mlm_head=False).items()}
        shapes.update({"classifier.weight": (C, num_classes), "classifier.bias": (num_classes,)})
        if pooling == "cls":
            shapes.update({"pooler.0.weight": (C, C), "pooler.0.bias": (C,)})
        header.check_fit(shapes, "the encoder classifier its metadata describes")
        return ModelFile(path, NPZ, "encoder-classifier", cfg, _recorded_spec(header), extra,
                         {"dtype": header.dtype, "num_classes": num_classes, "pooling": pooling, "lora": {}})
    if model_class == "EncoderModel" or OLD_ENCODER_CONFIG_KEY in extra:
        cfg = meta.get("cfg") if meta.get("cfg") is not None else extra.get(OLD_ENCODER_CONFIG_KEY)
        try:
            cfg = validate_encoder_config(cfg)
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: the stored encoder config is invalid: {err}") from None
        kind, shapes, num_classes = "encoder", encoder_parameter_shapes(cfg), None
    elif model_class == GPT_CLASS:
        cfg = meta.get("cfg")
        if cfg is None:
            raise CheckpointError(f"{path} stores no model cfg: it was not written by numpy_gpt's "
                                  f"save_checkpoint from a model")
        num_classes = _classifier_head(header)
        task = extra.get("task")
        if num_classes is not None:
            kind = "classifier" if task == "classifier" else "classifier-run"
        else:
            kind = "instruct" if task == "instruct" else "dpo" if task == "dpo" or "dpo" in extra else "gpt"
        shapes = gpt_parameter_shapes(cfg, num_classes)
    else:
        raise CheckpointError(f"{path} holds a model of class {model_class:.60}, which numpy_gpt.load does "
                              f"not build")
    header.check_fit(_with_lora(path, shapes, adapters), f"the {KINDS[kind].family} its metadata describes")
    return ModelFile(path, NPZ, kind, cfg, _recorded_spec(header), extra,
                     {"dtype": header.dtype, "num_classes": num_classes, "lora": adapters})


def _wrap_with_lora(model: Module, adapters: dict[str, tuple[int, float]]) -> None:
    modules = dict(model.named_modules())
    for name, (rank, alpha) in adapters.items():
        parent, _, attribute = name.rpartition(".")
        owner = modules[parent] if parent else model
        setattr(owner, attribute, LinearWithLoRA(getattr(owner, attribute), rank, alpha))


def _load_npz(file: ModelFile, drop_rate: float, dtype: np.dtype | None) -> Module:
    dtype = file.build["dtype"]                                    # the saved one, whatever was asked
    if file.kind == "encoder":
        model: Module = EncoderModel(file.cfg, dtype=dtype, init=False)
    elif file.kind == "encoder-classifier":
        model = EncoderClassifier(file.cfg, file.build["num_classes"], file.build["pooling"], dtype=dtype,
                                  init=False)
    else:
        model = GPTModel(file.cfg, dtype=dtype, init=False)
        num_classes = file.build["num_classes"]
        if num_classes is not None:                                 # finetune-spam's head, with its bias
            with skip_init():
                model.out_head = Linear(file.cfg["emb_dim"], num_classes, bias=True, dtype=dtype)
    _wrap_with_lora(model, file.build["lora"])
    load_checkpoint(file.path, model, load_optimizer=False)
    return model


NPZ = Format("npz", "a numpy_gpt .npz checkpoint", _is_npz, _read_npz, _load_npz)
add_format(NPZ)

