"""tokenizers/hf_json.py against Hugging Face's ``tokenizers``: tokenizer.json files trained by it in the
test (GPT-2's, Llama 3's, Qwen2's and SmolLM2's pre-tokenizers, special and added tokens) must encode
and decode identically; what numpy_gpt does not support is refused in one line naming file and field."""

from __future__ import annotations

import json
import unicodedata

import pytest
from helpers import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.tokenizers.bpe import LLAMA3_PATTERN, QWEN2_PATTERN, bytes_to_unicode
from numpy_gpt.tokenizers.hf_json import HFTokenizer, HFTokenizerError, load_hf_tokenizer
from numpy_gpt.tokenizers.spec import tokenizer_from_spec, tokenizer_spec
from numpy_gpt.tokenizers.unicode16 import tokenizers_nfc

tokenizers = reference("tokenizers")

KINDS = ["gpt2", "gpt2_prefix_space", "llama3", "qwen2", "smollm2"]
MULTILINGUAL = ("東京は日本の首都です。我喜欢学习中文。 مرحبا بالعالم، كيف حالك؟ Привет, мир! "
                "Γειά σου κόσμε. 😀👍🏽 👨‍👩‍👧 🇫🇷 café naïve ﬁ 1234567890 3.14159 2024-01-01\n\n\t  x  \r\n")
TRICKY = [
    "",
    " ",
    "Hello world",
    "  leading and trailing   ",
    "I'M He'S they'RE we'VE it'LL I'D don'T 'S 'ſ",
    "12345678901234567890 1 12 123 1234 ١٢٣٤٥ ½ ²³",
    "tabs\tand\nnewlines\n\n\n  \n \r\n\r\n\t\t",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "😀👍🏽👨‍👩‍👧🇫🇷 emoji",
    "e\u0301 A\u030a \u1100\u1161 Å",            # NFC composes these
    "\u0558\u088f x\U00016ea0",                  # letters new in Unicode 17 (pinned to 16)
    "<|endoftext|>",
    "a<|endoftext|>b<|im_start|>user\nhi<|im_end|>",
    "<think>\nreasoning\n</think>\n\nanswer",
    "x" * 300 + " " + "ab" * 200,
    "\x00\x01\x7f\u0085\u00a0\u2028\u3000",
]


# ---------------------------------------------------------------------------- tokenizer.json files
def _train(kind: str, corpus: str) -> str:
    """A tokenizer.json trained by ``tokenizers`` with the named model family's pipeline."""
    Regex, Tokenizer, decoders = tokenizers.Regex, tokenizers.Tokenizer, tokenizers.decoders
    models, normalizers, pre_tokenizers = tokenizers.models, tokenizers.normalizers, tokenizers.pre_tokenizers
    processors, trainers = tokenizers.processors, tokenizers.trainers

    byte_level = pre_tokenizers.ByteLevel

    def split_then_bytes(pattern: str):
        return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                        byte_level(add_prefix_space=False, use_regex=False)])

    pre = {"gpt2": byte_level(add_prefix_space=False),
           "gpt2_prefix_space": byte_level(add_prefix_space=True),
           "llama3": split_then_bytes(LLAMA3_PATTERN), "qwen2": split_then_bytes(QWEN2_PATTERN),
           "smollm2": pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                               byte_level(add_prefix_space=False, use_regex=True)])}[kind]
    in_vocab = {"gpt2": ["<|endoftext|>"], "gpt2_prefix_space": ["<s>", "</s>"],
                "smollm2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}.get(kind, [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=in_vocab, show_progress=False,
                                  initial_alphabet=byte_level.alphabet())
    tok.train_from_iterator([corpus], trainer)
    if kind == "gpt2":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    elif kind == "gpt2_prefix_space":
        tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                          ("<s>", tok.token_to_id("<s>")))
    elif kind == "llama3":       # special tokens after the vocabulary, <|begin_of_text|> put first
        tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"])
        bos = ("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))
        tok.post_processor = processors.TemplateProcessing(single=f"{bos[0]} $A", special_tokens=[bos])
    elif kind == "qwen2":        # NFC, special tokens and non-special added ones after the vocabulary
        tok.normalizer = normalizers.NFC()
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok.add_tokens(["<think>", "</think>"])
    document = json.loads(tok.to_str())
    if kind == "llama3":
        document["model"]["ignore_merges"] = True
    return json.dumps(document, ensure_ascii=False, indent=2)


@pytest.fixture(scope="module")
def corpus(verdict_path) -> str:
    return verdict_path.read_text(encoding="utf-8") + MULTILINGUAL * 20


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """kind -> (the tokenizer.json's path, numpy_gpt's tokenizer, tokenizers' tokenizer)."""
    made = {}
    for kind in KINDS:
        path = tmp_path_factory.mktemp(kind) / "tokenizer.json"
        path.write_text(_train(kind, corpus), encoding="utf-8")
        made[kind] = (path, load_hf_tokenizer(path), tokenizers.Tokenizer.from_file(str(path)))
    return made


def _assert_same(ours: HFTokenizer, theirs, text: str) -> None:
    ids = ours.encode(text, allowed_special="all")
    assert ids == theirs.encode(text, add_special_tokens=False).ids, text
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)


