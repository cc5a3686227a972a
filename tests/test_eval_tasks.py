"""Tests for numpy_gpt/eval_tasks.py and `numpy-gpt evaluate`: the data files come through the
downloader from a server on 127.0.0.1 and are refused when their sha256 differs; each parser reads a
tiny file written here and names the file and the row of a bad one; HellaSwag's preprocessing, the
LAMBADA split, the cloze items and the k-shot spam prompts are checked against hand-written values;
the command prints its table and writes its JSON on the fixture checkpoint."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from numpy_gpt import eval_tasks
from numpy_gpt.download import DownloadError
from numpy_gpt.eval_tasks import (
    EvalFile,
    fetch,
    hellaswag_preprocess,
    make_cloze_items,
    read_hellaswag,
    read_lambada,
    read_wikitext,
    run_task,
    spam_items,
)
from numpy_gpt.evaluation import MultipleChoice, fewshot_context

HELLASWAG_ROWS = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.",
     "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                 "is holding a rubik's cube.", "starts pulling up roofing on a roof."]},
    {"ind": 9, "activity_label": "Home and Garden", "ctx_a": "[header] How to grow mint [title] Pick a pot.",
     "ctx_b": "", "label": "1", "endings": ["[step] Water it.  Daily.", "Mint grows fast.", "No.", "Yes."]},
]
LAMBADA_ROWS = [{"text": "she handed him the cup and he drank the tea"},
                {"text": "the dog chased the ball across the yard"}]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _wikitext_zip(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("wikitext-2-raw/wiki.test.raw", text)
    return buffer.getvalue()


WIKITEXT = " = Valkyria = \n\n The game began development in 2010 . It was well received .\n"
FILES = {"/hellaswag_val.jsonl": _jsonl(HELLASWAG_ROWS), "/lambada_test.jsonl": _jsonl(LAMBADA_ROWS),
         "/wikitext-2-raw-v1.zip": _wikitext_zip(WIKITEXT)}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def local_files(server, monkeypatch):
    """EVAL_FILES pointing at the local server, with the true sha256 of each tiny file."""
    entries = {"hellaswag-val": "/hellaswag_val.jsonl", "lambada": "/lambada_test.jsonl",
               "wikitext-2": "/wikitext-2-raw-v1.zip"}
    table = {name: EvalFile(eval_tasks.EVAL_FILES[name].filename, (server + path,),
                            hashlib.sha256(FILES[path]).hexdigest())
             for name, path in entries.items()}
    monkeypatch.setattr(eval_tasks, "EVAL_FILES", table)
    return table


def test_downloaded_files_parse(local_files, tmp_path):
    items = read_hellaswag(fetch("hellaswag-val", tmp_path))
    assert items[0] == MultipleChoice(
        "Roof shingle removal: A man is sitting on a roof. He",
        ("is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
         "is holding a rubik's cube.", "starts pulling up roofing on a roof."), 3)
    # The harness's WikiHow clean-up, in its order: strip, " [title]" -> ". ", other [markers] dropped
    # (leaving the space after "[step]"), double spaces single.
    assert items[1] == MultipleChoice("Home and Garden: How to grow mint. Pick a pot.",
                                      (" Water it. Daily.", "Mint grows fast.", "No.", "Yes."), 1)
    assert read_lambada(fetch("lambada", tmp_path)) == [
        ("she handed him the cup and he drank the", " tea"), ("the dog chased the ball across the", " yard")]
    assert read_wikitext(fetch("wikitext-2", tmp_path)) == WIKITEXT
    assert (tmp_path / "eval" / "lambada_test.jsonl").is_file()


def test_a_file_with_another_sha256_is_refused(local_files, monkeypatch, tmp_path):
    entry = local_files["lambada"]
    monkeypatch.setitem(eval_tasks.EVAL_FILES, "lambada", EvalFile(entry.filename, entry.urls, "0" * 64))
    with pytest.raises(DownloadError, match="sha256"):
        fetch("lambada", tmp_path)
    assert not (tmp_path / "eval" / "lambada_test.jsonl").exists()


def test_registered_files_have_real_urls_and_say_when_a_hash_is_unverified():
    for name, entry in eval_tasks.EVAL_FILES.items():
        assert all(url.startswith("https://") for url in entry.urls), name
        assert entry.sha256 is not None or "not verified" in entry.note, name


def test_lambada_target_is_the_last_word_when_the_line_ends_in_a_space(tmp_path):
    path = tmp_path / "lambada.jsonl"
    path.write_bytes(_jsonl([{"text": "he drank the tea "}, {"text": "the dog ran\t \n"}]))
    assert read_lambada(path) == [("he drank the", " tea"), ("the dog", " ran")]


class _NoLengthHandler(_Handler):
    """Serves the file with no Content-Length: the end of the connection ends the body."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = FILES.get(self.path)
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def test_a_short_download_is_refused_by_its_published_row_count(monkeypatch, tmp_path):
    """A HellaSwag or LAMBADA file cut short at a line boundary, sent without Content-Length and with
    no sha256 known, downloads and parses; its row count (10,042 and 5,153 published) refuses it."""
    import dataclasses
    assert eval_tasks.EVAL_FILES["hellaswag-val"].rows == 10_042
    assert eval_tasks.EVAL_FILES["lambada"].rows == 5_153
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoLengthHandler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        for name, path, task in (("hellaswag-val", "/hellaswag_val.jsonl", "hellaswag"),
                                 ("lambada", "/lambada_test.jsonl", "lambada")):
            entry = dataclasses.replace(eval_tasks.EVAL_FILES[name], urls=(url + path,))
            monkeypatch.setitem(eval_tasks.EVAL_FILES, name, entry)
            with pytest.raises(ValueError, match=rf"{entry.filename}: 2 rows where .* has {entry.rows:,}; "
                                                 rf"the download was cut short .*delete it") as err:
                run_task(task, None, None, data_dir=tmp_path)
            assert "\n" not in str(err.value)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_endoftext_in_a_data_file_is_refused_naming_the_file_and_entry(tmp_path, gpt2_vocab_dir, monkeypatch):
    """What lm-evaluation-harness does with it depends on its tokenizer (Hugging Face's reads it as
    the end-of-text token, tiktoken refuses it); here it is one line, file and entry."""
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    tokenizer = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    monkeypatch.setitem(eval_tasks.EVAL_FILES, "lambada", EvalFile("eval/lambada_test.jsonl", ("http://127.0.0.1:9/x",),
                                                                   None))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "lambada_test.jsonl").write_bytes(
        _jsonl([LAMBADA_ROWS[0], {"text": "the end <|endoftext|> of the story"}]))
    with pytest.raises(ValueError, match=r"lambada_test\.jsonl, entry 2: the text holds the special token "
                                         r"'<\|endoftext\|>'.*remove it") as err:
        run_task("lambada", None, tokenizer, data_dir=tmp_path)
    assert "\n" not in str(err.value)
    spam = _spam_file(tmp_path)
    spam.write_text(spam.read_text().replace("WIN free cash", "WIN <|endoftext|> cash"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"(test|train)\.csv, entry \d+: the text holds the special token"):
        run_task("sms-spam", None, tokenizer, shots=1, spam_file=spam, data_dir=tmp_path)


def test_hellaswag_preprocess_by_hand():
    assert hellaswag_preprocess("  Clean [title] Use soap [step] Rinse.  ") == "Clean. Use soap Rinse."


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x", "y"], "label": 5}', "'label'"),
    ('{"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": "xy", "label": 0}', "'endings'"),
    ('{"activity_label": 3, "ctx_a": "b", "ctx_b": "c", "endings": ["x", "y"], "label": 0}',
     "'activity_label'"),
])
def test_bad_hellaswag_rows_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "hs.jsonl"
    path.write_bytes(_jsonl(HELLASWAG_ROWS[:1]) + b"\n" + line.encode() + b"\n")
    with pytest.raises(ValueError, match=rf"hs\.jsonl, line 3: .*{message}"):
        read_hellaswag(path)


