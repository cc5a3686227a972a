"""numpy_gpt/explore (``numpy-gpt explore``): the views against the model's own numbers, the server's
answers to bad input, and the page in a real browser.

References: ``generate`` for the tokens; the model's forward pass for every probability, with top-k,
top-p and temperature applied here by sorting (not by generate.py's filters); the attention layer's own
output rebuilt from the weights shown; the model's logits for the last row of the logit lens and a hand
computation for its first. The browser test opens the page in headless Chromium (Debian's
``chromium``) and reads the DOM after the scripts ran.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.encoder import EncoderModel
from numpy_gpt.explore import ExploreError, Explorer, make_server
from numpy_gpt.explore.explorer import LENS_POSITIONS, TOP, outputs_of, residual_streams
from numpy_gpt.finetune.classifier import add_classification_head
from numpy_gpt.generate import generate
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import no_grad
from numpy_gpt.tokenizers.char import CharTokenizer
from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer

torch = reference("torch")
transformers = reference("transformers")
tokenizers = reference("tokenizers")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEXT = "Every effort moves you forward, and every step moves the model. "
CONTEXT = 24
PROMPT = "Every effort moves you"

SVG_NAMESPACE = b"http" + b"://www.w3.org/2000/svg"     # a name, not a request


def softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def filtered_probs(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
                   ) -> np.ndarray:
    """The distribution a token is drawn from, by sorting: logits / T, the k largest, then the smallest
    set of the most likely whose mass reaches p."""
    z = logits.astype(np.float64) / temperature
    keep = np.ones(z.shape, dtype=bool)
    if top_k is not None:
        keep &= z >= np.sort(z)[::-1][min(top_k, z.size) - 1]
    probs = softmax64(np.where(keep, z, -np.inf))
    if top_p is not None:
        order = np.argsort(-probs, kind="stable")
        mass = 0.0
        for rank, i in enumerate(order):
            if rank and mass >= top_p:
                keep[i] = False
            mass += probs[i]
        probs = softmax64(np.where(keep, z, -np.inf))
    return probs


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def model(tokenizer) -> GPTModel:
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": CONTEXT, "emb_dim": 16, "n_heads": 2,
           "n_layers": 3, "drop_rate": 0.0, "qkv_bias": True}
    model = GPTModel(cfg, seed=3)
    for p in model.parameters():               # sharper than the 0.02 init: distinct probabilities
        p.data *= 8
    return model.eval()


@pytest.fixture(scope="module")
def explorer(model, tokenizer) -> Explorer:
    return Explorer(model, tokenizer, name="tiny")


def run(explorer: Explorer, prompt: str = PROMPT, max_new_tokens: int = 8, **sampling) -> tuple[dict, list]:
    prompt_view, steps = explorer.generate(prompt, max_new_tokens, **sampling)
    return prompt_view, list(steps)


def logits_after(model: GPTModel, ids: list[int]) -> np.ndarray:
    with no_grad():
        return model(np.asarray([ids[-CONTEXT:]]))[0, -1]


# -- generation ---------------------------------------------------------------------------------------
def test_greedy_steps_are_the_tokens_of_generate(explorer, model, tokenizer):
    prompt_view, steps = run(explorer, max_new_tokens=30)        # past the context: the window slides
    ids = tokenizer.encode(PROMPT)
    assert [t["id"] for t in prompt_view["tokens"]] == ids and prompt_view["greedy"]
    expected = generate(model, np.asarray([ids]), 30, CONTEXT)[0, len(ids):].tolist()
    assert [s["id"] for s in steps] == expected
    assert "".join(t["piece"] for t in prompt_view["tokens"]) == PROMPT


@pytest.mark.parametrize("sampling", [{"temperature": 1.0, "seed": 5},
                                      {"temperature": 0.7, "top_k": 4, "seed": 1},
                                      {"temperature": 1.3, "top_p": 0.6, "seed": 2},
                                      {"temperature": 0.9, "top_k": 6, "top_p": 0.8, "seed": 9}])
def test_sampled_steps_are_the_tokens_of_generate_and_show_the_filtered_softmax(explorer, model, tokenizer,
                                                                               sampling):
    _, steps = run(explorer, max_new_tokens=10, **sampling)
    ids = tokenizer.encode(PROMPT)
    out = generate(model, np.asarray([ids]), 10, CONTEXT, **sampling)[0].tolist()
    assert [s["id"] for s in steps] == out[len(ids):]
    k, p = sampling.get("top_k"), sampling.get("top_p")
    for step in steps:
        logits = logits_after(model, out[:len(ids) + step["step"]])
        probs = filtered_probs(logits, sampling["temperature"], k, p)
        shown = {c["id"]: c["prob"] for c in step["top"]}
        best = np.argsort(-probs, kind="stable")[:TOP]
        assert list(shown) == [int(i) for i in best if probs[i] > 0], "the most likely, in order"
        np.testing.assert_allclose(list(shown.values()), probs[list(shown)], atol=1e-4)
        np.testing.assert_allclose(step["prob"], probs[step["id"]], atol=1e-4)
        assert step["rank"] == 1 + int((probs > probs[step["id"]] + 1e-12).sum())
        assert probs[step["id"]] > 0, "a filtered-out token is never picked"


def test_greedy_shows_the_models_own_probabilities(explorer, model, tokenizer):
    _, steps = run(explorer, max_new_tokens=4)
    ids = tokenizer.encode(PROMPT)
    for step in steps:
        probs = softmax64(logits_after(model, ids))
        assert step["id"] == int(probs.argmax()) and step["rank"] == 1
        np.testing.assert_allclose([c["prob"] for c in step["top"]], np.sort(probs)[::-1][:TOP], atol=1e-4)
        ids.append(step["id"])


def test_a_seed_is_chosen_and_shown_so_that_a_link_repeats_the_run(explorer):
    prompt_view, steps = run(explorer, temperature=1.0)
    again = run(explorer, temperature=1.0, seed=prompt_view["seed"])[1]
    assert [s["id"] for s in steps] == [s["id"] for s in again]


# -- attention, logit lens ----------------------------------------------------------------------------
def test_attention_rows_are_distributions_that_rebuild_the_layers_output(explorer, model, tokenizer):
    ids = tokenizer.encode(PROMPT)
    t = len(ids)
    for layer, block in enumerate(model.trf_blocks):
        views = [explorer.attention(ids, layer, h) for h in range(2)]
        weights = np.asarray([v["weights"] for v in views])                       # (H, T, T)
        assert weights.shape == (2, t, t) and views[0]["causal"]
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-4)
        assert np.abs(np.triu(weights, k=1)).max() == 0, "a token never attends to the future"
        with no_grad():                                  # the layer's own input and output
            with outputs_of([block.norm1, block.att]) as seen:
                model(np.asarray([ids]))
            h, out = seen
            v = block.att.W_value(h).reshape(1, t, 2, 8).transpose(0, 2, 1, 3)    # (B, H, T, hd)
            context = (weights[None].astype(np.float32) @ v).transpose(0, 2, 1, 3).reshape(1, t, 16)
            np.testing.assert_allclose(block.att.out_proj(context), out, atol=2e-4)


def test_logit_lens_ends_with_the_models_prediction_and_starts_at_the_embeddings(explorer, model, tokenizer):
    ids = (tokenizer.encode(TEXT) * 2)[:CONTEXT]
    lens = explorer.logit_lens(ids)
    assert lens["layers"] == ["embeddings", "block 0", "block 1", "block 2"]
    positions = lens["positions"]
    assert positions == list(range(CONTEXT - LENS_POSITIONS, CONTEXT))
    with no_grad():
        last = softmax64(model(np.asarray([ids]))[0, positions])                  # (P, V)
        x = model.tok_emb(np.asarray([ids])) + model.pos_emb(len(ids))
        first = softmax64(model.out_head(model.final_norm(x))[0, positions])
    for row, probs in ((lens["rows"][-1], last), (lens["rows"][0], first)):
        for cell, p in zip(row, probs, strict=True):
            best = np.argsort(-p, kind="stable")[:5]
            assert [c["id"] for c in cell] == best.tolist()
            np.testing.assert_allclose([c["prob"] for c in cell], p[best], atol=1e-5)
    assert explorer.logit_lens(ids, [0, 3])["positions"] == [0, 3]


def test_the_residual_streams_are_the_blocks_outputs_and_the_head_is_skipped(model):
    idx = np.arange(10)[None] % model.cfg["vocab_size"]
    with outputs_of([model.out_head, *model.trf_blocks], stop_after=model.trf_blocks[1]) as seen:
        with no_grad():
            model(idx)
    assert len(seen) == 2, "the pass stopped after block 1: neither block 2 nor the head ran"
    streams = residual_streams(model, idx)
    with no_grad():
        x = model.tok_emb(idx) + model.pos_emb(10)
        for i, block in enumerate(model.trf_blocks):
            np.testing.assert_allclose(streams[i], x, rtol=1e-6)
            x = block(x)
    np.testing.assert_allclose(streams[-1], x, rtol=1e-6)
    assert all("forward" not in vars(m) for m in model.modules()), "every module's own forward again"


def test_a_llama_shaped_model_shows_its_own_steps_attention_and_lens(tokenizer):
    """RoPE, grouped-query attention, RMSNorm, SwiGLU and a tied head: the same views, from the same
    functions (transformers' output_attentions for these layers: test_llama.py)."""
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": CONTEXT, "emb_dim": 16, "n_heads": 4,
           "n_layers": 2, "drop_rate": 0.0, "qkv_bias": False, "hidden_dim": 24, "n_kv_heads": 2,
           "normalization": "rmsnorm", "feed_forward": "swiglu", "positions": "rope", "out_bias": False,
           "ff_bias": False, "tie_embeddings": True}
    model = GPTModel(cfg, seed=2)
    for p in model.parameters():
        p.data *= 8
    explorer = Explorer(model, tokenizer)
    ids = tokenizer.encode(PROMPT)
    _, steps = run(explorer, max_new_tokens=6)
    assert [s["id"] for s in steps] == generate(model, np.asarray([ids]), 6, CONTEXT)[0, len(ids):].tolist()
    weights = np.asarray(explorer.attention(ids, 1, 3)["weights"])
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-4)
    assert np.triu(weights, k=1).max() == 0
    with no_grad():
        probs = softmax64(model(np.asarray([ids]))[0, -1])
    np.testing.assert_allclose([c["prob"] for c in explorer.logit_lens(ids)["rows"][-1][-1]],
                               np.sort(probs)[::-1][:5], atol=1e-5)


