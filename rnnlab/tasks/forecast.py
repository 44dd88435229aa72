"""Multi-step time-series forecasting on a held-out tail (sunspots, CO2, or the user's CSV column).

The series is split in time: train | val (``test_size`` points) | test (the last ``test_size``).
Values are standardised with the training part's mean and std, and each window is taken relative
to its last value (so a trending level, as in CO2, does not leave the range seen in training). The
model reads ``window`` past values and emits the next ``horizon`` at once. Evaluation makes
forecasts from origins every ``horizon`` points across the tail (each from the true history up to
its origin) and reports MAE/RMSE in the series' own units, beside naive (repeat the last value),
seasonal-naive (repeat the last season) and ARIMA (statsmodels; fitted on the training part,
applied at each origin).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import fetch
from ..data.tables import read_series
from ..models import ModelConfig
from ..train.distributed import Dist
from .base import Task, device_of

# defaults per built-in series: window, horizon, test_size, season, ARIMA order
PRESETS: dict[str, dict[str, Any]] = {
    "sunspots": {"window": 40, "horizon": 10, "test_size": 40, "season": 11, "arima": (9, 0, 0)},
    "co2": {"window": 156, "horizon": 52, "test_size": 208, "season": 52, "arima": (3, 1, 1)},
}


class ForecastTask(Task):
    unit = "window"

    def __init__(
        self,
        series: Tensor,
        *,
        source: str,
        window: int,
        horizon: int,
        test_size: int,
        season: int,
        arima: tuple[int, int, int] = (2, 1, 1),
        batch_size: int = 32,
        value_col: str = "value",
    ) -> None:
        n = series.numel()
        if test_size < horizon:
            raise ValueError(f"test_size: expected at least horizon={horizon}, got {test_size}")
        self.n_train = n - 2 * test_size
        if self.n_train < window + horizon + batch_size:
            raise ValueError(
                f"series: expected at least {window + horizon + batch_size + 2 * test_size} "
                f"values for window={window}, horizon={horizon}, test_size={test_size}, "
                f"batch_size={batch_size}, got {n}"
            )
        self.name = f"forecast ({source})"
        self.series, self.source, self.value_col = series.double(), source, value_col
        self.window, self.horizon, self.test_size, self.season = window, horizon, test_size, season
        self.arima, self.batch_size = tuple(arima), batch_size
        train = self.series[: self.n_train]
        self.mean, self.std = float(train.mean()), float(train.std())
        scaled = ((self.series - self.mean) / self.std).float()
        span = window + horizon
        starts = torch.arange(0, self.n_train - span + 1)
        x = torch.stack([scaled[s : s + window] for s in starts])  # (N, window)
        y = torch.stack([scaled[s + window : s + span] for s in starts])  # (N, horizon)
        # relative to each window's last value: the level can drift past the training range (CO2)
        self.train_x, self.train_y = x - x[:, -1:], y - x[:, -1:]
        self.scaled = scaled

    def origins(self, split: str) -> list[int]:
        if split not in ("val", "test"):
            raise ValueError(f"split: expected 'val' or 'test', got {split!r}")
        begin = self.n_train if split == "val" else self.n_train + self.test_size
        return list(range(begin, begin + self.test_size - self.horizon + 1, self.horizon))

    def model_config(self, base: ModelConfig) -> ModelConfig:
        base.kind, base.horizon = "forecaster", self.horizon
        return base

    def num_batches(self, dist: Dist) -> int:
        return len(self.train_x) // self.batch_size

    def batches(self, epoch: int, start: int, dist: Dist) -> Iterator[Any]:
        order = torch.randperm(len(self.train_x), generator=torch.Generator().manual_seed(10_000 + epoch))
        for k in range(start, self.num_batches(dist)):
            idx = dist.shard(order[k * self.batch_size : (k + 1) * self.batch_size], 0)
            yield self.train_x[idx], self.train_y[idx]

    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        dev = device_of(model)
        x, y = batch[0].to(dev), batch[1].to(dev)  # (B, window), (B, horizon)
        return F.mse_loss(model(x), y), None, len(x)

    def _score(self, forecasts: Tensor, split: str) -> dict[str, float]:
        truth = torch.stack([self.series[o : o + self.horizon] for o in self.origins(split)])
        err = forecasts.double() - truth  # (origins, horizon)
        return {"mae": float(err.abs().mean()), "rmse": float(err.pow(2).mean().sqrt())}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        x = torch.stack([self.scaled[o - self.window : o] for o in self.origins(split)])  # (O, window)
        anchor = x[:, -1:]
        scaled_pred = (model((x - anchor).to(device_of(model))).cpu() + anchor).float()  # (O, horizon)
        pred = scaled_pred.double() * self.std + self.mean  # in the series' units
        scaled_truth = torch.stack([self.scaled[o : o + self.horizon] for o in self.origins(split)])
        loss = float(F.mse_loss(scaled_pred.double(), scaled_truth.double()))
        return {"loss": loss, **self._score(pred, split)}

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        from statsmodels.tsa.arima.model import ARIMA

        s, h, m = self.series, self.horizon, self.season
        naive = torch.stack([s[o - 1].repeat(h) for o in self.origins(split)])
        seasonal = torch.stack(
            [torch.stack([s[o - m + (k % m)] for k in range(h)]) for o in self.origins(split)]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter from statsmodels
            fitted = ARIMA(s[: self.n_train].numpy(), order=self.arima).fit()
            arima = torch.stack(
                [torch.from_numpy(fitted.apply(s[:o].numpy()).forecast(h)) for o in self.origins(split)]
            )
        return {
            "naive": self._score(naive, split),
            f"seasonal naive (m={m})": self._score(seasonal, split),
            f"ARIMA{self.arima}": self._score(arima, split),
        }

    def summary(self, metrics: dict[str, float]) -> str:
        return f"MAE {metrics['mae']:.4g}, RMSE {metrics['rmse']:.4g} (scaled MSE {metrics['loss']:.4f})"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "forecast",
            "source": self.source,
            "value_col": self.value_col,
            "window": self.window,
            "horizon": self.horizon,
            "test_size": self.test_size,
            "season": self.season,
            "arima": list(self.arima),
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_source(cls, source: str, value_col: str = "value", **kw: Any) -> ForecastTask:
        """A built-in series (``sunspots``, ``co2``; presets fill unset options) or a CSV path."""
        if source in PRESETS:
            path, col = fetch.series_path(source), "value"
            for key, value in PRESETS[source].items():
                if kw.get(key) is None:
                    kw[key] = value
        else:
            path, col = source, value_col
        missing = [k for k in ("window", "horizon", "test_size", "season") if kw.get(k) is None]
        if missing:
            raise ValueError(f"{missing[0]}: expected a value for a custom series, got none")
        kw = {k: v for k, v in kw.items() if v is not None}
        return cls(read_series(path, col), source=source, value_col=col, **kw)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str | None = None) -> ForecastTask:
        kw = {k: data[k] for k in ("window", "horizon", "test_size", "season", "batch_size")}
        return cls.from_source(source or data["source"], data["value_col"], arima=tuple(data["arima"]), **kw)