# ---------------------------------------------------------------------------- equal to tokenizers
@pytest.mark.parametrize("kind", KINDS)
def test_the_verdict_encodes_and_decodes_as_tokenizers_does(trained, kind, verdict_path):
    _, ours, theirs = trained[kind]
    text = verdict_path.read_text(encoding="utf-8")
    _assert_same(ours, theirs, text)
    prefix = " " if kind == "gpt2_prefix_space" else ""       # add_prefix_space: decoding keeps it
    assert ours.decode(ours.encode(text)) == prefix + text


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_scripts_digits_and_whitespace_runs(trained, kind):
    _, ours, theirs = trained[kind]
    for text in [*TRICKY, MULTILINGUAL, "".join(TRICKY)]:
        _assert_same(ours, theirs, text)


_PIECES = [*" \t\n\r'sStTdDlLmMvVrReE0123456789aZé日ا😀\u0301\u00a0\u3000.,!-",
           "<think>", "<|im_end|>", "<|endoftext|>", "<s>", "'ll"]
_RANDOM_TEXT = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
                         st.lists(st.sampled_from(_PIECES), max_size=40).map("".join))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150)
@given(text=_RANDOM_TEXT)
def test_random_unicode_encodes_and_decodes_as_tokenizers_does(trained, kind, text):
    _, ours, theirs = trained[kind]
    _assert_same(ours, theirs, text)


@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
@settings(max_examples=150)
@given(data=st.data())
def test_any_ids_decode_as_tokenizers_does(trained, kind, data):
    """Ids that cut characters apart, or are not UTF-8 at all, decode with U+FFFD exactly as tokenizers'
    from_utf8_lossy places it; special and added tokens decode to their text."""
    _, ours, theirs = trained[kind]
    ids = data.draw(st.lists(st.integers(0, ours.max_token_value), max_size=30))
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)


def test_every_code_point_is_split_as_tokenizers_splits_it(trained):
    """The letter, number and space classes of each pipeline (Split by Llama 3's and Qwen's regex,
    Digits, GPT-2's ByteLevel regex) against tokenizers' Rust engines, over planes 0-3 of Unicode (the
    rest is unassigned or private), alone and after a space or an apostrophe."""
    every = "".join(chr(c) for c in range(0x40000) if not 0xD800 <= c <= 0xDFFF)
    byte_char = bytes_to_unicode()
    for kind, text in (("gpt2", every), ("llama3", every), ("qwen2", "'".join(every[::3])),
                       ("smollm2", " ".join(every[::3]))):
        _, ours, theirs = trained[kind]
        chunks = ours._pretokenizer.findall(text)
        mine = ["".join(byte_char[b] for b in chunk.encode()) for chunk in chunks]
        assert mine == [piece for piece, _ in theirs.pre_tokenizer.pre_tokenize_str(text)], kind