def test_the_command_loads_a_hugging_face_folder_with_hf(tmp_path):
    """`numpy-gpt explore --hf FOLDER`: load_hf's model and tokenizer (a tiny Llama written by
    transformers, a tokenizer.json trained by tokenizers)."""
    import argparse

    from test_llama import SIZES, train_tokenizer_json

    from numpy_gpt.cli.explore import load_explorer
    from numpy_gpt.tokenizers.bpe import LLAMA3_PATTERN

    text = train_tokenizer_json(LLAMA3_PATTERN, ["<|begin_of_text|>", "<|eot_id|>"])
    config = transformers.LlamaConfig(**{**SIZES, "vocab_size": tokenizers.Tokenizer.from_str(text)
                                         .get_vocab_size()}, tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny-llama")
    (tmp_path / "tiny-llama" / "tokenizer.json").write_text(text, encoding="utf-8")
    args = argparse.Namespace(hf=str(tmp_path / "tiny-llama"), gpt2=None, checkpoint=None, data_dir="data",
                              models_dir="gpt2")
    explorer = load_explorer(args)
    assert explorer.kind == "language model" and explorer.name == "tiny-llama"
    prompt_view, steps = run(explorer, "The quick brown fox", max_new_tokens=3)
    ids = [t["id"] for t in prompt_view["tokens"]]
    with torch.no_grad():
        expected = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "tiny-llama").eval().generate(
            torch.tensor([ids]), max_new_tokens=3, do_sample=False)[0, len(ids):].tolist()
    assert [s["id"] for s in steps] == expected


