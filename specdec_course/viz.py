"""Pictures of speculative decoding steps: accepted, rejected and correction tokens, and a step viewer.

``step_viewer(result, tokenizer)`` shows one step at a time with a slider (ipywidgets); where no widget
front end is attached it falls back to a static HTML table of every step.
"""
from __future__ import annotations

import html

COLOURS = {"accepted": "#c8f7c5", "rejected": "#f7c5c5", "unused": "#e6e6e6", "correction": "#c5d8f7", "bonus": "#e2c5f7"}


def _piece(tokenizer, token: int) -> str:
    text = tokenizer.decode([token]) if tokenizer is not None else str(token)
    return html.escape(text.replace("\n", "⏎")) or "&nbsp;"


def _chip(label: str, kind: str, under: str = "") -> str:
    return (f"<span style='display:inline-block;margin:2px;padding:2px 5px;border-radius:4px;background:{COLOURS[kind]};"
            f"font-family:monospace;text-align:center;vertical-align:top'>{label}"
            f"<br><span style='font-size:70%;color:#444'>{under}</span></span>")


def step_html(step, tokenizer=None, number: int | None = None) -> str:
    """One step as coloured chips: accepted drafts (green), the first rejection (red), drafts after it (grey),
    and the target's correction (blue) or bonus token (purple), with p and q under each draft."""
    chips = []
    for t, token in enumerate(step.draft_tokens):
        if t < step.n_accepted:
            kind = "accepted"
        elif t == step.n_accepted:
            kind = "rejected"
        else:
            kind = "unused"
        r = f" r={step.r[t]:.2f}" if step.r is not None else ""
        chips.append(_chip(_piece(tokenizer, token), kind, f"p={step.p[t]:.2f} q={step.q[t]:.2f}{r}"))
    chips.append(_chip(_piece(tokenizer, step.correction), "bonus" if step.bonus else "correction",
                       "bonus" if step.bonus else "correction"))
    title = f"step {number}: " if number is not None else ""
    return (f"<div style='margin:4px 0'><b>{title}</b>{step.n_accepted} of {step.tau} drafts accepted, "
            f"{len(step.emitted)} tokens added<br>{''.join(chips)}</div>")


def legend_html() -> str:
    return " ".join(_chip(k, k) for k in ("accepted", "rejected", "unused", "correction", "bonus"))


def trace_html(result, tokenizer=None, limit: int | None = None) -> str:
    steps = result.steps if limit is None else result.steps[:limit]
    return legend_html() + "".join(step_html(s, tokenizer, i) for i, s in enumerate(steps))


def step_viewer(result, tokenizer=None):
    """A slider over the steps of a SpecResult; static HTML where widgets cannot be shown."""
    from IPython.display import HTML, display

    tokenizer = tokenizer if tokenizer is not None else None
    static = trace_html(result, tokenizer, limit=40)
    try:
        import ipywidgets as w

        slider = w.IntSlider(min=0, max=max(len(result.steps) - 1, 0), description="step")
        view = w.HTML()

        def show(change=None):
            step = result.steps[slider.value]
            before = [tok for s in result.steps[: slider.value] for tok in s.emitted]
            context = tokenizer.decode(before[-30:]) if tokenizer is not None else str(before[-10:])
            view.value = (legend_html() + f"<div style='color:#555;font-family:monospace'>…{html.escape(context)}</div>"
                          + step_html(step, tokenizer, slider.value))

        slider.observe(show, names="value")
        show()
        box = w.VBox([slider, view])
        bundle = dict(box._repr_mimebundle_())
    except Exception:
        display(HTML(static))
        return
    bundle["text/html"] = static
    bundle["text/plain"] = f"step viewer over {len(result.steps)} steps (widgets not available here)"
    display(bundle, raw=True)


def plot_speedup(report: dict, ax=None, title: str | None = None):
    """Measured and predicted speedup against τ, from one ``run_benchmark`` report (or one block of ``bench``'s):
    our loop for each cache kind, the cost model's predictions, and transformers' assisted generation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.6))
    rows = [r for r in report["rows"] if r["tau"] is not None]
    configs = [c for c in dict.fromkeys(r["config"] for r in rows) if "no cache" not in c]
    for config in configs:
        mine = [r for r in rows if r["config"] == config]
        style = "s--" if config.startswith("assisted") else "o-"
        ax.plot([r["tau"] for r in mine], [r["ratio"] for r in mine], style, label=f"measured: {config}")
    predicted = {}
    for r in rows:
        if "predicted" in r:
            predicted.setdefault(r["tau"], (r["predicted"], r.get("predicted_replay")))
    if predicted:
        taus = sorted(predicted)
        ax.plot(taus, [predicted[t][0] for t in taus], "k:", label="predicted (independent positions)")
        if all(predicted[t][1] is not None for t in taus):
            ax.plot(taus, [predicted[t][1] for t in taus], "k-.", label="predicted (agreement replayed)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("τ (draft tokens per step)")
    ax.set_ylabel("speedup over target-only")
    ax.set_title(title or "measured and predicted speedup")
    ax.legend(fontsize=7)
    return ax