def test_nfc_normalises_every_combining_and_composed_character_as_tokenizers_does():
    """tokenizers' NFC has Unicode 9's tables: a combining mark added since stays where it is. Every
    character with a combining class or a canonical decomposition (Unicode 17, from the regex module),
    after and before marks of other classes, and decomposed, against tokenizers' NFC normalizer."""
    normalizers = tokenizers.normalizers
    import regex
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    marked = regex.findall(r"\P{ccc=0}|\p{dt=canonical}", every)
    texts = [t for ch in marked for t in ("\u0301" + ch, "\u0345" + ch, ch + "\u0301", ch + "\u0316",
                                          "a" + ch, unicodedata.normalize("NFD", ch) + "\u0323")]
    reference = normalizers.NFC()
    assert [tokenizers_nfc(t) for t in texts] == [reference.normalize_str(t) for t in texts]


# ---------------------------------------------------------------------------- numpy_gpt's conventions
def test_add_special_tokens_puts_the_post_processors_tokens_around_the_text(trained):
    for kind in ("llama3", "gpt2_prefix_space", "gpt2"):
        _, ours, theirs = trained[kind]
        for text in ("Hello there", ""):
            assert ours.encode(text, add_special_tokens=True) == theirs.encode(text).ids
    _, llama, _ = trained["llama3"]
    assert llama.prefix_ids == [llama.token_to_id("<|begin_of_text|>")] and llama.suffix_ids == []
    assert llama.encode("Hello") == llama.encode("Hello", add_special_tokens=True)[1:]


def test_special_tokens_need_allowing_but_added_tokens_are_vocabulary(trained):
    _, qwen, theirs = trained["qwen2"]
    with pytest.raises(ValueError, match="disallowed special token '<|im_start|>'"):
        qwen.encode("<|im_start|>user")
    as_text = qwen.encode("<|im_start|>user", disallowed_special=())
    assert qwen.token_to_id("<|im_start|>") not in as_text and qwen.decode(as_text) == "<|im_start|>user"
    think = qwen.token_to_id("<think>")
    assert qwen.added_tokens == {"<think>": think, "</think>": think + 1}
    assert think in qwen.encode("a<think>b") and think in qwen.encode_ordinary("a<think>b")
    ids = theirs.encode("<|im_start|>x").ids
    assert qwen.encode("<|im_start|>x", allowed_special={"<|im_start|>"}) == ids


def test_lone_surrogates_become_the_replacement_character(trained):
    """tokenizers refuses a str holding a lone surrogate (it cannot become Rust's String); numpy_gpt
    encodes it as U+FFFD, as tiktoken and GPT2Tokenizer do."""
    _, ours, theirs = trained["llama3"]
    with pytest.raises(TypeError):
        theirs.encode("a\ud800b")
    assert ours.encode("a\ud800b") == theirs.encode("a\ufffdb", add_special_tokens=False).ids
    assert ours.encode("\ud83d\ude00") == theirs.encode("😀", add_special_tokens=False).ids   # a valid pair


def _tiny_document(merges: list[str], ignore_merges: bool, **fields) -> dict:
    """A hand-written byte-level BPE tokenizer.json: the 256 byte tokens, then the merges' results."""
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for merge in merges:
        vocab.setdefault(merge.replace(" ", ""), len(vocab))
    document = {"version": "1.0", "added_tokens": [], "normalizer": None,
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                  "use_regex": True},
                "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True,
                                                    "trim_offsets": True, "use_regex": True},
                "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False,
                          "continuing_subword_prefix": None, "end_of_word_suffix": None,
                          "byte_fallback": False,
                          "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}}
    document.update(fields)
    return document


