"""The map's legend: one row per layer the map has, in drawing order, greyed while switched off."""

from __future__ import annotations

import html

from lookalike.explorer.map_style import (
    DENSITY_COLORS,
    HIRISE_COLORS,
    HIRISE_FOOTPRINT_COLOR,
    HIT_COLORS,
    LANDMARK_COLORS,
    OUTLINE_STYLES,
    REGION_STYLE,
    ZONE_COLOR,
)


def legend_entries(available: list[str], shown: list[str], classes: list[str]) -> list[dict]:
    """Rows of the map legend for the layers this map has, in drawing order (top first).

    Each row: ``layer`` (its switch, '' for the always-drawn outlines), ``kind`` of swatch
    (dot, line, dashed, box or ramp), ``colors``, ``text`` (plain text, may come from data) and
    ``off`` (its layer is switched off).
    """
    rows = []

    def add(layer: str, kind: str, colors, text: str) -> None:
        rows.append(
            dict(
                layer=layer, kind=kind, colors=list(colors), text=text, off=bool(layer) and layer not in shown
            )
        )

    if "hits" in available:
        add("hits", "dot", [HIT_COLORS[2]], "hit on the page of thumbnails shown")
        add("hits", "dot", [HIT_COLORS[1]], "hit among the nearest fifth (Hamming distance)")
        add("hits", "dot", [HIT_COLORS[0]], "farther hit")
    for name, text in (
        ("query", "query tile"),
        ("positives", "positive example"),
        ("negatives", "negative example"),
        ("focus", "thumbnail clicked"),
    ):
        color, _, dash = OUTLINE_STYLES[name]
        add("", "dashed" if dash == "dashed" else "line", [color], text)
    add("", "dashed", [REGION_STYLE["line_color"]], "drawn or typed region (filter)")
    if "density" in available:
        add("density", "ramp", DENSITY_COLORS, "hit density: few to many hits")
    if "landmarks" in available:
        for i, name in enumerate(classes):
            add("landmarks", "box", [LANDMARK_COLORS[i % len(LANDMARK_COLORS)]], f"landmark: {name}")
    if "hirise" in available:
        add("hirise", "ramp", HIRISE_COLORS, "HiRISE coverage: few to many images")
        add("hirise", "box", [HIRISE_FOOTPRINT_COLOR], "HiRISE image footprint (zoomed in)")
    if "zones" in available:
        add("zones", "box", [ZONE_COLOR], "selected UTM zone (grid: 6° zones)")
    return rows


def _swatch(kind: str, colors: list[str]) -> str:
    c = [html.escape(x, quote=True) for x in colors]
    if kind == "dot":
        style = f"background:{c[0]};border-radius:50%;border:1px solid #000;width:9px;height:9px;margin:0 5px"
    elif kind in ("line", "dashed"):
        style = f"border-top:3px {'dashed' if kind == 'dashed' else 'solid'} {c[0]};height:0;width:18px"
    elif kind == "box":
        style = f"border:2px solid {c[0]};background:{c[0]}33;width:14px;height:9px;margin:0 1px"
    else:
        style = f"background:linear-gradient(to right,{c[0]}40,{c[-1]});width:18px;height:10px"
    return (
        f'<span class="swatch {kind}" data-color="{",".join(c)}" '
        f'style="display:inline-block;flex:none;{style}"></span>'
    )


def legend_html(rows: list[dict]) -> str:
    """The legend as HTML; every text is escaped (class names come from model files)."""
    out = ['<div class="legend" style="font-size:12px;line-height:1.5">']
    for row in rows:
        opacity = "0.4" if row["off"] else "1"
        out.append(
            f'<div class="legend-row{" off" if row["off"] else ""}" '
            f'data-layer="{html.escape(row["layer"], quote=True)}" '
            f'style="display:flex;align-items:center;gap:6px;opacity:{opacity}">'
            f"{_swatch(row['kind'], row['colors'])}<span>{html.escape(row['text'])}"
            f"{' (off)' if row['off'] else ''}</span></div>"
        )
    out.append("</div>")
    return "".join(out)
