"""Tasks, trainer and checkpoints end to end on small slices the tests make themselves."""

from __future__ import annotations

import json

import pytest
import torch
from tinydata import corpus, write_reviews, write_series

from rnnlab.models import LanguageModel, ModelConfig, build_model, detach_state
from rnnlab.tasks import ClassifierTask, ForecastTask, LanguageModelTask
from rnnlab.tasks.classify import macro_f1
from rnnlab.train import TrainConfig, Trainer
from rnnlab.train import checkpoint as ckpt_io
from rnnlab.train.distributed import Dist


def fit(task, tmp_path, cell="lstm", **kw):
    model = ModelConfig(kind="", cell=cell, hidden=kw.pop("hidden", 48), embed=16)
    cfg = TrainConfig(out=str(tmp_path / "run"), progress=False, **kw)
    trainer = Trainer(task, model, cfg)
    return trainer, trainer.fit()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_char_lm_learns_the_tiny_grammar(tmp_path, cell):
    task = LanguageModelTask(
        corpus(300), level="char", source="tiny", batch_size=8, bptt=25, val_fraction=0.1
    )
    _, result = fit(task, tmp_path, cell, epochs=12, lr=1e-2, eval_every=0)
    # unigram entropy of this text is ~2.8 nats; the grammar's conditional entropy far below 1
    assert result["val"]["loss"] < 0.9, result["val"]
    assert result["val"]["bpc"] == pytest.approx(result["val"]["loss"] / torch.log(torch.tensor(2.0)).item())


def test_word_lm_learns_and_uses_unk(tmp_path):
    text = corpus(600) + "zyzzyva\n"  # a word only in the validation tail
    task = LanguageModelTask(text, level="word", source="tiny", batch_size=8, bptt=10, val_fraction=0.05)
    assert "zyzzyva" not in task.vocab.index and int(task.val_ids[-2]) == task.vocab.index["<unk>"]
    _, result = fit(task, tmp_path, "gru", epochs=6, lr=1e-2)
    assert result["val"]["ppl"] < 4.0  # uniform over the ~22 words would be 22


def test_carried_state_equals_one_long_sequence():
    """Truncated BPTT's forward: window 2 started from window 1's state = the 2T sequence at once."""
    torch.manual_seed(0)
    task = LanguageModelTask(corpus(50), level="char", source="tiny", batch_size=4, bptt=16)
    model = build_model(task.model_config(ModelConfig(kind="", hidden=32, embed=8)))
    batches = list(task.batches(0, 0, Dist()))[:2]
    l1, carry, _ = task.loss(model, batches[0], None)
    l2, _, _ = task.loss(model, batches[1], carry)
    x = torch.cat([batches[0][0], batches[1][0]], 1)
    y = torch.cat([batches[0][1], batches[1][1]], 1)
    full, _, _ = task.loss(model, (x, y), None)
    assert torch.allclose((l1 + l2) / 2, full, atol=1e-6)
    assert carry[0].grad_fn is None  # detached: the next backward stops at the window edge


def test_classifier_beats_majority_and_reads_the_last_valid_step(tmp_path):
    task = ClassifierTask.from_source(
        str(write_reviews(tmp_path)), "text", "stars", batch_size=16, min_freq=1
    )
    _, result = fit(task, tmp_path, "gru", epochs=15, lr=1e-2, hidden=32)
    test = task.evaluate(load_best(tmp_path), "test")
    base = task.baselines("test")
    assert test["accuracy"] >= 0.9 > base["majority class"]["accuracy"] + 0.2
    assert base["bag-of-words logistic regression"]["accuracy"] >= 0.9


def load_best(tmp_path):
    ck = ckpt_io.load(tmp_path / "run" / "best.safetensors")
    model = build_model(ModelConfig(**ck.model))
    model.load_state_dict(ck.model_state)
    return model.eval()


def test_classifier_pooling_ignores_padding():
    torch.manual_seed(0)
    for pool in ("last", "mean", "max"):
        m = build_model(
            ModelConfig(
                kind="classifier", cell="lstm", hidden=8, embed=4, vocab_size=10, classes=3, pool=pool
            )
        ).eval()
        x = torch.randint(1, 10, (2, 7))
        lengths = torch.tensor([7, 3])
        both = m(x, lengths)
        alone = m(x[1:, :3], torch.tensor([3]))
        assert torch.allclose(both[1], alone[0], atol=1e-6), pool


def test_macro_f1_matches_hand_computed():
    pred, y = torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 1, 1, 1, 0])
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1, fn 1 -> 2/3
    assert macro_f1(pred, y, 2) == pytest.approx((0.5 + 2 / 3) / 2)


def test_forecaster_beats_naive_on_a_seasonal_series(tmp_path):
    task = ForecastTask.from_source(
        str(write_series(tmp_path)),
        "y",
        window=24,
        horizon=6,
        test_size=36,
        season=12,
        arima=(2, 0, 0),
        batch_size=16,
    )
    assert task.origins("test") == list(range(364, 395, 6))
    _, result = fit(task, tmp_path, "lstm", epochs=30, lr=5e-3, hidden=32)
    ours = task.evaluate(load_best(tmp_path), "test")
    base = task.baselines("test")
    assert ours["mae"] < base["naive"]["mae"], (ours, base)
    assert base["seasonal naive (m=12)"]["mae"] < base["naive"]["mae"]  # the series is seasonal