@pytest.mark.parametrize("ignore_merges", [False, True])
def test_merges_follow_the_files_order_not_tiktokens_rule(ignore_merges):
    """With merges "b c", "a b", "ab c", the word "abc" becomes a + bc and stops there: "a bc" is no
    merge, although "abc" is a token (tiktoken's rule would make it one token). With ignore_merges
    (Llama 3) a word that is a token is that token at once."""
    text = json.dumps(_tiny_document(["b c", "a b", "ab c"], ignore_merges))
    ours, theirs = HFTokenizer.from_json(text), tokenizers.Tokenizer.from_str(text)
    expected = [ours.token_to_id("abc")] if ignore_merges else [ours.token_to_id("a"), ours.token_to_id("bc")]
    assert ours.encode("abc") == theirs.encode("abc").ids == expected
    assert ours.encode("xabcx") == theirs.encode("xabcx").ids


def test_decoding_added_tokens_reads_them_in_the_byte_alphabet_as_tokenizers_does():
    added = [_added(256 + n, content, special)
             for n, (content, special) in enumerate([("ĠX", False), ("<|日本|>", True), ("a b", True)])]
    text = json.dumps(_tiny_document([], False, added_tokens=added))
    ours, theirs = HFTokenizer.from_json(text), tokenizers.Tokenizer.from_str(text)
    for ids in ([256], [257], [258], [65, 256, 257, 258, 66]):
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False)
    assert ours.decode([256]) == " X"


def _added(token_id: int, content: str, special: bool, **flags) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special, **flags}


# ---------------------------------------------------------------------------- folders and checkpoints
def test_a_folder_brings_its_chat_template_and_bos_eos(trained, tmp_path):
    path, _, _ = trained["qwen2"]
    (tmp_path / "tokenizer.json").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "eos_token": {"content": "<|im_end|>", "special": True},
        "chat_template": [{"name": "default", "template": "{{ messages[0]['content'] }}"},
                          {"name": "tool_use", "template": "tools"}]}), encoding="utf-8")
    tok = load_hf_tokenizer(tmp_path)
    assert (tok.bos_token, tok.eos_token) == (None, "<|im_end|>")
    assert tok.eos_token_id == tok.eot_token == tok.token_to_id("<|im_end|>") == 1202
    assert load_hf_tokenizer(path).eot_token == tok.token_to_id("<|endoftext|>") == 1200   # no config
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == "hi"
    (tmp_path / "chat_template.jinja").write_text("{{ eos_token }}", encoding="utf-8")
    assert load_hf_tokenizer(tmp_path / "tokenizer.json").apply_chat_template([]) == "<|im_end|>"


@pytest.mark.parametrize("kind", ["llama3", "qwen2"])
def test_the_checkpoint_spec_keeps_the_whole_tokenizer(trained, kind, tmp_path):
    """A model loaded from a Hugging Face folder and saved by numpy_gpt keeps its tokenizer: the spec
    stores the tokenizer.json (minified) and the config, and is rebuilt through the same checks."""
    from helpers import tiny_cfg

    from numpy_gpt.checkpoint import load_checkpoint, save_checkpoint
    from numpy_gpt.model import GPTModel

    path, _, theirs = trained[kind]
    (tmp_path / "tokenizer.json").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|eot_id|>",
                                                                "chat_template": "{{ eos_token }}"}))
    tok = load_hf_tokenizer(tmp_path)
    save_checkpoint(tmp_path / "ckpt.npz", GPTModel(tiny_cfg(), seed=0),
                    extra={"tokenizer": tokenizer_spec(tok)})
    spec = load_checkpoint(tmp_path / "ckpt.npz", GPTModel(tiny_cfg(), seed=1)).extra["tokenizer"]
    again = tokenizer_from_spec(spec)
    assert spec["kind"] == "hf" and isinstance(again, HFTokenizer)
    text = MULTILINGUAL + "<|endoftext|><think>"
    expected = theirs.encode(text, add_special_tokens=False).ids
    assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all") == expected
    assert again.encode("x", add_special_tokens=True) == theirs.encode("x").ids
    assert again.apply_chat_template([]) == "<|eot_id|>" and again.eos_token_id == tok.eos_token_id