def test_bad_lambada_and_wikitext_files(tmp_path):
    path = tmp_path / "lambada.jsonl"
    path.write_bytes(_jsonl(LAMBADA_ROWS) + b'{"text": "oneword"}\n')
    with pytest.raises(ValueError, match=r"lambada\.jsonl, line 3: .*two words"):
        read_lambada(path)
    path.write_bytes(b'{"text": "caf\xe9 au lait"}\n')
    with pytest.raises(ValueError, match=r"lambada\.jsonl, line 1: not UTF-8"):
        read_lambada(path)
    wrong = tmp_path / "other.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(ValueError, match=r"other\.zip: the archive has no wikitext-2-raw/wiki\.test\.raw"):
        read_wikitext(wrong)


def test_cloze_items_from_the_verdict(verdict_path):
    text = verdict_path.read_text(encoding="utf-8")
    items = make_cloze_items(text, 30, seed=0)
    assert items == make_cloze_items(text, 30, seed=0)
    assert items != make_cloze_items(text, 30, seed=1)
    flat = " ".join(text.split())
    for item in items:
        assert len(item.choices) == 4 and len({c.lower() for c in item.choices}) == 4
        answer = item.choices[item.gold]
        assert f"{item.query} {answer}" in flat                  # the true end of a real sentence
        assert all(c.isalpha() and len(c) >= 4 for c in item.choices)
    assert 30 == len(items)