# -- a classifier, an encoder -----------------------------------------------------------------------------
def test_classifier_shows_the_probabilities_classify_reads(model, tokenizer):
    classifier = add_classification_head(GPTModel(model.cfg, seed=4), 2, seed=0).eval()
    explorer = Explorer(classifier, tokenizer, max_length=20, pad_token_id=0)
    assert explorer.kind == "classifier" and explorer.info()["labels"] == ["not spam", "spam"]
    answer = explorer.classify("every step")
    ids = tokenizer.encode("every step")
    read = ids + [0] * (20 - len(ids))                   # padded to max_length, as in training
    assert [t["id"] for t in answer["tokens"]] == read and answer["padding"] == 20 - len(ids)
    with no_grad():
        probs = softmax64(classifier(np.asarray([read]))[0, -1])
    np.testing.assert_allclose([c["prob"] for c in answer["classes"]], probs, atol=1e-6)
    lens = explorer.logit_lens(read)                     # each layer through the class head; the last
    last = lens["rows"][-1][-1]                          # row's last position is what classify reads
    np.testing.assert_allclose([c["prob"] for c in last], np.sort(probs)[::-1], atol=1e-5)
    assert [c["piece"] for c in last] == [["not spam", "spam"][i] for i in np.argsort(-probs)]
    with pytest.raises(ExploreError, match="does not generate"):
        explorer.generate("every", 3)


