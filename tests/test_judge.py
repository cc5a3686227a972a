"""Tests for numpy_gpt/finetune/judge.py: the Ollama judge against a fake server on 127.0.0.1, and the
offline metrics against hand-computed values."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest

from numpy_gpt.finetune.instruct import format_input
from numpy_gpt.finetune.judge import (
    JudgeError,
    evaluate_responses,
    exact_match,
    generate_model_scores,
    judge_prompt,
    normalize_answer,
    ollama_is_running,
    parse_score,
    query_model,
    token_f1,
)


class FakeOllama:
    """A tiny stand-in for ``ollama serve``: GET / says it runs; POST /api/chat records the request and
    streams the next scripted reply as NDJSON pieces (or answers a scripted HTTP error)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = b"Ollama is running"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append((self.path, self.headers["Content-Type"], json.loads(body)))
                reply = fake.replies.pop(0)
                if isinstance(reply, int):                       # an HTTP error status
                    self.send_response(reply)
                    self.end_headers()
                    self.wfile.write(b'{"error": "model \\"llama3\\" not found"}')
                    return
                if isinstance(reply, bytes):                     # raw bytes, sent as they are
                    payload = reply
                else:                                            # a list of content pieces
                    lines = [{"model": "llama3", "message": {"role": "assistant", "content": piece},
                              "done": False} for piece in reply]
                    lines.append({"model": "llama3", "message": {"role": "assistant", "content": ""},
                                  "done": True})
                    payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/chat"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/chat"


ENTRY = {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
         "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a bullet."}


def test_query_model_sends_a_chat_request_and_joins_the_stream():
    with FakeOllama([["The car ", "is fast", "."]]) as fake:
        reply = query_model("Hello?", model="llama3", url=fake.url)
    assert reply == "The car is fast."
    path, content_type, payload = fake.requests[0]
    assert path == "/api/chat" and content_type == "application/json"
    assert payload["model"] == "llama3"
    assert payload["messages"] == [{"role": "user", "content": "Hello?"}]
    assert payload["options"]["seed"] == 123 and payload["options"]["temperature"] == 0


def test_generate_model_scores_with_the_books_prompt(capsys):
    data = [ENTRY, {**ENTRY, "model_response": "  "}, {**ENTRY, "model_response": "Fast."},
            {**ENTRY, "model_response": "Zoom."}]
    with FakeOllama([["8", "5"], ["I'd say 40."], ["no idea"]]) as fake:
        assert ollama_is_running(fake.url)
        scores = generate_model_scores(data, "model_response", url=fake.url)
    assert scores == [85, 0, 40]           # the empty response scores 0 unasked; "no idea" is left out
    assert "could not read" in capsys.readouterr().out
    prompts = [payload["messages"][0]["content"] for _, _, payload in fake.requests]
    assert len(prompts) == 3
    assert prompts[0] == judge_prompt(ENTRY)
    assert prompts[0].startswith(f"Given the input `{format_input(ENTRY)}` and correct output "
                                 f"`The car is as fast as lightning.`, score the model response "
                                 f"`The car is as fast as a bullet.`")
    assert prompts[0].endswith("Respond with the integer number only.")


def test_query_model_reports_server_errors():
    with FakeOllama([404, b'{"error": "out of memory"}\n', b"<html>oops</html>\n"]) as fake:
        with pytest.raises(JudgeError, match="HTTP 404"):
            query_model("x", url=fake.url)
        with pytest.raises(JudgeError, match="out of memory"):
            query_model("x", url=fake.url)
        with pytest.raises(JudgeError, match="not JSON"):
            query_model("x", url=fake.url)


def test_no_server():
    url = free_port_url()
    assert not ollama_is_running(url, timeout=1.0)
    with pytest.raises(JudgeError, match="cannot reach"):
        query_model("x", url=url, timeout=1.0)