def test_spam_prompt_by_hand():
    train = spam_items(["WIN cash now", "see you  at lunch"], [1, 0])
    (item,) = spam_items(["are we still on?"], [0])
    prompt = fewshot_context([(t.query, t.choices[t.gold]) for t in train], item.query)
    assert prompt == ("Message: WIN cash now\nLabel: spam\n\nMessage: see you at lunch\nLabel: ham\n\n"
                      "Message: are we still on?\nLabel:")


class _ByteTokenizer:
    """UTF-8 bytes as ids: decode(encode(x)) == x, so the prompts can be read back."""

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return bytes(ids).decode("utf-8")


def test_multiple_choice_prompts_use_the_seeded_shots(monkeypatch):
    """The contexts scored are the hand-assembled k-shot prompts, shots drawn by the fixed seed."""
    seen = []

    def fake_loglikelihood(model, requests, batch_size=32):
        seen.append([(_ByteTokenizer().decode(c), _ByteTokenizer().decode(t)) for c, t in requests])
        return [(-float(len(t)), False) for _, t in requests]

    monkeypatch.setattr(eval_tasks, "loglikelihood", fake_loglikelihood)
    train = [MultipleChoice(f"Q{i}?", ("no", "yes"), i % 2) for i in range(5)]
    items = [MultipleChoice("Is it?", ("no", "yes"), 0)]
    model = type("Model", (), {"cfg": {"context_length": 1024}})()       # loglikelihood is faked
    scores = eval_tasks.evaluate_multiple_choice(model, _ByteTokenizer(), items, train=train, shots=2, seed=7)
    first, second = np.random.default_rng([7, 0]).permutation(5)[:2]
    expected = (f"Q{first}? {train[first].choices[train[first].gold]}\n\n"
                f"Q{second}? {train[second].choices[train[second].gold]}\n\nIs it?")
    assert seen == [[(expected, " no"), (expected, " yes")]]
    assert scores["acc"] == (1.0, pytest.approx(float("nan"), nan_ok=True))   # -3 > -4: " no" wins