@pytest.fixture(scope="module")
def encoder():
    sentence = "the cat sat on the mat and the dog sat on the log"
    words = list(dict.fromkeys(sentence.split()))
    tokenizer = WordPieceTokenizer([*SPECIAL_TOKENS, *words])
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    return EncoderModel(cfg, seed=0).eval(), tokenizer


def test_encoder_fills_the_mask_with_its_own_softmax_and_attends_both_ways(encoder):
    model, tokenizer = encoder
    explorer = Explorer(model, tokenizer)
    answer = explorer.fill_mask("the cat [MASK] on the mat")
    ids = tokenizer.encode("the cat [MASK] on the mat")
    (mask,) = answer["masks"]
    assert mask["position"] == ids.index(tokenizer.mask_id) and [t["id"] for t in answer["tokens"]] == ids
    with no_grad():
        probs = softmax64(model(np.asarray([ids]))[0, mask["position"]])
    best = np.argsort(-probs, kind="stable")[:TOP]
    assert [c["piece"] for c in mask["candidates"]] == [tokenizer.inverse[i] for i in best]
    np.testing.assert_allclose([c["prob"] for c in mask["candidates"]], probs[best], atol=1e-6)
    attention = explorer.attention(ids, 1, 1)
    weights = np.asarray(attention["weights"])
    assert not attention["causal"] and np.triu(weights, k=1).max() > 0
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-4)
    lens = explorer.logit_lens(ids, [mask["position"]])
    np.testing.assert_allclose([c["prob"] for c in lens["rows"][-1][0]], probs[best[:5]], atol=1e-5)
    with pytest.raises(ExploreError, match="no \\[MASK\\]"):
        explorer.fill_mask("the cat sat")


