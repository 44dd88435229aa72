"""The training loop: truncated BPTT, clipping, schedules, early stopping, checkpoints, resume.

One step = one batch: forward (carrying the detached state from the previous window when the task
streams), backward, gradient-norm clipping, optimizer step. Evaluation runs every ``eval_every``
steps and at each epoch's end; checkpoints (``last.safetensors``) every ``ckpt_every`` steps and
at each evaluation, ``best.safetensors`` whenever validation loss improves. A checkpoint holds the
model, the optimizer, the RNG states of every rank, the carried state and the position in the data,
so ``resume=True`` continues the exact same run.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..models import ModelConfig, build_model
from . import checkpoint as ckpt_io
from .distributed import Dist
from .log import MetricsLog, progress

if TYPE_CHECKING:
    from ..tasks.base import Task

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("none", "cosine", "plateau")


@dataclass
class TrainConfig:
    epochs: int = 0  # stop after this many passes over the data (0: no limit)
    steps: int = 0  # stop after this many steps in all (0: no limit)
    time_budget: float = 0.0  # minutes of training (0: no limit)
    lr: float = 2e-3
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd
    weight_decay: float = 0.0
    clip: float = 1.0  # max global gradient norm (0: off)
    schedule: str = "cosine"  # over `steps`, else over the epochs, else over the time budget
    warmup: int = 0  # steps of linear warm-up
    min_lr: float = 0.05  # cosine floor, as a fraction of lr
    patience: int = 0  # stop after this many evaluations without improvement (0: never)
    eval_every: int = 0  # steps between evaluations (0: each epoch)
    ckpt_every: int = 0  # steps between checkpoints (0: at each evaluation)
    log_every: int = 20
    seed: int = 0
    out: str = "runs/train"
    resume: bool = False
    progress: bool = True
    device: str = "cpu"  # "cuda" trains on the GPU (the layers' reference path); torchrun: one GPU per rank


def _check(cfg: TrainConfig) -> None:
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {cfg.schedule!r}")
    for name in ("epochs", "steps", "warmup", "patience", "eval_every", "ckpt_every"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {getattr(cfg, name)}")
    for name in ("lr", "log_every"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name}: expected a number > 0, got {getattr(cfg, name)}")
    if not (cfg.epochs or cfg.steps or cfg.time_budget):
        raise ValueError("epochs/steps/time_budget: expected at least one limit > 0, got none")
    if cfg.clip < 0 or cfg.time_budget < 0:
        raise ValueError(f"clip/time_budget: expected numbers >= 0, got {cfg.clip}/{cfg.time_budget}")


def _carry_list(carry: Any) -> list[torch.Tensor]:
    return [] if carry is None else list(carry) if isinstance(carry, tuple) else [carry]


def _carry_from(parts: list[torch.Tensor]) -> Any:
    return None if not parts else parts[0] if len(parts) == 1 else tuple(parts)


class Trainer:
    def __init__(self, task: Task, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
        _check(cfg)
        if cfg.device not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda', got {cfg.device!r}")
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "device: expected 'cpu' on this machine (no CUDA device is available), got 'cuda'"
            )
        self.task, self.cfg, self.dist = task, cfg, Dist.from_env(cuda=cfg.device == "cuda")
        self.device = torch.device(
            self.dist.device if cfg.device == "cuda" and self.dist.world > 1 else cfg.device
        )
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        self.model_cfg = task.model_config(model_cfg)
        self.model = build_model(self.model_cfg).to(self.device)
        torch.manual_seed(cfg.seed + 7919 * (self.dist.rank + 1))  # dropout streams differ per rank
        params = self.model.parameters()
        if cfg.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(params, cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.SGD(params, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.per_epoch = task.num_batches(self.dist)
        self.total = cfg.steps or cfg.epochs * self.per_epoch
        self.state = {
            "epoch": 0,
            "batch": 0,
            "step": 0,
            "elapsed": 0.0,
            "best": math.inf,
            "bad_evals": 0,
            "lr_scale": 1.0,
            "stopped": "",
        }
        self.log = MetricsLog(self.out, enabled=self.dist.main)
        self.carry: Any = None

    # -- learning rate -------------------------------------------------------------------------
    def lr_factor(self) -> float:
        cfg, st = self.cfg, self.state
        if cfg.warmup and st["step"] < cfg.warmup:
            return (st["step"] + 1) / cfg.warmup
        if cfg.schedule == "cosine":
            if self.total:
                p = st["step"] / self.total
            else:
                p = st["elapsed"] / (60 * cfg.time_budget) if cfg.time_budget else 0.0
            p = min(max(p, 0.0), 1.0)
            return cfg.min_lr + (1 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * p))
        return st["lr_scale"]

    # -- checkpoints ---------------------------------------------------------------------------
    def _checkpoint(self, path: Path) -> None:
        rng = self.dist.gather(torch.get_rng_state().unsqueeze(0), 0)  # (world, n)
        carry = [self.dist.gather(c, 1) for c in _carry_list(self.carry)]  # states are (L, B, H)
        if not self.dist.main:
            return
        optim, groups = ckpt_io.flatten_optimizer(self.opt.state_dict())
        train = {**self.state, "config": asdict(self.cfg), "param_groups": groups, "world": self.dist.world}
        ckpt_io.save(
            path,
            ckpt_io.Checkpoint(
                self.model.state_dict(),
                self.model_cfg.to_json(),
                self.task.to_json(),
                train,
                optim,
                rng,
                carry,
            ),
        )

    def _resume(self) -> bool:
        path = self.out / "last.safetensors"
        if not (self.cfg.resume and path.exists()):
            return False
        ck = ckpt_io.load(path)
        if ck.train.get("world") != self.dist.world:
            raise ValueError(
                f"resume: expected the checkpoint's {ck.train.get('world')} processes, got {self.dist.world}"
            )
        self.model.load_state_dict(ck.model_state)
        self.opt.load_state_dict(ckpt_io.unflatten_optimizer(ck.optim_state, ck.train["param_groups"]))
        assert ck.rng is not None
        torch.set_rng_state(ck.rng[self.dist.rank].clone())
        self.carry = _carry_from([self.dist.shard(c, 1).clone().to(self.device) for c in ck.carry])
        self.state.update({k: ck.train[k] for k in self.state})
        self.log.resume_at(self.state["step"])
        return True

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model, "val")
        self.log.add({"split": "val", "step": self.state["step"], "epoch": self.state["epoch"], **metrics})
        if metrics["loss"] < self.state["best"] - 1e-6:
            self.state.update(best=metrics["loss"], bad_evals=0)
            self._checkpoint(self.out / "best.safetensors")
        else:
            self.state["bad_evals"] += 1
            if self.cfg.schedule == "plateau":
                self.state["lr_scale"] *= 0.5
        self._checkpoint(self.out / "last.safetensors")
        return metrics

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg, st, task = self.cfg, self.state, self.task
        resumed = self._resume()
        if not resumed:
            self.log.start_fresh()
        net = self.dist.wrap(self.model)
        budget = 60 * cfg.time_budget
        bar = progress(
            self.total or (int(budget) if budget else None),
            cfg.progress and self.dist.main,
            "step" if self.total else "s",
        )
        bar.update(st["step"] if self.total else int(st["elapsed"]))
        metrics: dict[str, float] = {}
        t_last, seen, losses = time.perf_counter(), 0, []
        while not st["stopped"]:
            if cfg.epochs and st["epoch"] >= cfg.epochs:
                st["stopped"] = "epochs"
                break
            for batch in task.batches(st["epoch"], st["batch"], self.dist):
                t0 = time.perf_counter()
                for group in self.opt.param_groups:
                    group["lr"] = cfg.lr * self.lr_factor()
                net.train()
                loss, carry, n = task.loss(net, batch, self.carry)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                self.opt.step()
                self.carry = carry
                st["step"] += 1
                st["batch"] += 1
                st["elapsed"] += time.perf_counter() - t0
                losses.append(float(loss.detach()))
                seen += n
                if st["step"] % cfg.log_every == 0:
                    now = time.perf_counter()
                    rate = self.dist.world * seen / (now - t_last)
                    rec = {
                        "split": "train",
                        "step": st["step"],
                        "epoch": st["epoch"],
                        "loss": self.dist.mean(sum(losses) / len(losses)),
                        "lr": self.opt.param_groups[0]["lr"],
                        f"{task.unit}s_per_s": rate,
                        "elapsed": st["elapsed"],
                    }
                    self.log.add(rec)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", rate=f"{rate:,.0f} {task.unit}/s")
                    t_last, seen, losses = now, 0, []
                bar.update(1) if self.total else bar.update(int(st["elapsed"]) - bar.n)
                if cfg.eval_every and st["step"] % cfg.eval_every == 0:
                    metrics = self.evaluate()
                elif cfg.ckpt_every and st["step"] % cfg.ckpt_every == 0:
                    self._checkpoint(self.out / "last.safetensors")
                if self.dist.any(bool(budget) and st["elapsed"] >= budget):
                    st["stopped"] = "time budget"
                elif cfg.steps and st["step"] >= cfg.steps:
                    st["stopped"] = "steps"
                elif cfg.patience and st["bad_evals"] >= cfg.patience:
                    st["stopped"] = "early stopping"
                if st["stopped"]:
                    break
            else:
                st.update(epoch=st["epoch"] + 1, batch=0)
                self.carry = None
                if not cfg.eval_every or st["step"] % cfg.eval_every:
                    metrics = self.evaluate()
                if cfg.patience and st["bad_evals"] >= cfg.patience:
                    st["stopped"] = "early stopping"
        bar.close()
        if not metrics or self.log.records[-1]["split"] != "val":
            metrics = self.evaluate()
        self._checkpoint(self.out / "last.safetensors")
        self.log.write_csv()
        self.log.plot(self.out / "loss.png", f"{task.name}: {self.model_cfg.cell.upper()}")
        return {
            "stopped": st["stopped"],
            "steps": st["step"],
            "epochs": st["epoch"],
            "train_minutes": st["elapsed"] / 60,
            "best_val_loss": st["best"],
            "val": metrics,
        }