def test_k_shot_counts_the_shots_that_fit_and_flags_one_answer_for_every_item(monkeypatch):
    """Bytes as tokens, a 50-token window: a shot "Message: aa\nLabel: ham\n\n" is 24 tokens, the
    query "Message: x\nLabel:" 17 and the longest continuation " spam" 5. One shot fits (24 + 17 + 5
    = 46 <= 51), two do not (70): every 2-shot prompt keeps 1, where the window cut the other without
    a word before. A model that answers " ham" to everything scores the ham share, 4 of 6."""
    def fake_loglikelihood(model, requests, batch_size=32):
        return [(-1.0 if _ByteTokenizer().decode(t) == " ham" else -5.0, False) for _, t in requests]

    monkeypatch.setattr(eval_tasks, "loglikelihood", fake_loglikelihood)
    model = type("Model", (), {"cfg": {"context_length": 50}})()
    train = spam_items(["aa", "bb", "cc", "dd", "ee"], [0, 1, 0, 1, 0])
    items = spam_items(["x", "y", "z", "u", "v", "w"], [0, 0, 0, 0, 1, 1])
    details: dict = {}
    scores = eval_tasks.evaluate_multiple_choice(model, _ByteTokenizer(), items, train=train, shots=2,
                                                 details=details)
    assert scores["acc"][0] == scores["acc_norm"][0] == scores["majority"][0] == pytest.approx(4 / 6)
    assert details["shots_kept"] == [1] * 6 and details["answers"]["acc"] == ["ham"] * 6
    warnings = eval_tasks.multiple_choice_warnings("sms-spam (2-shot)", 2, 50, details)
    assert warnings == [
        "sms-spam (2-shot): 1.0 of 2 shots fit the model's 50-token window on average; 6 of 6 prompts "
        "lost shots, cut from the left",
        "sms-spam (2-shot): acc gives the same answer ('ham') to all 6 items: its score is that answer's "
        "share, as the majority row shows",
        "sms-spam (2-shot): acc_norm gives the same answer ('ham') to all 6 items: its score is that "
        "answer's share, as the majority row shows"]
    eval_tasks.evaluate_multiple_choice(model, _ByteTokenizer(), items, train=train, shots=1, details=details)
    assert details["shots_kept"] == [1] * 6
    assert eval_tasks.multiple_choice_warnings("t", 1, 50, {**details, "answers": {}}) == []


def _spam_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = "see you at lunch tomorrow ok call me when home thanks love the movie".split()
    lines = []
    for i in range(60):
        message = " ".join(rng.choice(words, size=5))
        lines.append(f"spam\tWIN free cash {message}" if i % 3 == 0 else f"ham\t{message}")
    path = tmp_path / "SMSSpamCollection"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fixture_model(gpt2_tiny_dir):
    from numpy_gpt.gpt2.convert import load_openai_checkpoint
    return load_openai_checkpoint(gpt2_tiny_dir / "openai")


@pytest.fixture
def gpt2_data_dir(tmp_path, gpt2_vocab_dir):
    """A data folder whose gpt2/ holds links to the shared vocabulary (nothing is downloaded)."""
    (tmp_path / "data" / "gpt2").mkdir(parents=True)
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / "data" / "gpt2" / name).symlink_to(gpt2_vocab_dir / name)
    return tmp_path / "data"


def test_sms_spam_zero_and_few_shot(tmp_path, fixture_model, gpt2_vocab_dir):
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    tokenizer = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    spam = _spam_file(tmp_path)
    results = [run_task("sms-spam", fixture_model, tokenizer, shots=k, spam_file=spam, data_dir=tmp_path)
               for k in (0, 1, 4)]
    for result, k in zip(results, (0, 1, 4), strict=True):
        assert result.shots == k and result.items == 8             # 20 spam, 20 ham -> 20 % test
        assert [m for m, _, _ in result.metrics] == ["acc", "acc_norm", "majority"]
        assert all(0.0 <= v <= 1.0 for _, v, _ in result.metrics)
        assert result.extra["shots_kept"] == k                      # short messages: 4 fit in 128 tokens
    many = run_task("sms-spam", fixture_model, tokenizer, shots=12, spam_file=spam, data_dir=tmp_path)
    assert many.extra["shots_kept"] < 12
    assert any("of 12 shots fit the model's 128-token window" in w for w in many.extra["warnings"])
    with pytest.raises(ValueError, match="only 28 examples"):                # 70 % of 40
        run_task("sms-spam", fixture_model, tokenizer, shots=29, spam_file=spam, data_dir=tmp_path)
    with pytest.raises(ValueError, match="lambada has no training split"):
        run_task("lambada", fixture_model, tokenizer, shots=1, data_dir=tmp_path)


