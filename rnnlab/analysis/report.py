"""`rnnlab report`: one self-contained HTML page (images embedded) of what the runs showed.

It reads the results folders written by ``rnnlab experiment long-range`` (and its ablations),
``rnnlab analyze gradients``, ``rnnlab analyze gates`` and ``rnnlab train --task charlm``, and puts
the published results beside ours with their sources. A small script on the page records, once
loaded, how many figures decoded and whether any error occurred (``<body data-…>``), which is what
the browser test reads.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from .gradients import ratios

PUBLISHED = [
    (
        "Adding problem",
        "LSTM beats the 0.167 MSE baseline up to T = 400; the tanh RNN never does (128 units, RMSProp 1e-3).",
        "Arjovsky, Shah & Bengio 2016, Unitary Evolution RNNs, Fig. 2",
    ),
    (
        "Adding / temporal order",
        "LSTM solves the adding problem at T = 100–1000 and the temporal-order task at length 100–110.",
        "Hochreiter & Schmidhuber 1997, Long Short-Term Memory, §5.4, §5.6",
    ),
    (
        "Forget-gate bias",
        "Initialising the LSTM forget-gate bias to 1 closes most of the gap to the best "
        "architectures found by search.",
        "Jozefowicz, Zaremba & Sutskever 2015, ICML",
    ),
    (
        "Clipping",
        "Exploding gradients are handled by rescaling the gradient norm; vanishing ones are not.",
        "Pascanu, Mikolov & Bengio 2013, On the difficulty of training RNNs",
    ),
    (
        "Char-level LM",
        "Test cross-entropy 1.077 nats/char on War and Peace, 0.84 on the Linux kernel "
        "(best LSTM); LSTM ≈ GRU, both clearly ahead of the vanilla RNN; some gates are often "
        "right-saturated (forget gates remembering), few are left-saturated.",
        "Karpathy, Johnson & Fei-Fei 2015, Visualizing and Understanding Recurrent Networks",
    ),
]

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.mono{font-family:monospace;line-height:1.5}
.coloured{margin:1em 0;padding:.5em;border:1px solid #ddd}.note{color:#555;font-size:.9em}"""

CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.figures = imgs.length;
  document.body.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.errors = window.__errors.length;
});
</script>"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _long_range(folder: Path, title: str) -> list[str]:
    res = json.loads((folder / "results.json").read_text())
    meta = res["meta"]
    rows = [
        [
            r["task"],
            r["label"],
            r["steps"],
            r["seed"],
            r["metric"],
            f"{r['value']:.4g}",
            f"{r['baseline']:.4g}",
            "yes" if r["solved"] else "no",
            r["iters"],
        ]
        for r in res["rows"]
    ]
    return [
        f"<h2>{html.escape(title)}</h2>",
        f"<p class='note'>Command: <code>{html.escape(meta.get('command', ''))}</code> — "
        f"{meta['minutes']:.1f} min on {html.escape(meta['machine'])}, torch {meta['torch']}; "
        f"at most {meta['iters']} Adam steps per run, batch {meta['batch']}, hidden {meta['hidden']}.</p>",
        _img(folder / "long_range.png", title),
        _table(["task", "model", "T", "seed", "metric", "test", "baseline", "solved", "steps"], rows),
    ]


def build(runs: str | Path, out: str | Path) -> Path:
    """Gather every result found under ``runs`` into the HTML file ``out``; returns its path."""
    runs, out = Path(runs), Path(out)
    parts = [
        "<h1>rnnlab — the seed's claims, measured</h1>",
        "<p>The seed article says a plain RNN cannot carry information across many steps because its "
        "gradients vanish or explode, while the LSTM (and the GRU, with fewer parts) can. Below: "
        "long-range tasks, gradient flow through time, and the gates of a trained language model, "
        "with published results beside ours.</p>",
    ]
    found = 0
    for name, title in (("long-range", "Long-range tasks: RNN vs LSTM vs GRU"),
                        ("long-range-full", "Long-range tasks, full setting")):
        if (runs / name / "results.json").exists():
            parts += _long_range(runs / name, title)
            found += 1
    for ab in sorted(runs.glob("ablation-*")):
        if (ab / "results.json").exists():
            parts += _long_range(ab, f"Ablation: {ab.name.removeprefix('ablation-')}")
            found += 1
    g = runs / "gradients"
    if (g / "gradients.json").exists():
        res = json.loads((g / "gradients.json").read_text())
        T = res["steps"]
        rows = []
        for label, c in res["cases"].items():
            a, b = ratios(c["init"]), ratios(c["trained"])
            rows.append(
                [
                    label,
                    f"{a['last']:.2g} [{a['min']:.2g}, {a['max']:.2g}]",
                    f"{b['last']:.2g} [{b['min']:.2g}, {b['max']:.2g}]",
                    f"{c['trained_mse']:.4f}",
                    c["train_iters"],
                ]
            )
        parts += [
            "<h2>Gradient flow through time</h2>",
            "<p>‖∂L/∂h_t‖ for a loss at the last step only, from the layers' own backward, "
            "against the lag T − t, relative to its value at lag 0. Table: the ratio at the longest "
            "lag [smallest, largest over all lags].</p>",
            _img(g / "gradients.png", "gradient norm by lag"),
            _table(
                [
                    "model",
                    f"at initialisation (lag {T - 1})",
                    "after training",
                    "adding MSE after training",
                    "training steps",
                ],
                rows,
            ),
        ]
        found += 1
    gt = runs / "gates"
    if (gt / "gates.json").exists():
        res = json.loads((gt / "gates.json").read_text())
        rows = [
            [
                n,
                f"{s['mean_left']:.1%}",
                f"{s['mean_right']:.1%}",
                s["mostly_left_units"],
                s["mostly_right_units"],
            ]
            for n, s in res["saturation"].items()
        ]
        parts += [
            f"<h2>Gates of a trained character model ({html.escape(res['model'])})</h2>",
            f"<p>Over {res['chars']} characters of held-out text from <code>"
            f"{html.escape(res['checkpoint'])}</code>.</p>",
            _table(
                [
                    "gate",
                    "left-saturated (< 0.1)",
                    "right-saturated (> 0.9)",
                    "units mostly left",
                    "units mostly right",
                ],
                rows,
            ),
            _img(gt / "saturation.png", "gate saturation"),
            _img(gt / "gate_hist.png", "gate histograms"),
            (gt / "coloured.html").read_text() if (gt / "coloured.html").exists() else "",
        ]
        found += 1
    lm_rows = []
    for res_path in sorted(runs.glob("charlm-*/results.json")):
        r = json.loads(res_path.read_text())
        lm_rows.append(
            [
                res_path.parent.name,
                f"{r['val']['loss']:.4f}",
                f"{r['val']['bpc']:.3f}",
                r["steps"],
                f"{r['train_minutes']:.1f}",
            ]
        )
    if lm_rows:
        parts += [
            "<h2>Character-level Shakespeare</h2>",
            _table(["run", "val nats/char", "val bits/char", "steps", "train minutes"], lm_rows),
        ]
        found += 1
    if not found:
        raise FileNotFoundError(
            f"runs: expected result folders (long-range/, gradients/, gates/, ...) under "
            f"{str(runs)!r}, found none; run `rnnlab experiment long-range --quick` first"
        )
    parts += [
        "<h2>Published results, for comparison</h2>",
        _table(["topic", "published result", "source"], [list(p) for p in PUBLISHED]),
    ]
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>rnnlab report</title>"
        f"<style>{CSS}</style>{CHECK}</head><body>{''.join(parts)}</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
