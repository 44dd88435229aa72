"""Gates and cells of a trained language model over a text (Karpathy, Johnson & Fei-Fei 2015).

``record`` steps the model's first layer through the text with the cell equations of
``rnnlab.cells`` written out so that every gate is kept (the test checks that the recorded ``h``
equals the layer's own output). A gate is *left-saturated* at a step when its activation is
< 0.1 and *right-saturated* when > 0.9; per unit we report the fraction of steps in each state.
``find_units`` picks the cell units whose activation tracks a property of the text (inside
brackets, position in the line, speaker-name lines), and ``colour_html`` renders the text with each
character's background coloured by a unit's value.
"""

from __future__ import annotations

import html
from typing import Any

import torch
from torch import Tensor

from ..models import LanguageModel

GATES = {"lstm": ("input i", "forget f", "output o"), "gru": ("reset r", "update z")}


@torch.no_grad()
def record(model: LanguageModel, ids: Tensor) -> dict[str, Tensor]:
    """Per-step values ``(T, H)`` of every gate, the candidate, ``c`` (LSTM) and ``h`` of layer 0."""
    rnn, cell = model.rnn, model.cfg.cell
    W_ih, W_hh = rnn.weight_ih_l0, rnn.weight_hh_l0
    b_ih = rnn.bias_ih_l0 if rnn.bias else torch.zeros(W_ih.shape[0])
    b_hh = rnn.bias_hh_l0 if rnn.bias else torch.zeros(W_hh.shape[0])
    xs = model.embed(ids) @ W_ih.T + b_ih  # (T, G*H): input projections of all steps at once
    H = rnn.hidden_size
    h, c = torch.zeros(H), torch.zeros(H)
    keep: dict[str, list[Tensor]] = {}

    def put(name: str, value: Tensor) -> None:
        keep.setdefault(name, []).append(value)

    for x in xs:
        a = h @ W_hh.T + b_hh  # (G*H,)
        if cell == "lstm":
            i, f, g, o = (x + a).split(H)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g  # c_t = f ⊙ c_{t-1} + i ⊙ g
            h = o * c.tanh()  # h_t = o ⊙ tanh(c_t)
            for name, v in zip(("input i", "forget f", "output o", "candidate g", "c"), (i, f, o, g, c)):
                put(name, v)
        elif cell == "gru":
            xr, xz, xn = x.split(H)
            ar, az, an = a.split(H)
            r, z = (xr + ar).sigmoid(), (xz + az).sigmoid()
            n = (
                xn + (r * (an) if rnn.reset == "after" else (r * h) @ W_hh[2 * H :].T + b_hh[2 * H :])
            ).tanh()
            h = (1 - z) * n + z * h  # h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}
            for name, v in zip(("reset r", "update z", "candidate n"), (r, z, n)):
                put(name, v)
        else:
            act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
            h = act(x + a)
        put("h", h)
    return {k: torch.stack(v) for k, v in keep.items()}


def saturation(values: Tensor) -> dict[str, Any]:
    """Per-unit fractions of steps < 0.1 (left) and > 0.9 (right), and their means over units."""
    left = (values < 0.1).float().mean(0)  # (H,)
    right = (values > 0.9).float().mean(0)
    return {
        "left": left.tolist(),
        "right": right.tolist(),
        "mean_left": float(left.mean()),
        "mean_right": float(right.mean()),
        "mostly_right_units": int((right > 0.5).sum()),
        "mostly_left_units": int((left > 0.5).sum()),
    }


def text_features(text: str) -> dict[str, Tensor]:
    """Properties of each character position that interpretable units are known to track."""
    inside, col, caps, depth = [], [], [], 0
    for line in text.splitlines(keepends=True):
        body = line.strip()
        speaker = float(len(body) > 1 and body.rstrip(".").isupper())  # e.g. "ROMEO."
        for pos, ch in enumerate(line):
            depth += ch in "[("
            inside.append(float(depth > 0))
            depth = max(0, depth - (ch in "])"))
            col.append(float(pos))
            caps.append(speaker)
    return {
        "inside brackets": torch.tensor(inside),
        "position in line": torch.tensor(col),
        "speaker-name line": torch.tensor(caps),
    }


def find_units(acts: Tensor, feats: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """For each feature, the unit whose activation ``(T, H)`` correlates most (Pearson, |r|)."""
    z = (acts - acts.mean(0)) / acts.std(0, correction=0).clamp_min(1e-8)
    found = {}
    for name, f in feats.items():
        fz = (f - f.mean()) / f.std(correction=0).clamp_min(1e-8)
        r = (z * fz[:, None]).mean(0)  # (H,)
        unit = int(r.abs().argmax())
        found[name] = {"unit": unit, "r": float(r[unit])}
    return found


def colour_html(text: str, values: Tensor, title: str) -> str:
    """``text`` with each character's background coloured by ``values`` in [-1, 1] (blue − / red +)."""
    spans = []
    for ch, v in zip(text, values.clamp(-1, 1).tolist()):
        rgb = "220,40,40" if v > 0 else "40,90,220"
        esc = "<br>" if ch == "\n" else "&nbsp;" if ch == " " else html.escape(ch)
        spans.append(f'<span style="background:rgba({rgb},{abs(v):.2f})">{esc}</span>')
    return f'<div class="coloured"><h4>{html.escape(title)}</h4><p class="mono">{"".join(spans)}</p></div>'