def test_lambada_and_wikitext_tasks_on_the_fixture(local_files, tmp_path, fixture_model, gpt2_vocab_dir):
    """The tasks end to end on the served files: LAMBADA's perplexity is exp(-mean log p(word)) and
    its acc the greedy match, both from loglikelihood; WikiText-2's from the windowed perplexity."""
    from numpy_gpt.evaluation import encode_pair, loglikelihood, perplexity
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    tokenizer = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    result = run_task("lambada", fixture_model, tokenizer, data_dir=tmp_path)
    scored = loglikelihood(fixture_model, [encode_pair(tokenizer, c, t) for c, t in
                                           read_lambada(tmp_path / "eval" / "lambada_test.jsonl")])
    metrics = {m: v for m, v, _ in result.metrics}
    assert result.items == 2
    assert metrics["perplexity"] == pytest.approx(np.exp(-np.mean([ll for ll, _ in scored])))
    assert metrics["acc"] == np.mean([g for _, g in scored])
    result = run_task("wikitext", fixture_model, tokenizer, data_dir=tmp_path, stride=5)
    expected = perplexity(fixture_model, tokenizer.encode(WIKITEXT), 5, byte_length=len(WIKITEXT))
    metrics = {m: v for m, v, _ in result.metrics}
    assert metrics["perplexity"] == expected["perplexity"]
    assert metrics["bits_per_byte"] == expected["bits_per_byte"]
    assert result.items == expected["tokens"] == len(tokenizer.encode(WIKITEXT)) - 1


