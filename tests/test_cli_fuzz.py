"""Every numeric flag of every command through 0, -1, nan, inf and 10^12, on a tiny model and tiny data.

The flags are read from the real parser (``numpy_gpt.cli.build_parser``), so a new flag is fuzzed
without touching this file. Each value must end in one of three ways: refused before any work
(exit code 2: argparse's type, or the command's check of several flags and of the memory), a clean
run (0), or one line of error (1). Never a traceback, and a refused run writes no checkpoint.

A value that passes the checks runs the command for real, in-process through ``numpy_gpt.cli.main``,
on models of a few thousand parameters trained for a step. Two kinds of values are parsed but not
run: 10^12 given to a flag that asks for that much work (steps, epochs, generated tokens, bootstrap
resamples, items: a legitimate run of years, not an error), and every value of ``bench``, ``scaling``
and ``gradcheck`` (a run of each takes ten seconds or more; their types are exercised here, their runs
in test_bench.py, test_scaling.py and test_cli.py) and of ``explore`` (it serves until Ctrl-C; its
run is in test_explore.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from numpy_gpt.cli import build_parser, main
from numpy_gpt.cli.common import NUMERIC_TYPES
from numpy_gpt.runtime import num_threads, set_threads

VALUES = ("0", "-1", "nan", "inf", "1e12", "1000000000000")
HUGE = ("1e12", "1000000000000")
# 10^12 of these is a long run, not a mistake: parsed, not run.
WORK_FLAGS = {"--max-steps", "--epochs", "--sample-tokens", "--max-new-tokens", "--num-samples", "--repeats",
              "--bootstrap", "--seeds", "--limit"}
# Commands whose runs take tens of seconds: their values are parsed (types and checks), not run.
PARSE_ONLY = {"bench", "scaling", "gradcheck", "explore"}
NOT_NUMERIC = (None, str, Path)

TEXT = ("the cat sat on the mat. the dog sat on the log. a bird flew over the tree, "
        "and the fox ran into the wood! ") * 40


def _parser_flags() -> dict[str, dict[str, argparse.Action]]:
    """command -> {flag: action} of its options that take a value other than a path or free text."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: {action.option_strings[-1]: action for action in command._actions
                   if action.option_strings and action.nargs != 0 and action.type not in NOT_NUMERIC
                   and action.choices is None}
            for name, command in sub.choices.items()}


FLAGS = _parser_flags()
CASES = [(command, flag, value) for command, flags in FLAGS.items() for flag in sorted(flags)
         for value in VALUES]