# -- bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("call", "message"), [
    (lambda e: e.generate("", 4), "the prompt is empty"),
    (lambda e: e.generate("Every effort " * 3, 4), "more than the model's context of 24"),
    (lambda e: e.generate(PROMPT, 0), "max_new_tokens must be between 1 and"),
    (lambda e: e.generate(PROMPT, 4, temperature=-1.0), "temperature must be >= 0"),
    (lambda e: e.generate(PROMPT, 4, temperature=float("nan")), "temperature must be >= 0"),
    (lambda e: e.attention([1, 2, 99], 0, 0), "token id 99 is not in the vocabulary"),
    (lambda e: e.attention([1, 2, True], 0, 0), "whole numbers, got True"),
    (lambda e: e.attention([], 0, 0), "non-empty list"),
    (lambda e: e.attention(list(range(10)) * 3, 0, 0), "30 tokens are more than the model's context of 24"),
    (lambda e: e.attention([1, 2], 3, 0), "layer 3 does not exist: this model has layers 0 to 2"),
    (lambda e: e.attention([1, 2], 0, 2), "head 2 does not exist: each layer has heads 0 to 1"),
    (lambda e: e.logit_lens([1, 2], [5]), "positions must list"),
    (lambda e: e.classify("x"), "not a classifier"),
    (lambda e: e.fill_mask("x"), "fill-mask needs an encoder"),
])
def test_bad_input_is_one_line_that_says_what_to_do(explorer, call, message):
    with pytest.raises(ExploreError, match=re.escape(message)):
        call(explorer)


