"""Server-side SVG plots of GPU usage: stacked bars per day (no charting library, no script).

Why drawn here: the pages need two small chart shapes (GPU-hours per day stacked by accelerator,
or by workload kind); a JavaScript charting library would be the heaviest dependency of the
hub's pages for that. The SVG is plain markup a test can read: every bar segment is a ``<rect>``
with ``data-day``, ``data-series`` and ``data-value`` (hours), and a ``<title>`` for hover.
Colours come from a fixed, colour-blind-safe palette (Okabe–Ito), assigned in series order.
"""

from html import escape

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 40


def _nice_max(value):
    """The smallest 1, 2, 2.5 or 5 × 10^n at or above ``value`` (the axis top)."""
    if value <= 0:
        return 1.0
    return min(step * 10 ** power for power in range(-3, 9) for step in (1, 2, 2.5, 5)
               if step * 10 ** power >= value)


def _fmt(value):
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def stacked_bars(days, series, *, title, plot_id, unit="GPU-hours"):
    """An SVG string: one bar per day, stacked by ``series``.

    ``days``: ``[(label, {series: value})]`` in order; ``series``: the series names, bottom first.
    """
    series = list(series)
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
    totals = [sum(values.get(s, 0.0) for s in series) for _, values in days]
    top = _nice_max(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.8, 1.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" id="{escape(plot_id)}" class="crater-plot" '
           f'role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
           f'data-points="{sum(1 for t in totals if t > 0)}" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>"]
    for i in range(5):
        value = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#ccc" stroke-width="0.5"/>')
        out.append(f'<text x="{LEFT - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
                   f"{_fmt(value)}</text>")
    out.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" font-size="10" text-anchor="middle" '
               f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">{escape(unit)}</text>')
    label_every = max(1, len(days) // 10)
    for index, (label, values) in enumerate(days):
        x = LEFT + index * slot + (slot - bar) / 2
        y = TOP + plot_h
        for name in series:
            value = values.get(name, 0.0)
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            out.append(f'<rect x="{x:.2f}" y="{y:.2f}" width="{bar:.2f}" height="{h:.2f}" '
                       f'fill="{colours[name]}" data-day="{escape(label)}" '
                       f'data-series="{escape(name)}" data-value="{value:.6f}">'
                       f"<title>{escape(label)} · {escape(name)}: {_fmt(value)} {escape(unit)}"
                       f"</title></rect>")
        if index % label_every == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{TOP + plot_h + 14}" font-size="9" '
                       f'text-anchor="middle">{escape(label[5:])}</text>')
    x = LEFT
    for name in series:
        out.append(f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colours[name]}"/>'
                   f'<text x="{x + 14}" y="{HEIGHT - 5}" font-size="10">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)