def test_a_spec_with_a_bad_tokenizer_json_is_refused_in_one_line():
    from numpy_gpt.tokenizers.spec import TokenizerSpecError
    with pytest.raises(TokenizerSpecError, match="ckpt.npz: .*tokenizer_json"):
        tokenizer_from_spec({"kind": "hf", "tokenizer_json": 3}, where="ckpt.npz")
    with pytest.raises(TokenizerSpecError, match="model.type"):
        tokenizer_from_spec({"kind": "hf", "tokenizer_json": json.dumps({"model": {"type": "Unigram"}})})


# ---------------------------------------------------------------------------- refused in one line
def _edit(document: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return document


_SEQ = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


@pytest.mark.parametrize(("path", "value", "field"), [
    ("model.type", "WordPiece", "model.type"),
    ("model.type", "Unigram", "model.type"),
    ("model.byte_fallback", True, "model.byte_fallback"),
    ("model.dropout", 0.1, "model.dropout"),
    ("model.continuing_subword_prefix", "##", "model.continuing_subword_prefix"),
    ("normalizer", {"type": "NFKC"}, "normalizer"),
    ("normalizer", {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}]}, "normalizer"),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": "▁"}, "pre_tokenizer"),
    ("pre_tokenizer", {"type": "Whitespace"}, "pre_tokenizer"),
    ("pre_tokenizer", _SEQ, r"pre_tokenizer.pretokenizers\[0\].pattern"),
    ("pre_tokenizer", _edit(json.loads(json.dumps(_SEQ)), "pretokenizers.0.behavior", "Removed"),
     r"pre_tokenizer.pretokenizers\[0\].behavior"),
    ("decoder", {"type": "Metaspace"}, "decoder"),
    ("decoder", None, "decoder"),
    ("post_processor", {"type": "Frobnicate"}, "post_processor"),
    ("added_tokens", [_added(257, "<mask>", True, lstrip=True)], r"added_tokens\[0\].lstrip"),
    ("added_tokens", [_added(300, "<a>", True)], r"added_tokens\[0\].id"),        # tokenizers gives 257
    ("added_tokens", [_added(258, "<a>", True), _added(257, "<b>", True)], r"added_tokens\[0\].id"),
    ("added_tokens", [_added(257 + n, f"<{n:04}{'x' * 4000}>", True) for n in range(70)], "added_tokens"),
    ("model.merges", ["a zz"], r"model.merges\[0\]"),
    ("model.vocab", {"a": 0}, "model.vocab"),
    ("model.vocab", {"a": 10**12}, "model.vocab"),
    ("model.vocab", {"▁the": 0}, "model.vocab"),
])
def test_what_is_not_supported_is_refused_naming_file_and_field(path, value, field):
    text = json.dumps(_edit(_tiny_document(["a b"], False), path, value))
    with pytest.raises(HFTokenizerError, match=rf"^models/x/tokenizer.json: {field} "):
        HFTokenizer.from_json(text, where="models/x/tokenizer.json")


def test_hostile_files_fail_fast_and_change_nothing(tmp_path, monkeypatch):
    import numpy_gpt.tokenizers.hf_json as hf_json

    nested = tmp_path / "tokenizer.json"
    nested.write_text("[" * 200_000, encoding="utf-8")
    with pytest.raises(HFTokenizerError, match="is not valid JSON"):
        load_hf_tokenizer(tmp_path)
    nested.write_bytes(b"\xff\xfe")
    with pytest.raises(HFTokenizerError, match="cannot read"):
        load_hf_tokenizer(nested)
    nested.write_text(json.dumps(_tiny_document(["a b"], False)), encoding="utf-8")
    monkeypatch.setattr(hf_json, "MAX_FILE_BYTES", 1000)
    with pytest.raises(HFTokenizerError, match="bytes; a model's tokenizer.json may take at most 1,000"):
        load_hf_tokenizer(tmp_path)
    with pytest.raises(HFTokenizerError, match="no such file|cannot read"):
        load_hf_tokenizer(tmp_path / "absent")
