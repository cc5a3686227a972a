"""Tests for numpy_gpt/finetune/preference.py (DPO): the loss and its hand-derived gradient against
finite differences (float64) and PyTorch autograd (float32), the collate function and its masks,
the LoRA reference, the training loop's resume, and `numpy-gpt finetune-dpo` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import reference, torch_reference

from numpy_gpt import run as training_run
from numpy_gpt.cli import main
from numpy_gpt.finetune.instruct import RESPONSE_HEADER, format_input
from numpy_gpt.finetune.preference import (
    PreferenceDataLoader,
    PreferenceDataset,
    batch_logprobs,
    before_and_after,
    collate_preference,
    dpo_loss,
    dpo_rewards,
    dpo_step,
    reference_logprobs,
    sequence_logprobs,
    sequence_logprobs_backward,
    train_dpo,
)
from numpy_gpt.finetune.preference_data import synthetic_preference_data
from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.interrupt import TrainingInterrupted
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.lora import LinearWithLoRA, lora_disabled, replace_linear_with_lora
from numpy_gpt.nn.module import Module
from numpy_gpt.optim import AdamW

torch = reference("torch")
F = reference("torch.nn.functional")

TINY = {"vocab_size": 13, "context_length": 12, "emb_dim": 8, "n_heads": 2, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": True}
BETA = 0.5


def pairs(seed: int = 0, n: int = 3) -> list[tuple[list[int], list[int], list[int]]]:
    """n random (prompt, chosen, rejected) items of ids in [1, 13), of different lengths."""
    rng = np.random.default_rng(seed)
    return [tuple(rng.integers(1, 13, rng.integers(low, 5)).tolist() for low in (2, 1, 1)) for _ in range(n)]


def torch_dpo(logits: torch.Tensor, targets: np.ndarray, mask: np.ndarray, ref_c: np.ndarray,
              ref_r: np.ndarray, beta: float):
    """The same formula written with torch autograd: log_softmax, gather, masked sum, logsigmoid."""
    logp_tok = torch.log_softmax(logits, dim=-1).gather(-1, torch.from_numpy(targets)[..., None])[..., 0]
    logp = (logp_tok * torch.from_numpy(mask)).sum(-1)
    logp.retain_grad()
    p = len(ref_c)
    z = beta * ((logp[:p] - torch.from_numpy(ref_c)) - (logp[p:] - torch.from_numpy(ref_r)))
    loss = -F.logsigmoid(z).mean()
    loss.backward()
    return loss, logp


# -- the loss ----------------------------------------------------------------------------------------
def test_dpo_loss_hand_values_and_stability():
    zero = np.zeros(4)
    loss, d_c, d_r = dpo_loss(zero, zero, zero, zero, beta=0.1)      # policy = reference: z = 0
    assert loss == pytest.approx(np.log(2.0), rel=1e-15)
    np.testing.assert_allclose(d_c, -0.1 * 0.5 / 4, rtol=1e-15)      # -beta sigmoid(0) / P
    np.testing.assert_allclose(d_r, +0.1 * 0.5 / 4, rtol=1e-15)
    # z = +-1000: log(1 + exp(1000)) overflows, logaddexp does not
    loss, d_c, _ = dpo_loss(np.array([1000.0]), np.zeros(1), np.zeros(1), np.zeros(1), beta=1.0)
    assert loss == 0.0 and d_c[0] == pytest.approx(0.0, abs=1e-300)
    loss, d_c, _ = dpo_loss(np.array([-1000.0]), np.zeros(1), np.zeros(1), np.zeros(1), beta=1.0)
    assert loss == pytest.approx(1000.0, rel=1e-15) and d_c[0] == pytest.approx(-1.0, rel=1e-15)
    rewards = dpo_rewards(np.array([1.0, 0.0, -1.0]), np.zeros(3), np.zeros(3), np.zeros(3), beta=0.5)
    assert rewards["accuracy"] == pytest.approx(1 / 3)     # TRL: chosen_reward > rejected_reward; a tie is 0
    assert rewards["ties"] == pytest.approx(1 / 3)
    assert rewards["margin"] == pytest.approx(0.0) and rewards["chosen_reward"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(zero, zero, zero, zero, beta=0.0)
    with pytest.raises(ValueError, match="one value per pair"):
        dpo_loss(zero, np.zeros(3), zero, zero)


def test_token_logprobs_is_a_deprecated_alias_of_log_softmax_at():
    from numpy_gpt.finetune.preference import token_logprobs
    from numpy_gpt.nn.loss import log_softmax_at

    logits, targets = np.random.default_rng(0).standard_normal((4, 9)), np.array([0, 3, 8, 3])
    with pytest.warns(DeprecationWarning, match="log_softmax_at"):
        assert np.array_equal(token_logprobs(logits, targets), log_softmax_at(logits, targets))


def test_sequence_logprobs_and_dpo_match_torch_float32():
    rng = np.random.default_rng(1)
    batch = collate_preference(pairs(1, n=3), pad_token_id=0)
    logits = rng.standard_normal((*batch.inputs.shape, 13)).astype(np.float32) * 3
    ref_c, ref_r = (rng.standard_normal(3).astype(np.float32) * 2 for _ in range(2))

    logp = sequence_logprobs(logits, batch.targets, batch.mask)
    loss, d_c, d_r = dpo_loss(logp[:3], logp[3:], ref_c, ref_r, BETA)
    dlogits = sequence_logprobs_backward(np.concatenate([d_c, d_r]), logits, batch.targets, batch.mask)

    t_logits = torch.from_numpy(logits).requires_grad_()
    t_loss, t_logp = torch_dpo(t_logits, batch.targets, batch.mask, ref_c, ref_r, BETA)
    assert logp.dtype == np.float32 and dlogits.dtype == np.float32 and d_c.dtype == np.float32
    np.testing.assert_allclose(logp, t_logp.detach().numpy(), rtol=1e-4, atol=1e-4)
    assert loss == pytest.approx(t_loss.item(), rel=1e-4, abs=1e-4)
    np.testing.assert_allclose(np.concatenate([d_c, d_r]), t_logp.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dlogits, t_logits.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_dpo_loss_gradcheck_wrt_logits_float64():
    rng = np.random.default_rng(2)
    batch = collate_preference(pairs(2, n=2), pad_token_id=0)
    logits = rng.standard_normal((*batch.inputs.shape, 13))
    ref_c, ref_r = rng.standard_normal(2), rng.standard_normal(2)

    def loss_fn(z):
        logp = sequence_logprobs(z, batch.targets, batch.mask)
        loss, d_c, d_r = dpo_loss(logp[:2], logp[2:], ref_c, ref_r, BETA)
        dz = sequence_logprobs_backward(np.concatenate([d_c, d_r]), z, batch.targets, batch.mask)
        return np.array(loss), lambda dloss: dloss * dz

    report = gradcheck(loss_fn, logits)
    assert report.ok, str(report)


def test_prompt_and_padding_get_exactly_zero_gradient():
    rng = np.random.default_rng(3)
    batch = collate_preference(pairs(3, n=4), pad_token_id=0)
    logits = rng.standard_normal((*batch.inputs.shape, 13)).astype(np.float32)
    dlogits = sequence_logprobs_backward(rng.standard_normal(8), logits, batch.targets, batch.mask)
    assert np.all(dlogits[~batch.mask] == 0.0)
    assert np.all(np.abs(dlogits[batch.mask]).sum(axis=-1) > 0)
    # and the log-probabilities do not depend on those positions at all
    changed = logits.copy()
    changed[~batch.mask] = rng.standard_normal(changed[~batch.mask].shape)
    np.testing.assert_array_equal(sequence_logprobs(changed, batch.targets, batch.mask),
                                  sequence_logprobs(logits, batch.targets, batch.mask))


# -- a tiny GPT end to end ---------------------------------------------------------------------------
class DPOObjective(Module):
    """The DPO loss of a fixed batch as a function of the model's parameters (for gradcheck)."""

    def __init__(self, model, batch, ref_c, ref_r):
        super().__init__()
        self.model, self.batch, self.ref_c, self.ref_r = model, batch, ref_c, ref_r
        self._cache = None

    def forward(self, idx):
        pc, pr, logits = batch_logprobs(self.model, self.batch)
        loss, d_c, d_r = dpo_loss(pc, pr, self.ref_c, self.ref_r, BETA)
        if self._need_cache():
            self._cache = (logits, np.concatenate([d_c, d_r]))
        return np.array(loss)

    def backward(self, dloss):
        logits, dlogp = self._pop_cache()
        self.model.backward(sequence_logprobs_backward(dlogp * dloss, logits, self.batch.targets,
                                                       self.batch.mask))
        return None