def test_every_numeric_flag_uses_a_shared_type():
    """A bare int or float would accept -1, nan and inf: every command takes its types from common.py
    (or a list type of its own: --shots, --budgets, --tasks)."""
    actions = [(command, flag, action) for command, flags in FLAGS.items() for flag, action in flags.items()]
    assert [(command, flag) for command, flag, action in actions if action.type in (int, float)] == []
    assert sum(action.type in NUMERIC_TYPES for _, _, action in actions) > 80


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A char-level GPT, an MLM encoder, a spam classifier and the data files, each a few kB."""
    base = tmp_path_factory.mktemp("fuzz")
    corpus = base / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    gpt = ["--corpus", str(corpus), "--tokenizer", "char", "--preset", "tiny", "--context-length", "16",
           "--emb-dim", "16", "--n-layers", "1", "--n-heads", "2", "--batch-size", "2", "--max-steps", "1",
           "--eval-iter", "1", "--num-samples", "0", "--sample-tokens", "2", "--no-progress"]
    assert main(["pretrain", *gpt, "--out-dir", str(base / "gpt")]) == 0
    words = "the cat sat on a mat dog log bird tree fox wood".split()
    spam = [f"{'spam' if i % 3 == 0 else 'ham'}\t{' '.join(words[(i + k) % 12] for k in range(5))}"
            + (" win a prize" if i % 3 == 0 else "") for i in range(60)]
    (base / "SMSSpamCollection").write_text("\n".join(spam) + "\n", encoding="utf-8")
    entries = [{"instruction": f"say {w}", "input": "", "output": f"{w} {w}"} for w in words * 2]
    (base / "instruct.json").write_text(json.dumps(entries), encoding="utf-8")
    pairs = [{**e, "chosen": f"the {e['output']}", "rejected": e["output"]} for e in entries]
    (base / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
    model = str(base / "gpt" / "model.npz")
    finetune = ["--init", "checkpoint", "--checkpoint", model, "--batch-size", "2", "--epochs", "1",
                "--eval-freq", "1", "--eval-iter", "1", "--data-dir", str(base / "data")]
    spam_flags = [*finetune, "--spam-file", str(base / "SMSSpamCollection"), "--trainable", "all"]
    assert main(["finetune-spam", *spam_flags, "--out", str(base / "spam")]) == 0
    mlm = ["--corpus", str(corpus), "--vocab-size", "40", "--min-frequency", "1", "--context-length", "8",
           "--emb-dim", "8", "--n-layers", "1", "--n-heads", "2", "--max-steps", "1", "--batch-size", "2",
           "--eval-iter", "1", "--no-progress"]
    assert main(["pretrain-mlm", *mlm, "--out-dir", str(base / "mlm")]) == 0
    base_argv = {
        "pretrain": ["pretrain", *gpt],
        "generate": ["generate", "--checkpoint", model, "--prompt", "the", "--max-new-tokens", "2"],
        "gradcheck": ["gradcheck"],
        "finetune-spam": ["finetune-spam", *spam_flags],
        "classify": ["classify", "the cat", "--checkpoint", str(base / "spam" / "spam-classifier.npz"),
                     "--data-dir", str(base / "data")],
        "finetune-instruct": ["finetune-instruct", *finetune, "--data", str(base / "instruct.json"),
                              "--limit", "4", "--judge", "none", "--max-new-tokens", "2",
                              "--trainable", "lora"],
        "chat": ["chat", "--checkpoint", model, "--instruction", "say cat", "--max-new-tokens", "2"],
        "finetune-dpo": ["finetune-dpo", "--init", model, "--data", str(base / "pairs.json"), "--epochs", "1",
                         "--batch-size", "2", "--max-new-tokens", "2", "--num-responses", "1",
                         "--no-progress", "--eval-iter", "1"],
        "pretrain-mlm": ["pretrain-mlm", *mlm],
        "fill-mask": ["fill-mask", "the [MASK] sat", "--checkpoint", str(base / "mlm" / "model.npz")],
        "attention-heatmap": ["attention-heatmap"],
        "evaluate": ["evaluate", "--checkpoint", model, "--tasks", "sms-spam", "--spam-file",
                     str(base / "SMSSpamCollection"), "--limit", "2", "--data-dir", str(base / "data"),
                     "--no-progress"],
        "scaling": ["scaling", "--corpus", str(corpus), "--tokenizer", "char", "--sizes", "1",
                    "--budgets", "1e7", "--min-steps", "1", "--bootstrap", "0", "--no-progress"],
        "bench": ["bench", "--quick", "--no-torch"],
        "explore": ["explore", "--checkpoint", model],
    }
    return base, base_argv


def _with(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag`` set to ``value`` (replacing it when it is there)."""
    if flag in argv:
        i = argv.index(flag)
        return [*argv[:i], flag, value, *argv[i + 2:]]
    return [*argv, flag, value]


def _outputs(command: str, work: Path) -> list[str]:
    """Where the command writes, under ``work`` (so that each case writes into its own folder)."""
    return {"pretrain": ["--out-dir", str(work / "run")], "pretrain-mlm": ["--out-dir", str(work / "run")],
            "finetune-spam": ["--out", str(work / "run")], "finetune-instruct": ["--out", str(work / "run")],
            "finetune-dpo": ["--out", str(work / "run")], "evaluate": ["--out", str(work / "run" / "r.json")],
            "attention-heatmap": ["--out", str(work / "run" / "a.png")],
            "scaling": ["--out-dir", str(work / "run")], "bench": ["--out", str(work / "run" / "b.json")]
            }.get(command, [])


@pytest.mark.parametrize(("command", "flag", "value"), CASES, ids=[" ".join(c) for c in CASES])
def test_a_numeric_flag_is_refused_run_or_one_line(command, flag, value, tiny, tmp_path, capsys, monkeypatch):
    base, base_argv = tiny
    if command not in base_argv:
        pytest.fail(f"no tiny setup for the new command {command}: add it to the fixture")
    monkeypatch.chdir(tmp_path)
    argv = _with(base_argv[command] + _outputs(command, tmp_path), flag, value)
    capsys.readouterr()
    parse_only = command in PARSE_ONLY or (flag in WORK_FLAGS and value in HUGE)
    if parse_only:
        try:
            build_parser().parse_args(argv)
        except SystemExit as stop:
            assert stop.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return
    threads = num_threads()
    try:
        code = main(argv)
    except SystemExit as stop:                       # argparse refused the value
        code = stop.code
    finally:
        set_threads(threads)                         # evaluate sets them for the whole process
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)
    if code:
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
        assert lines[-1].startswith(f"numpy-gpt {command}: error: "), err
        assert not list((tmp_path / "run").rglob("*.npz")), f"a refused run wrote a checkpoint: {err}"
    if code == 2:
        assert not (tmp_path / "run").exists(), f"a refused run left its folder: {err}"