def test_cli_evaluate_prints_table_and_writes_json(tmp_path, gpt2_tiny_dir, gpt2_data_dir, verdict_path,
                                                   capsys):
    from numpy_gpt.cli import main
    # The offline task's corpus is cached under data/; the-verdict stands in for the standard library's
    # documentation here, so the test does not spend seconds building it.
    cached = gpt2_data_dir / f"stdlib-docs-py{sys.version_info.major}.{sys.version_info.minor}.txt"
    cached.write_text(verdict_path.read_text(encoding="utf-8") * 10, encoding="utf-8")
    out = tmp_path / "results.json"
    rc = main(["evaluate", "--checkpoint", str(gpt2_tiny_dir / "openai"), "--tasks", "stdlib-cloze",
               "--shots", "0,2", "--limit", "6", "--data-dir", str(gpt2_data_dir), "--out", str(out),
               "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "task" in printed and "stderr" in printed and "stdlib-cloze" in printed
    assert "context length 128" in printed and "tokenizer gpt2" in printed
    assert [line.split()[2] for line in printed.splitlines() if line.startswith("stdlib-cloze")] == \
        ["acc", "acc_norm", "majority"] * 2
    saved = json.loads(out.read_text())
    assert [r["shots"] for r in saved["results"]] == [0, 2]
    assert [r["shots_kept"] for r in saved["results"]][0] == 0
    assert saved["reproduction"]["context_length"] == 128
    assert all(r["items"] == 6 for r in saved["results"])
    # issue 24 item 25: a second evaluation adds its rows; the rows it redoes are replaced
    assert main(["evaluate", "--checkpoint", str(gpt2_tiny_dir / "openai"), "--tasks", "stdlib-cloze",
                 "--shots", "2,3", "--limit", "4", "--data-dir", str(gpt2_data_dir), "--out", str(out),
                 "--no-progress"]) == 0
    assert "1 earlier result(s)" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert [(r["shots"], r["items"]) for r in saved["results"]] == [(0, 6), (2, 4), (3, 4)]
    assert [r["reproduction"]["limit"] for r in saved["results"]] == [6, 4, 4]


def test_cli_evaluate_prints_the_majority_and_a_warning_when_shots_are_cut(tmp_path, gpt2_tiny_dir,
                                                                          gpt2_data_dir, capsys):
    from numpy_gpt.cli import main
    out = tmp_path / "results.json"
    assert main(["evaluate", "--checkpoint", str(gpt2_tiny_dir / "openai"), "--tasks", "sms-spam",
                 "--shots", "0,12", "--spam-file", str(_spam_file(tmp_path)),
                 "--data-dir", str(gpt2_data_dir), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("sms-spam")]
    assert [row[2] for row in rows] == ["acc", "acc_norm", "majority"] * 2
    from numpy_gpt.finetune.data import read_spam_csv
    labels = read_spam_csv(gpt2_data_dir / "sms_spam_collection" / "test.csv")[1]
    share = max(np.mean(labels), 1 - np.mean(labels))
    assert rows[2][3] == rows[5][3] == f"{share:.4f}"                  # the larger class's share
    assert "warning: sms-spam (12-shot): " in captured.out
    assert "shots fit the model's 128-token window" in captured.out
    assert "shots kept on average" in captured.err
    saved = json.loads(out.read_text())["results"]
    assert saved[0]["shots_kept"] == 0 and saved[1]["shots_kept"] < 12 and saved[1]["warnings"]


def test_cli_evaluate_char_checkpoint_offline(tmp_path, verdict_path, capsys):
    """A character-level model.npz carries its tokenizer inline: the offline task needs nothing else."""
    from numpy_gpt.checkpoint import save_checkpoint
    from numpy_gpt.cli import main
    from numpy_gpt.model import GPTModel
    from numpy_gpt.tokenizers.char import CharTokenizer
    from numpy_gpt.tokenizers.spec import tokenizer_spec
    text = verdict_path.read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": 32, "emb_dim": 16, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.0, "qkv_bias": False}
    path = save_checkpoint(tmp_path / "char.npz", GPTModel(cfg, seed=0),
                           extra={"tokenizer": tokenizer_spec(tokenizer)})
    data = tmp_path / "data"
    data.mkdir()
    (data / f"stdlib-docs-py{sys.version_info.major}.{sys.version_info.minor}.txt").write_text(
        text * 10, encoding="utf-8")
    assert main(["evaluate", "--checkpoint", str(path), "--limit", "4", "--data-dir", str(data),
                 "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "tokenizer char" in printed and "context length 32" in printed
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["items"] == 4


def test_cli_evaluate_offline_lists_every_missing_file(tmp_path, gpt2_tiny_dir, gpt2_data_dir, monkeypatch,
                                                      capsys):
    import socket

    from numpy_gpt.cli import main
    with socket.socket() as s:                                 # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    table = {name: EvalFile(entry.filename, (f"http://127.0.0.1:{port}/{name}",), entry.sha256)
             for name, entry in eval_tasks.EVAL_FILES.items()}
    monkeypatch.setattr(eval_tasks, "EVAL_FILES", table)
    rc = main(["evaluate", "--checkpoint", str(gpt2_tiny_dir / "openai"), "--tasks", "lambada,hellaswag",
               "--shots", "1", "--data-dir", str(gpt2_data_dir), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "3 file(s) missing and there is no network" in err
    for name in ("lambada_test.jsonl", "hellaswag_val.jsonl", "hellaswag_train.jsonl"):
        assert str(gpt2_data_dir / "eval" / name) in err
    assert "--data-dir" in err


def test_cli_evaluate_one_line_errors(tmp_path, capsys):
    from numpy_gpt.cli import main
    assert main(["evaluate", "--checkpoint", str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", "x.npz", "--tasks", "mmlu"])
    assert "unknown task(s) mmlu" in capsys.readouterr().err