def test_tiny_gpt_dpo_gradcheck_float64():
    model = GPTModel(TINY, seed=0, dtype=np.float64)
    batch = collate_preference(pairs(4, n=2), pad_token_id=0)
    rng = np.random.default_rng(4)
    objective = DPOObjective(model, batch, rng.standard_normal(2), rng.standard_normal(2))
    report = gradcheck(objective, batch.inputs, max_elems_per_param=6)
    assert report.ok, str(report)
    assert any(row.name.endswith("tok_emb.weight") for row in report.rows)


def test_tiny_gpt_dpo_matches_torch_every_gradient_float32():
    model = GPTModel(TINY, seed=1)
    # built directly: torch_gpt_from_numpy's "meta" device costs seconds on its first use
    ref = torch_reference.load_numpy_state_dict(torch_reference.GPTModel(model.cfg), model.state_dict())
    batch = collate_preference(pairs(5, n=3), pad_token_id=0)
    rng = np.random.default_rng(5)
    ref_c, ref_r = (rng.standard_normal(3).astype(np.float32) for _ in range(2))

    model.zero_grad()
    loss, rewards = dpo_step(model, batch, ref_c, ref_r, BETA)
    t_loss, _ = torch_dpo(ref(torch.from_numpy(batch.inputs)), batch.targets, batch.mask, ref_c, ref_r, BETA)
    assert loss == pytest.approx(t_loss.item(), rel=1e-4, abs=1e-4)
    grads = torch_reference.numpy_grads(ref)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == np.float32, name
        np.testing.assert_allclose(p.grad, grads[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert set(rewards) == {"chosen_reward", "rejected_reward", "margin", "accuracy", "ties"}


def test_rewards_and_reward_accuracy_are_trls_and_all_ties_are_not_a_measurement():
    """TRL's DPOTrainer: chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps), the same for
    rejected, rewards/accuracies = (chosen_rewards > rejected_rewards).float().mean(): a tie is 0.
    Before the first update every pair ties, and the line says n/a rather than 0 % (or 50 %)."""
    pc, pr = np.array([-3.0, -5.0, -4.0, -6.0]), np.array([-4.0, -5.0, -4.0, -5.0])
    rc, rr = np.array([-3.5, -5.0, -4.0, -6.0]), np.array([-4.0, -5.0, -4.0, -5.0])
    rewards = dpo_rewards(pc, pr, rc, rr, beta=0.1)
    chosen, rejected = 0.1 * (pc - rc), 0.1 * (pr - rr)
    assert rewards["chosen_reward"] == pytest.approx(chosen.mean()) == pytest.approx(0.0125)
    assert rewards["accuracy"] == float(np.mean(chosen > rejected)) == 0.25 and rewards["ties"] == 0.75
    tied = dpo_rewards(pc, pr, pc, pr, beta=0.1)
    assert tied["accuracy"] == 0.0 and tied["ties"] == 1.0
    line = before_and_after({**tied, "preference_accuracy": 0.25}, {**rewards, "preference_accuracy": 0.5})
    assert line.startswith("reward accuracy n/a (policy = reference) -> 25.0%, reward margin 0.000 -> 0.013")


# -- the collate function ----------------------------------------------------------------------------
def test_collate_by_hand():
    batch = collate_preference([([1, 2, 3], [4, 5], [6]), ([7], [8], [9, 10, 11])], pad_token_id=0)
    # rows: chosen 1 2 3 4 5 | 7 8, then rejected 1 2 3 6 | 7 9 10 11; padded to 5 + 1 = 6 columns
    np.testing.assert_array_equal(batch.inputs, [[1, 2, 3, 4, 5], [7, 8, 0, 0, 0],
                                                 [1, 2, 3, 6, 0], [7, 9, 10, 11, 0]])
    np.testing.assert_array_equal(batch.targets, [[2, 3, 4, 5, 0], [8, 0, 0, 0, 0],
                                                  [2, 3, 6, 0, 0], [9, 10, 11, 0, 0]])
    np.testing.assert_array_equal(batch.mask, [[0, 0, 1, 1, 0], [1, 0, 0, 0, 0],
                                               [0, 0, 1, 0, 0], [1, 1, 1, 0, 0]])
    assert batch.n_pairs == 2 and batch.inputs.dtype == np.int64 and batch.mask.dtype == bool
    short = collate_preference([([1, 2, 3], [4, 5], [6])], pad_token_id=0, allowed_max_length=3)
    np.testing.assert_array_equal(short.mask, [[0, 0, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="empty batch"):
        collate_preference([])


def test_dataset_masks_the_whole_prompt_and_appends_end_of_text(gpt2_vocab_dir):
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    tok = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    entry = synthetic_preference_data()[0]
    ds = PreferenceDataset([entry], tok, eos_id=50256)
    prompt, chosen, rejected = ds[0]
    assert tok.decode(prompt) == format_input(entry) + RESPONSE_HEADER
    assert tok.decode(chosen) == entry["chosen"] + "<|endoftext|>" and rejected[-1] == 50256
    batch = collate_preference([ds[0]], pad_token_id=50256)
    assert tok.decode(batch.targets[0][batch.mask[0]]) == entry["chosen"] + "<|endoftext|>"
    assert tok.decode(batch.targets[1][batch.mask[1]]) == entry["rejected"] + "<|endoftext|>"
    with pytest.raises(ValueError, match=r"my file \(train\): 1 of 1 entries have prompts that leave no "
                                         r"room for an answer in 20 tokens \(entry 0 first, \d+ tokens; "
                                         r"\d+ tokens hold"):
        PreferenceDataset([entry], tok, max_length=20, where="my file (train)")


# -- LoRA: the reference is the base model with adapters off -----------------------------------------
def test_lora_disabled_gives_exactly_the_base_models_logprobs():
    model = GPTModel(TINY, seed=2)
    batch = collate_preference(pairs(6, n=3), pad_token_id=0)
    base_c, base_r, _ = batch_logprobs(model.eval(), batch)
    model.requires_grad_(False)
    replace_linear_with_lora(model, rank=2, alpha=4.0, seed=0)
    rng = np.random.default_rng(6)
    for name, p in model.named_parameters():
        if name.endswith("lora.B"):
            p.data[...] = rng.standard_normal(p.shape)               # adapters that change the output
    on_c, _, _ = batch_logprobs(model, batch)
    assert not np.allclose(on_c, base_c)
    with lora_disabled(model):
        off_c, off_r, _ = batch_logprobs(model, batch)
        assert not any(m.enabled for m in model.modules() if isinstance(m, LinearWithLoRA))
    np.testing.assert_array_equal(off_c, base_c)
    np.testing.assert_array_equal(off_r, base_r)
    assert all(m.enabled for m in model.modules() if isinstance(m, LinearWithLoRA))

    loader = PreferenceDataLoader(_IdsDataset(pairs(6, n=3)), batch_size=3, pad_token_id=0)
    ref_c, ref_r = reference_logprobs(model, loader)
    np.testing.assert_array_equal(ref_c, base_c.astype(np.float64))
    np.testing.assert_array_equal(ref_r, base_r.astype(np.float64))


def test_lora_dpo_step_trains_only_the_adapters():
    model = GPTModel(TINY, seed=3)
    model.requires_grad_(False)
    replace_linear_with_lora(model, rank=2, alpha=4.0, seed=0)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    batch = collate_preference(pairs(7, n=3), pad_token_id=0)
    optimizer = AdamW(model.parameters(trainable_only=True), lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        optimizer.zero_grad()
        dpo_step(model, batch, np.zeros(3, np.float32), np.zeros(3, np.float32), BETA)
        optimizer.step()
    for name, p in model.named_parameters():
        changed = not np.array_equal(p.data, before[name])
        assert changed == (".lora." in name), name         # every adapter moves, nothing else does


# -- the training loop -------------------------------------------------------------------------------
class _IdsDataset:
    def __init__(self, items):
        self.items = items

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


class _StopAfter:
    """Stands in for interrupt.stop_on_interrupt: 'Ctrl-C' is pressed during step ``n``."""

    def __init__(self, n):
        self.n, self.checks = n, 0

    @property
    def requested(self):
        self.checks += 1
        return self.checks >= self.n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _run(tmp_path, monkeypatch=None, stop_at=None, resume=False):
    model = GPTModel(TINY, seed=4)
    data = _IdsDataset(pairs(8, n=12))
    train = PreferenceDataLoader(data, 3, shuffle=True, drop_last=True, seed=1, pad_token_id=0)
    val = PreferenceDataLoader(_IdsDataset(pairs(9, n=4)), 2, pad_token_id=0)
    ref_train = reference_logprobs(model, PreferenceDataLoader(data, 3, pad_token_id=0))
    ref_val = reference_logprobs(model, val)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    if stop_at is not None:
        monkeypatch.setattr(training_run, "stop_on_interrupt", lambda: _StopAfter(stop_at))
    ckpt = tmp_path / "dpo-train.npz"
    history = train_dpo(model, train, val, optimizer, ref_train, ref_val, beta=BETA, num_epochs=2,
                        eval_freq=3, checkpoint_path=ckpt, resume_from=ckpt if resume else None,
                        progress=False)
    return model, history


def test_train_dpo_learns_and_resumes_exactly_after_ctrl_c(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    straight, history = _run(tmp_path / "a")
    assert len(history.losses) == 8 and history.eval_steps == [0, 3, 6, 7] and len(history.val) == 4
    assert history.losses[0] == pytest.approx(np.log(2), abs=1e-5)    # before the first update: z = 0
    assert history.losses[-1] < 0.6 and history.margins[-1] > 0

    (tmp_path / "b").mkdir()
    with pytest.raises(TrainingInterrupted) as stop:
        _run(tmp_path / "b", monkeypatch, stop_at=3)
    assert stop.value.step == 3
    monkeypatch.undo()
    resumed, resumed_history = _run(tmp_path / "b", resume=True)
    assert resumed_history.losses == history.losses and resumed_history.val == history.val
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=name)


# -- the command -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_instruct_checkpoint(tmp_path_factory):
    """A random tiny model with a BPE trained on the synthetic task, saved with its tokenizer."""
    from numpy_gpt.checkpoint import save_checkpoint
    from numpy_gpt.tokenizers.spec import tokenizer_spec
    from numpy_gpt.tokenizers.train_bpe import BPETokenizer
    data = synthetic_preference_data()
    text = "<|endoftext|>".join(format_input(e) + RESPONSE_HEADER + e["chosen"] + e["rejected"] for e in data)
    tok = BPETokenizer.train(text, 300)
    cfg = {"vocab_size": tok.n_vocab, "context_length": 160, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    path = tmp_path_factory.mktemp("init") / "instruct.npz"
    return save_checkpoint(path, GPTModel(cfg, seed=0), extra={"tokenizer": tokenizer_spec(tok)})


@pytest.mark.parametrize(("lora", "spelling"), [
    (0, "older"), (2, "older"),                 # --init FILE [--lora RANK]
    (0, "shared"), (2, "shared")])              # the other fine-tuning commands' flags
def test_finetune_dpo_command(tiny_instruct_checkpoint, tmp_path, capsys, monkeypatch, lora, spelling):
    """Full tuning and LoRA, in both spellings; each run is 'Ctrl-C'-ed after its second step and
    resumed."""
    out, data = tmp_path / "run", tmp_path / "pairs.json"
    data.write_text(json.dumps(synthetic_preference_data()[:60]))       # 51 / 3 / 6 pairs
    model = (["--init", str(tiny_instruct_checkpoint), "--lora", str(lora)] if spelling == "older" else
             ["--init", "checkpoint", "--checkpoint", str(tiny_instruct_checkpoint)]
             + (["--trainable", "lora", "--lora-rank", str(lora)] if lora else []))
    argv = ["finetune-dpo", *model, "--data", str(data), "--out", str(out),
            "--lr", "3e-3", "--eval-freq", "50", "--num-responses", "2", "--max-new-tokens", "4",
            "--no-progress"]
    monkeypatch.setattr(training_run, "stop_on_interrupt", lambda: _StopAfter(2))
    assert main(argv) == 130
    assert "interrupted after step 2 of 6; saved to" in capsys.readouterr().err
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resumed from step 2 of 6" in printed
    assert "Held-out pairs (6): reward accuracy n/a (policy = reference) ->" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    before = metrics["test_before"]
    assert before["ties"] == 1.0 and before["accuracy"] == 0.0 and before["margin"] == 0.0   # TRL's 0
    assert metrics["test_after"]["accuracy"] > 0.5 and metrics["lora_rank"] == lora
    responses = json.loads((out / "responses.json").read_text())
    assert len(responses) == 2 and {"response_before", "response_after", "chosen"} <= set(responses[0])
    assert (out / "dpo-curves.png").read_bytes()[:4] == b"\x89PNG"
    from numpy_gpt.checkpoint import load_checkpoint
    saved = load_checkpoint(out / "dpo.npz", load_optimizer=False)
    assert saved.extra["tokenizer"]["kind"] == "bpe" and not any(
        isinstance(m, LinearWithLoRA) for m in saved.model.modules())


def test_finetune_dpo_command_errors(tiny_instruct_checkpoint, tmp_path, capsys):
    assert main(["finetune-dpo", "--init", str(tmp_path / "none.npz")]) == 1
    assert "none.npz does not exist" in capsys.readouterr().err
    model = str(tiny_instruct_checkpoint)
    for argv, says in [
            ([], "needs its starting model: --checkpoint FILE"),
            (["--init", "gpt2-124M"], "not --init gpt2-124M: pass --checkpoint FILE"),
            (["--init", model, "--checkpoint", model], "name the starting model once"),
            (["--checkpoint", model, "--lora", "4", "--trainable", "all"],
             "--lora 4 means --trainable lora")]:
        assert main(["finetune-dpo", *argv, "--out", str(tmp_path / "refused")]) == 1
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "refused").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "chosen": "a"}]))
    assert main(["finetune-dpo", "--init", str(tiny_instruct_checkpoint), "--data", str(bad),
                 "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "bad.json, entry 0: missing field(s) rejected" in err and len(err.strip().splitlines()) == 1