@pytest.mark.parametrize("reply, score", [("85", 85), (" 85.\n", 85), ("Score: 72/100", 72), ("99.6", 100),
                                          ("0", 0), ("no score", None), ("250", None), ("", None)])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_offline_metrics_hand_computed():
    assert normalize_answer("  The Car, is FAST!  ") == "the car is fast"
    assert exact_match("The car is fast.", "the car is fast")
    assert not exact_match("The car is fast.", "The car is slow.")
    # prediction: the car is as fast as a bullet (8 words); reference: the car is as fast as lightning
    # (7 words); shared: the car is as as fast = 6 -> P = 6/8, R = 6/7, F1 = 2PR/(P+R) = 12/15 = 0.8
    assert token_f1(ENTRY["model_response"], ENTRY["output"]) == pytest.approx(0.8)
    assert token_f1("a a b", "a b b") == pytest.approx(2 / 3)       # multiplicity: shared a, b
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("x", "y") == 0.0
    entries = [ENTRY, {**ENTRY, "model_response": "The car is as fast as lightning"}]
    result = evaluate_responses(entries)
    assert result["n"] == 2
    assert result["exact_match"] == pytest.approx(0.5)
    assert result["f1"] == pytest.approx((0.8 + 1.0) / 2)
    with pytest.raises(ValueError, match="model_response"):
        evaluate_responses([{"output": "x"}])


def test_trivial_baselines_hand_computed():
    from numpy_gpt.finetune.judge import baseline_responses, most_common_answer, score_table

    train = [{"instruction": "i", "input": "", "output": out} for out in ("yes", "no", "yes", "maybe")]
    test = [{"instruction": "Is the sky blue?", "input": "", "output": "Yes the sky is blue."},
            {"instruction": "Say no.", "input": "Please", "output": "No."}]
    assert most_common_answer(train) == ("yes", 2)
    baselines = baseline_responses(train, test)
    assert [e["model_response"] for e in baselines["echo"]] == ["Is the sky blue?", "Say no. Please"]
    assert [e["model_response"] for e in baselines["most_common_answer"]] == ["yes", "yes"]
    # echo: F1 of {is the sky blue} vs {yes the sky is blue} = 2*1*0.8/1.8; "say no please" vs "no" = 0.5
    echo = evaluate_responses(baselines["echo"])
    assert echo["exact_match"] == 0 and echo["f1"] == pytest.approx((1.6 / 1.8 + 0.5) / 2)
    common = evaluate_responses(baselines["most_common_answer"])    # "yes" vs 5 words: 2*1*0.2/1.2
    assert common["f1"] == pytest.approx((0.4 / 1.2 + 0) / 2)
    table = score_table({"echo": echo, "most common": common}).splitlines()
    assert table[1].split()[-2:] == ["0.0%", f"{echo['f1'] * 100:.1f}%"] and len(table) == 3


def test_constant_answer_is_the_training_answers_usual_opening_and_an_arbitrary_answer_is_dropped():
    """Issue 24 item 3: a constant answer fitted on train (the most frequent first words, the length
    with the best training F1); "the most common answer" is left out when every answer differs."""
    from numpy_gpt.finetune.judge import baseline_responses, constant_answer

    outputs = ["The sentence is in the past tense.", "The sentence is a question.", "The sentence is short.",
               "Paris is the capital.", "The cat sat."]
    train = [{"instruction": "i", "input": "", "output": out} for out in outputs]
    # first words: "The" (4 of 5), "The sentence" (3), "The sentence is" (3), then one of each; the
    # mean F1 against the five answers is highest for "The sentence is"
    assert constant_answer(train) == "The sentence is"
    test = [{"instruction": "Is it?", "input": "", "output": "The sentence is long."}]
    baselines = baseline_responses(train, test)
    assert set(baselines) == {"echo", "constant_answer"}                 # every answer differs
    assert baselines["constant_answer"][0]["model_response"] == "The sentence is"
    assert "most_common_answer" in baseline_responses(train + train[:1], test)