def test_trainer_writes_metrics_plot_and_checkpoints(tmp_path):
    task = LanguageModelTask(corpus(100), level="char", source="tiny", batch_size=4, bptt=20)
    trainer, result = fit(task, tmp_path, steps=30, log_every=5, eval_every=10, lr=5e-3)
    run = tmp_path / "run"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    per_epoch = trainer.per_epoch  # evaluations every 10 steps and at each epoch's end
    assert per_epoch == 27 and [r["step"] for r in recs if r["split"] == "val"] == [10, 20, 27, 30]
    assert [r["step"] for r in recs if r["split"] == "train"] == [5, 10, 15, 20, 25, 30]
    assert (run / "metrics.csv").read_text().startswith("split,step,epoch,loss")
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert result["steps"] == 30 and result["stopped"] == "steps"
    best = min(r["loss"] for r in recs if r["split"] == "val")
    assert result["best_val_loss"] == pytest.approx(best)


def test_cosine_schedule_and_warmup():
    task = LanguageModelTask(corpus(50), level="char", source="tiny", batch_size=4, bptt=20)
    t = Trainer(
        task,
        ModelConfig(kind=""),
        TrainConfig(steps=100, warmup=10, min_lr=0.1, progress=False, out="/tmp/rnnlab-unused"),
    )
    factors = []
    for step in (0, 9, 10, 55, 100):
        t.state["step"] = step
        factors.append(t.lr_factor())
    assert factors[:2] == [pytest.approx(0.1), pytest.approx(1.0)]
    assert factors[2] > factors[3] > factors[4] == pytest.approx(0.1)


def test_bad_training_options_are_named():
    task = LanguageModelTask(corpus(50), level="char", source="tiny", batch_size=4, bptt=20)
    for kw, msg in (
        ({"optimizer": "adagrad", "steps": 1}, "optimizer: expected one of"),
        ({}, "epochs/steps/time_budget: expected at least one limit"),
        ({"lr": 0.0, "steps": 1}, "lr: expected a number > 0, got 0.0"),
    ):
        with pytest.raises(ValueError, match=msg):
            Trainer(task, ModelConfig(kind=""), TrainConfig(**kw))


def test_checkpoint_round_trip_and_never_pickles(tmp_path):
    model = LanguageModel(ModelConfig(kind="lm", vocab_size=11, embed=8, hidden=8, tie=True))
    path = tmp_path / "c.safetensors"
    carry = [torch.randn(1, 2, 8), torch.randn(1, 2, 8)]
    ckpt_io.save(
        path,
        ckpt_io.Checkpoint(
            model.state_dict(),
            model.cfg.to_json(),
            {"task": "lm"},
            {"step": 3},
            {"0.exp_avg": torch.ones(2)},
            torch.get_rng_state()[None],
            carry,
        ),
    )
    ck = ckpt_io.load(path)
    assert ck.train == {"step": 3} and torch.equal(ck.carry[1], carry[1])
    again = LanguageModel(ModelConfig(**ck.model))
    again.load_state_dict(ck.model_state)
    assert again.head.weight is again.embed.weight  # tying survives the copy safetensors needs
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[8:9] == b"{"


def test_corrupt_truncated_or_foreign_checkpoints_are_clear_errors(tmp_path):
    model = build_model(ModelConfig(kind="forecaster", hidden=4))
    good = tmp_path / "good.safetensors"
    ckpt_io.save(good, ckpt_io.Checkpoint(model.state_dict(), model.cfg.to_json(), {}))
    data = good.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    for name in ("trunc", "junk"):
        with pytest.raises(ckpt_io.CheckpointError, match="truncated or corrupt"):
            ckpt_io.load(tmp_path / f"{name}.safetensors")
    with pytest.raises(ckpt_io.CheckpointError, match="no such file"):
        ckpt_io.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ckpt_io.CheckpointError, match="expected format 'rnnlab-checkpoint/1', got None"):
        ckpt_io.load(tmp_path / "foreign.safetensors")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = build_model(ModelConfig(kind="forecaster", hidden=4))
    path = tmp_path / "c.safetensors"
    ckpt_io.save(path, ckpt_io.Checkpoint(model.state_dict(), model.cfg.to_json(), {"v": 1}))
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_io, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save(path, ckpt_io.Checkpoint(model.state_dict(), model.cfg.to_json(), {"v": 2}))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.safetensors"]


def test_detach_state_cuts_the_graph():
    h = torch.ones(2, requires_grad=True) * 2
    assert detach_state((h, h))[0].grad_fn is None and detach_state(None) is None


def test_cuda_request_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the error case cannot occur here")
    task = LanguageModelTask(corpus(50), level="char", source="tiny", batch_size=4, bptt=20)
    with pytest.raises(ValueError, match="device: expected 'cpu' on this machine .* got 'cuda'"):
        Trainer(task, ModelConfig(kind=""), TrainConfig(steps=1, device="cuda"))