# -- the server ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(explorer):
    server = make_server(explorer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(server, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
    """(status, body bytes): ``path`` is sent as it is, unnormalised."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=headers is not None and "Host" in headers)
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        data = body.encode() if isinstance(body, str) else body
        if data is not None:
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_generation_streams_one_json_line_per_step(server, model, tokenizer):
    status, body = request(server, "POST", "/api/generate",
                           json.dumps({"prompt": PROMPT, "max_new_tokens": "5", "temperature": "0"}))
    events = [json.loads(line) for line in body.decode().splitlines()]
    assert status == 200 and [e["event"] for e in events] == ["prompt", *["step"] * 5, "done"]
    ids = tokenizer.encode(PROMPT)
    out = generate(model, np.asarray([ids]), 5, CONTEXT)[0]
    assert [e["id"] for e in events[1:-1]] == out[len(ids):].tolist()
    assert events[-1]["text"] == tokenizer.decode(out.tolist())


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/generate", {"prompt": "", "max_new_tokens": 3}, 400, "the prompt is empty"),
    ("/api/generate", {"prompt": "Every effort " * 3}, 400, "more than the model's context"),
    ("/api/generate", {"prompt": "a", "temperature": "-1"}, 400, "temperature: must be >= 0, got -1"),
    ("/api/generate", {"prompt": "a", "temperature": "nan"}, 400, "temperature: must be a finite number"),
    ("/api/generate", {"prompt": "a", "temperature": "warm"}, 400, "temperature: expected a number"),
    ("/api/generate", {"prompt": "a", "top_k": "0"}, 400, "top_k: must be a positive whole number"),
    ("/api/generate", {"prompt": "a", "top_p": "1.5"}, 400, "top_p: must be in (0, 1]"),
    ("/api/generate", {"prompt": "a", "seed": "-2"}, 400, "seed: a seed is a whole number >= 0"),
    ("/api/generate", {"prompt": "a", "max_new_tokens": True}, 400, "max_new_tokens: expected a number"),
    ("/api/generate", {"prompt": 7}, 400, "prompt must be text"),
    ("/api/attention", {"ids": [1, 2], "layer": "7", "head": 0}, 400, "layer 7 does not exist"),
    ("/api/attention", {"ids": [1, 2], "layer": 0, "head": "-1"}, 400, "head: must be a whole number >= 0"),
    ("/api/attention", {"ids": [1, 2], "layer": 0}, 400, "head is missing"),
    ("/api/attention", {"ids": [1, 5000], "layer": 0, "head": 0}, 400, "token id 5000 is not in the"),
    ("/api/attention", {"ids": "1,2", "layer": 0, "head": 0}, 400, "ids must be a non-empty list"),
    ("/api/lens", {"ids": [1], "positions": "all"}, 400, "positions must list"),
    ("/api/nothing", {}, 404, "no API at /api/nothing"),
])
def test_the_server_answers_bad_input_with_one_line_and_keeps_serving(server, path, body, status, message):
    code, answer = request(server, "POST", path, json.dumps(body))
    assert code == status and json.loads(answer) == {"error": json.loads(answer)["error"]}
    assert message in json.loads(answer)["error"]
    assert request(server, "GET", "/api/info")[0] == 200


@pytest.mark.parametrize(("body", "message"), [
    ("{not json", "the request is not valid JSON"), ("[1, 2]", "must be a JSON object"),
    (b"\xff\xfe", "the request is not valid JSON"), ("", "the request is not valid JSON"),
])
def test_malformed_json_is_refused(server, body, message):
    code, answer = request(server, "POST", "/api/tokens", body)
    assert code == 400 and message in json.loads(answer)["error"]


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/../explorer.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py",
    "/static/static/../../server.py", "/../../../../etc/passwd", "/static//etc/passwd",
    "/static/%2fetc%2fpasswd", "/static/", "/static/.", "/static/__init__.py", "/index.html/..",
])
def test_only_the_pages_own_files_are_served(server, path):
    code, answer = request(server, "GET", path)
    assert code == 404, (path, answer[:200])
    assert b"numpy_gpt" not in answer and b"root:" not in answer


def test_the_page_and_its_files_are_served_and_load_nothing_from_the_network(server):
    page = request(server, "GET", "/?prompt=x")[1].decode()
    for name in ("explore.js", "explore.css"):
        code, data = request(server, "GET", f"/static/{name}")
        assert code == 200 and f"/static/{name}" in page
        assert not re.search(rb"https?://(?!127\.0\.0\.1)", data.replace(SVG_NAMESPACE, b""))
    assert not re.search(r"(src|href)=\"(https?:)?//", page)


def test_a_request_for_another_host_name_is_refused(server):
    code, answer = request(server, "GET", "/api/info", headers={"Host": "attacker.example:80"})
    assert code == 403 and "127.0.0.1 only" in json.loads(answer)["error"]
    local = {"Host": f"localhost:{server.server_address[1]}"}
    assert request(server, "GET", "/api/info", headers=local)[0] == 200


# -- the page in a real browser ------------------------------------------------------------------------
class DomReader(HTMLParser):
    """Every element's tag and attributes, and the page's text."""

    def __init__(self):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def having(self, attribute: str, tag: str | None = None, **equal: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if attribute in a and (tag is None or t == tag)
                and all(a.get(k.replace("_", "-")) == v for k, v in equal.items())]


class HeadlessChromium:
    """Debian's chromium driven through the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages ending in a NUL byte, commands on the browser's fd 3, answers on its fd 4): open a
    page, wait in real time until it says it is ready, read its DOM. (``--dump-dom`` with a virtual
    time budget may read the DOM before a streamed answer has arrived.)"""

    def __init__(self, profile: Path):
        browser = shutil.which("chromium")
        if browser is None:
            pytest.skip("Debian's chromium is not installed (apt-get install chromium): the page is not "
                        "tested in a browser")
        commands_in, self.commands = os.pipe()
        self.answers, answers_out = os.pipe()
        # the shell hands the pipes to chromium as fds 3 and 4, and nothing else as its stdin/stdout
        script = 'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null'
        self.process = subprocess.Popen(
            ["sh", "-c", script, browser, "--headless", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=commands_in, stdout=answers_out, stderr=subprocess.DEVNULL)
        os.close(commands_in)
        os.close(answers_out)
        self.buffer = b""
        self.next_id = 0

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:                                          # skip events until our answer comes
            while b"\0" not in self.buffer:
                chunk = os.read(self.answers, 1 << 16)
                assert chunk, "chromium closed the DevTools pipe"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                assert "error" not in answer, answer["error"]
                return answer["result"]

    def dom_when_ready(self, url: str, timeout: float = 60.0) -> DomReader:
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

        def evaluate(expression: str):
            return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                             session)["result"].get("value")

        deadline = time.monotonic() + timeout
        while evaluate("document.body && document.body.getAttribute('data-ready')") != "true":
            assert time.monotonic() < deadline, "the page did not get ready"
            time.sleep(0.1)
        reader = DomReader()
        reader.feed(evaluate("document.documentElement.outerHTML"))
        return reader

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        finally:
            os.close(self.commands)
            os.close(self.answers)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    browser = HeadlessChromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def test_the_page_in_chromium_shows_generates_tokens_their_probabilities_and_the_layers_attention(
        server, chromium, explorer, model, tokenizer):
    url = f"{server.url}?prompt=Every%20effort%20moves%20you&max_new_tokens=8&temperature=0&layer=2&head=1"
    dom = chromium.dom_when_ready(url)
    errors = [a for t, a in dom.elements if a.get("id") == "error" and "hidden" not in a]
    assert not errors, "".join(dom.text)
    ids = tokenizer.encode(PROMPT)
    expected = generate(model, np.asarray([ids]), 8, CONTEXT)[0].tolist()
    shown = [int(a["data-id"]) for a in dom.having("data-step", "span")]
    assert shown == expected[len(ids):]

    text = " ".join(dom.text)
    for step in range(8):
        probs = softmax64(logits_after(model, expected[:len(ids) + step]))
        card = [a for a in dom.having("data-step", "div") if a["data-step"] == str(step)]
        assert len(card) == 1 and int(card[0]["data-id"]) == expected[len(ids) + step]
        np.testing.assert_allclose(float(card[0]["data-prob"]), probs.max(), atol=1e-4)
        assert f"{probs.max():.4f}" in text, "the probability is written on the page"
    candidates = [float(a["data-prob"]) for a in dom.having("data-prob", "li")][:TOP]
    first = np.sort(softmax64(logits_after(model, ids)))[::-1][:TOP]
    np.testing.assert_allclose(candidates, first, atol=1e-4)

    (svg,) = dom.having("data-tokens", "svg")
    window = expected[-CONTEXT:]                      # 30 tokens: the page shows the model's last 24
    t = len(window)
    assert (svg["data-layer"], svg["data-head"], svg["data-tokens"]) == ("2", "1", str(t))
    cells = dom.having("data-weight", "rect")
    assert len(cells) == t * t, "one cell per query-key pair"
    grid = np.zeros((t, t))
    for cell in cells:
        grid[int(cell["data-query"]), int(cell["data-key"])] = float(cell["data-weight"])
    np.testing.assert_allclose(grid, explorer.attention(window, 2, 1)["weights"], atol=1e-6)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, atol=1e-4)
    (lens,) = dom.having("data-rows", "table")
    assert lens["data-rows"] == "4" and lens["data-positions"] == str(LENS_POSITIONS)


def test_the_page_in_chromium_says_what_is_wrong_with_a_bad_link(server, chromium):
    dom = chromium.dom_when_ready(f"{server.url}?prompt=Every&temperature=-1")
    (box,) = [a for t, a in dom.elements if a.get("id") == "error"]
    assert "hidden" not in box and "temperature: must be >= 0, got -1" in " ".join(dom.text)


# -- the command ----------------------------------------------------------------------------------------
def test_the_command_serves_a_checkpoint_and_stops_cleanly_on_ctrl_c(model, tokenizer, tmp_path):
    from numpy_gpt.checkpoint import save_checkpoint
    from numpy_gpt.tokenizers.spec import tokenizer_spec

    path = save_checkpoint(tmp_path / "model.npz", model, extra={"tokenizer": tokenizer_spec(tokenizer)})
    # A child inherits an ignored SIGINT (a test that ran main in this process may have left it so):
    # start it with Python's own handler, as a shell would.
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen([sys.executable, "-m", "numpy_gpt", "explore", "--checkpoint", str(path)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                                   env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    finally:
        signal.signal(signal.SIGINT, handler)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        (url,) = re.findall(r"http://127\.0\.0\.1:\d+/", lines[-1])
        host, port = url[len("http://"):-1].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/info")
        info = json.loads(connection.getresponse().read())
        assert info["kind"] == "language model" and info["name"] == "model.npz" and info["n_layers"] == 3
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, err
    assert out.strip().splitlines()[-1] == "numpy-gpt explore: stopped" and "Traceback" not in err
