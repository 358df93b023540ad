"""Report figures: one matplotlib style sized for two-column papers, each figure from records.

Every function takes the report's records (or training logs) and returns a Figure, or None
when its records are absent, so the builder can say which figures were skipped and why.
Uncertainty follows stats.py: every seed is drawn as a thin line under the mean over seeds,
and from MIN_SEEDS_FOR_INTERVAL seeds a 95% t-band over seeds is added; trials of one run
are averaged first, so trial spread never appears as seed spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from djepa_bench.io import atomic_write
from djepa_bench.reports.groups import Grouping, Key, is_floor_method, keys_of
from djepa_bench.reports.stats import MIN_SEEDS_FOR_INTERVAL, t_halfwidth
from djepa_bench.reports.tables import select

SINGLE_COLUMN_IN = 3.4  # width of one column of a two-column paper, inches
DOUBLE_COLUMN_IN = 7.0
PNG_DPI = 200
MIN_BAND_SAMPLES = MIN_SEEDS_FOR_INTERVAL  # seeds needed before a 95% band is drawn
# Okabe-Ito: distinguishable with colour-vision deficiency and in greyscale print.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]
FLOOR_STYLES = {"pixels": ("#555555", (0, (4, 2)), "s"), "random": ("#999999", (0, (1, 1.5)), "x")}
MARKERS = ["o", "^", "D", "v", "P", "*", "h"]
SEED_DASHES = ["-", (0, (5, 2)), (0, (1, 1.2)), (0, (5, 1.5, 1, 1.5)), (0, (8, 2, 2, 2))]
SEED_MARKERS = ["o", "s", "^", "D", "v", "P"]  # training curves: seed of a run
SEED_LINEWIDTH = 0.6
SEED_ALPHA = 0.45
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "lines.linewidth": 1.3,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable and searchable in the paper
    "svg.hashsalt": "djepa-bench",
    "path.simplify": False,
}
# Panel order of the robustness figure; the family itself comes from each record's
# params.family (written by the robustness protocol). Records written before the protocol
# recorded it fall under UNKNOWN_FAMILY rather than a guess made here.
FAMILY_ORDER = ("noise", "blur", "weather", "digital", "extra")
UNKNOWN_FAMILY = "unknown"
ESTIMATOR_STYLES = {  # denoising estimators drawn, and how
    "predictor": ("-", "predictor"),
    "ijepa_predictor": (":", "predictor, no noise input"),
    "gaussian_posterior": ((0, (5, 1.5, 1, 1.5)), "Gaussian posterior √ᾱ·z_t"),
    "noisy_input": ("--", "noisy input z_t/√ᾱ"),
}
SAMPLING_METRICS = {
    "sample_mean_mse": "error of the sample mean (MSE)",
    "diversity": "diversity",
    "energy_score": "energy score",
    "spread_error_corr": "spread-error correlation",
}
# Sampling panels with a deterministic I-JEPA reference: (denoising metric of the reference)
SAMPLING_REFERENCES = {"sample_mean_mse": "mse", "energy_score": "energy_score"}
TRAINING_PANELS = [  # (log kind, column, title, x column)
    ("step", "loss", "total loss", "step"),
    ("step", "loss_jepa", "JEPA loss", "step"),
    ("step", "loss_diff", "diffusion loss", "step"),
    ("epoch", "knn_top1", "kNN monitor (%)", "epoch"),
    ("epoch", "rankme", "RankMe", "epoch"),
]


FigureFn = Callable[..., "Figure | None"]


@dataclass(frozen=True)
class LineStyle:
    """How one report row is drawn in every figure."""

    label: str
    color: str
    linestyle: object
    marker: str


def key_styles(grouping: Grouping) -> dict[Key, LineStyle]:
    """A fixed colour/line/marker per row key: palette colours for methods, greys for floors."""
    styles: dict[Key, LineStyle] = {}
    index = 0
    for key in grouping.keys:
        floor = key[0].partition(":")[0]
        if floor in FLOOR_STYLES and is_floor_method(key[0]):
            color, dash, marker = FLOOR_STYLES[floor]
            styles[key] = LineStyle(grouping.label(key), color, dash, marker)
        else:
            styles[key] = LineStyle(
                grouping.label(key),
                PALETTE[index % len(PALETTE)],
                "-",
                MARKERS[index % len(MARKERS)],
            )
            index += 1
    return styles


def draw(fn: FigureFn, source: pd.DataFrame, grouping: Grouping, styles) -> Figure | None:
    """Call a figure function under the report style (text sizes are fixed at creation)."""
    with matplotlib.rc_context(STYLE):
        return fn(source, grouping, styles)


def save_figure(fig: Figure, folder: Path, name: str) -> list[Path]:
    """Write NAME.png and NAME.pdf atomically, with no timestamps (byte-identical reruns)."""
    paths = []
    with matplotlib.rc_context(STYLE):
        for fmt, metadata in (
            ("png", {"Software": None}),
            ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}),
        ):
            path = folder / f"{name}.{fmt}"

            def write(fh, fmt=fmt, metadata=metadata):
                fig.savefig(fh, format=fmt, dpi=PNG_DPI, metadata=metadata, bbox_inches="tight")

            atomic_write(path, write)
            paths.append(path)
    return paths


def panel_grid(panels: int, max_columns: int = 3) -> tuple[int, int]:
    """(rows, columns) for `panels` panels: every cell used where a grid of at most
    `max_columns` columns allows (5 -> 1 x 5 rather than 2 x 3 with an empty cell)."""
    if panels <= max_columns:
        return 1, panels
    for ncols in range(max_columns, 1, -1):
        if panels % ncols == 0:
            return panels // ncols, ncols
    if panels <= 5:
        return 1, panels
    ncols = max_columns
    return math.ceil(panels / ncols), ncols


def _new_figure(
    panels: int,
    width: float | None = None,
    row_height: float = 2.1,
    sharey: bool = False,
    max_columns: int = 3,
):
    """A figure with exactly `panels` axes; a grid cell left over (a prime number of panels
    above 5) is returned as a spare axis for the legend, never shown empty."""
    nrows, ncols = panel_grid(panels, max_columns)
    width = width or (SINGLE_COLUMN_IN if panels == 1 else DOUBLE_COLUMN_IN)
    fig = Figure(figsize=(width, row_height * nrows + 0.35), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()))
    spare = axes[panels:]
    for ax in spare:
        ax.set_axis_off()
    return fig, axes[:panels]


def _legend(fig: Figure, handles: list, ncol: int | None = None) -> None:
    """One legend above the panels, filled row by row without holes (a single row when
    the handles fit, else as many columns as half the handles)."""
    if not handles:
        return
    if ncol is None:
        ncol = len(handles) if len(handles) <= 5 else math.ceil(len(handles) / 2)
    fig.legend(
        handles=handles,
        loc="outside upper center",
        ncol=ncol,
        handlelength=2.6,
        columnspacing=1.2,
    )


def _handle(style: LineStyle, **overrides) -> Line2D:
    kwargs = dict(
        color=style.color, linestyle=style.linestyle, marker=style.marker, label=style.label
    )
    return Line2D([], [], **(kwargs | overrides))


def _with_keys(rows: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    return rows.assign(key=keys_of(rows, grouping))


def per_seed(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """One value per (key, seed, x): runs and trials of one seed averaged first."""
    frame = rows.groupby(["key", "seed", x], sort=True, as_index=False)["value"].mean()
    return frame.rename(columns={x: "x"}).assign(x=lambda f: f["x"].astype(float))


def curve(rows: pd.DataFrame, x: str) -> pd.DataFrame:
    """Mean over seeds and, from MIN_BAND_SAMPLES seeds, the 95% t half-width over seeds,
    per (key, x). Trials and runs of one seed are averaged into one value first."""
    out = []
    for (key, xv), group in per_seed(rows, x).groupby(["key", "x"], sort=True):
        samples = group["value"].to_numpy()
        half = t_halfwidth(samples) if len(samples) >= MIN_BAND_SAMPLES else math.nan
        out.append(
            {"key": key, "x": float(xv), "mean": float(samples.mean()), "half": half,
             "n": len(samples)}
        )  # fmt: skip
    return pd.DataFrame(out, columns=["key", "x", "mean", "half", "n"])


PERCENT = (0.0, 100.0)


def _draw_seeds(ax, seeds: pd.DataFrame, key: Key, style: LineStyle, dash=None) -> None:
    """Each seed of a row as a thin line (only when the row has more than one seed)."""
    mine = seeds[seeds["key"] == key]
    if mine["seed"].nunique() < 2:
        return
    for _, line in mine.groupby("seed", sort=True):
        line = line.sort_values("x")
        ax.plot(line["x"], line["value"], color=style.color,
                linestyle=style.linestyle if dash is None else dash,
                linewidth=SEED_LINEWIDTH, alpha=SEED_ALPHA, zorder=1)  # fmt: skip


def _draw_curves(
    ax,
    rows: pd.DataFrame,
    x: str,
    styles: dict[Key, LineStyle],
    bounds: tuple[float, float] | None = None,
    keys: set[Key] | None = None,
) -> pd.DataFrame:
    """Per-seed thin lines, the mean over seeds, and (3+ seeds) its 95% band, per row key;
    `bounds` clips bands to a metric's range (accuracy in %). Returns the curve data."""
    data = curve(rows, x)
    seeds = per_seed(rows, x)
    for key, style in styles.items():
        if keys is not None and key not in keys:
            continue
        part = data[data["key"] == key].sort_values("x")
        if part.empty:
            continue
        _draw_seeds(ax, seeds, key, style)
        ax.plot(part["x"], part["mean"], color=style.color, linestyle=style.linestyle,
                marker=style.marker, label=style.label, zorder=3)  # fmt: skip
        if part["half"].notna().any():
            half = part["half"].fillna(0.0)
            low, high = part["mean"] - half, part["mean"] + half
            if bounds is not None:
                low, high = low.clip(*bounds), high.clip(*bounds)
            ax.fill_between(part["x"], low, high, color=style.color, alpha=0.15, linewidth=0)
    return data


def _numeric(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in rows.columns:
        return rows.iloc[0:0]
    rows = rows.assign(**{column: pd.to_numeric(rows[column], errors="coerce")})
    return rows[rows[column].notna()]


def _used_keys(styles: dict[Key, LineStyle], data: pd.DataFrame) -> list[Line2D]:
    present = set(data["key"])
    return [_handle(s) for k, s in styles.items() if k in present]


def _seed_handles(rows: pd.DataFrame) -> list[Line2D]:
    """Legend entries explaining the thin lines and bands, when any are drawn."""
    counts = rows.groupby("key")["seed"].nunique() if not rows.empty else pd.Series(dtype=int)
    handles = []
    if (counts > 1).any():
        handles.append(Line2D([], [], color="grey", linewidth=SEED_LINEWIDTH, alpha=0.8,
                              label="single seeds"))  # fmt: skip
    if (counts >= MIN_BAND_SAMPLES).any():
        handles.append(Patch(color="grey", alpha=0.25, linewidth=0, label="95% CI over seeds"))
    return handles


def _floor_keys_off_scale(
    rows: pd.DataFrame, x: str, grouping: Grouping
) -> dict[Key, tuple[float, float]]:
    """Floors whose curve lies far outside the trained rows' range: {key: (min, max)}.

    "Far" is beyond the trained range widened by half its span (at least 2 units) on
    either side; such a floor would squeeze the compared methods into a few pixels.
    """
    seeds = per_seed(rows, x)
    floors = [k for k in seeds["key"].unique() if grouping.is_floor(k)]
    trained = seeds[[not grouping.is_floor(k) for k in seeds["key"]]]
    if trained.empty or not floors:
        return {}
    low, high = trained["value"].min(), trained["value"].max()
    pad = max(0.5 * (high - low), 2.0)
    out = {}
    for key in floors:
        means = curve(rows[rows["key"] == key], x)["mean"]
        if means.max() > high + pad or means.min() < low - pad:
            out[key] = (float(means.min()), float(means.max()))
    return out


def _floor_reference_handles(
    off: dict[Key, tuple[float, float]], styles: dict[Key, LineStyle], what: str
) -> list[Line2D]:
    handles = []
    for key, (low, high) in off.items():
        span = f"{low:.1f}" if round(low, 1) == round(high, 1) else f"{low:.1f}–{high:.1f}"
        handles.append(_handle(styles[key], label=f"{styles[key].label} (off scale): {span} "
                                                  f"{what}"))  # fmt: skip
    return handles


def knn_vs_k(records, grouping, styles) -> Figure | None:
    """kNN top-1 against k (log axis): per-seed lines, mean, 95% band from 3 seeds; floors
    far below or above the methods are given as values in the legend instead of lines."""
    rows = _numeric(select(records, protocol="knn", metric="top1", prefer={"weighting": "dino"}),
                    "params.k")  # fmt: skip
    if rows.empty:
        return None
    rows = _with_keys(rows, grouping)
    off = _floor_keys_off_scale(rows, "params.k", grouping)
    drawn = set(rows["key"]) - set(off)
    fig, (ax,) = _new_figure(1)
    data = _draw_curves(ax, rows, "params.k", styles, PERCENT, keys=drawn)
    ks = sorted(data["x"].unique())
    ax.set_xscale("log")
    ax.set_xticks(ks, [f"{k:g}" for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("kNN top-1 (%)")
    handles = [_handle(s) for k, s in styles.items() if k in drawn]
    handles += _floor_reference_handles(off, styles, "over k")
    handles += _seed_handles(rows[rows["key"].isin(list(drawn))])
    _legend(fig, handles, ncol=2)
    return fig


def lowshot(records, grouping, styles) -> Figure | None:
    """Low-shot top-1 against images per class: trials averaged per run, then seeds as in
    every figure (per-seed lines, mean, band from 3 seeds)."""
    rows = select(records, protocol="lowshot", metric="top1", prefer={"classifier": "logreg"})
    rows = _numeric(rows, "params.shots")
    if rows.empty:
        return None
    rows = _with_keys(rows, grouping)
    fig, (ax,) = _new_figure(1)
    data = _draw_curves(ax, rows, "params.shots", styles, PERCENT)
    shots = sorted(data["x"].unique())
    ax.set_xscale("log")
    ax.set_xticks(shots, [f"{s:g}" for s in shots])
    ax.minorticks_off()
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("top-1 (%)")
    _legend(fig, _used_keys(styles, data) + _seed_handles(rows), ncol=2)
    return fig


def _families(rows: pd.DataFrame) -> pd.Series:
    """The family of each corruption record: params.family, else UNKNOWN_FAMILY."""
    if "params.family" not in rows.columns:
        return pd.Series(UNKNOWN_FAMILY, index=rows.index, dtype=object)
    family = rows["params.family"]
    named = family.notna() & (family.astype(str) != "") & (family.astype(str) != "None")
    return family.where(named, UNKNOWN_FAMILY).astype(str)


def corruption_families(records: pd.DataFrame) -> pd.DataFrame:
    """(corruption, family) of every per-corruption robustness record."""
    rows = select(records, protocol="robustness", metric="top1")
    if rows.empty or "params.corruption" not in rows.columns:
        return pd.DataFrame(columns=["corruption", "family"])
    rows = rows[rows["params.corruption"].astype(str) != "clean"]
    return pd.DataFrame({"corruption": rows["params.corruption"].astype(str),
                         "family": _families(rows)})  # fmt: skip


def _family_order(families: set[str]) -> list[str]:
    known = [f for f in FAMILY_ORDER if f in families]
    others = sorted(families - set(FAMILY_ORDER) - {UNKNOWN_FAMILY})
    return known + others + ([UNKNOWN_FAMILY] if UNKNOWN_FAMILY in families else [])


def robustness_caption(records: pd.DataFrame) -> str:
    """Where brightness was grouped (ImageNet-C lists it under weather) and whether some
    records named no family."""
    families = corruption_families(records)
    notes = []
    brightness = sorted(set(families.loc[families["corruption"] == "brightness", "family"]))
    if brightness and brightness != ["weather"]:
        notes.append(
            f"Brightness is grouped under {' / '.join(brightness)}, as the robustness protocol "
            "records it (ImageNet-C lists brightness under weather; here weather holds the "
            "outdoor effects snow, frost, fog and spatter, and brightness, a global intensity "
            "shift, sits with the digital ones)."
        )
    elif brightness:
        notes.append("Brightness is grouped under weather, as in ImageNet-C.")
    if (families["family"] == UNKNOWN_FAMILY).any():
        notes.append(
            f"'{UNKNOWN_FAMILY}': records written before the protocol recorded each "
            "corruption's family (params.family); re-evaluate to group them."
        )
    return " ".join(notes)


def robustness(records, grouping, styles) -> Figure | None:
    """Top-1 against severity (0 = clean) per corruption family and averaged over all,
    every panel on one shared y-range."""
    rows = select(records, protocol="robustness", metric="top1", prefer={"classifier": "linear"})
    rows = _numeric(rows, "params.severity")
    if rows.empty or "params.corruption" not in rows.columns:
        return None
    rows = _with_keys(rows, grouping)
    rows["corruption"] = rows["params.corruption"].astype(str)
    clean = rows[rows["corruption"] == "clean"]
    corrupted = rows[rows["corruption"] != "clean"].copy()
    if corrupted.empty:
        return None
    corrupted["family"] = _families(corrupted)
    panels = [*_family_order(set(corrupted["family"])), "mean"]
    fig, axes = _new_figure(len(panels), row_height=1.9, sharey=True)
    for index, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        part = corrupted if panel == "mean" else corrupted[corrupted["family"] == panel]
        # Average corruptions within each run first, so every run counts once per severity.
        per_run = part.groupby(["key", "run_key", "seed", "params.severity"], as_index=False)[
            "value"
        ].mean()
        per_run = pd.concat([clean.assign(**{"params.severity": 0.0}), per_run])
        per_run = per_run.groupby(["key", "run_key", "seed", "params.severity"], as_index=False)[
            "value"
        ].mean()
        _draw_curves(ax, per_run, "params.severity", styles, PERCENT)
        names = sorted(set(part["corruption"]))
        title = "mean over all corruptions" if panel == "mean" else f"{panel} ({len(names)})"
        ax.set_title(title)
        ax.set_xlabel("severity (0 = clean)")
        if index % axes[0].get_gridspec().ncols == 0:
            ax.set_ylabel("top-1 (%)")
        ax.set_xticks(sorted(set(per_run["params.severity"])))
    _legend(fig, _used_keys(styles, rows) + _seed_handles(rows))
    return fig


def _reference_lines(ax, rows: pd.DataFrame, styles: dict[Key, LineStyle], dash) -> set[Key]:
    """Horizontal lines (one per row key) for a measurement that has no x: mean over seeds,
    each seed thinly where there are several. Returns the keys drawn."""
    drawn = set()
    for key, style in styles.items():
        part = rows[rows["key"] == key]
        if part.empty:
            continue
        by_seed = part.groupby("seed")["value"].mean()
        if len(by_seed) > 1:
            for value in by_seed:
                ax.axhline(value, color=style.color, linestyle=dash, linewidth=SEED_LINEWIDTH,
                           alpha=SEED_ALPHA, zorder=1)  # fmt: skip
        ax.axhline(by_seed.mean(), color=style.color, linestyle=dash, linewidth=1.3, zorder=2)
        drawn.add(key)
    return drawn


def _log_if_wide(ax, values: pd.Series) -> None:
    """Log y axis when the values are positive and span more than a decade."""
    values = values[np.isfinite(values)]
    if len(values) and (values > 0).all() and values.max() / values.min() > 10:
        ax.set_yscale("log")


def _clip_reference(ax, part: pd.DataFrame, flat_values: pd.Series) -> None:
    """Keep the y range on the estimators: z_t/sqrt(abar_t) explodes as abar_t -> 0 and
    would flatten every other line, so it is allowed to leave the plot at the top."""
    core = pd.concat([part.loc[part["params.estimator"] != "noisy_input", "value"], flat_values])
    core = core[np.isfinite(core)]
    if core.empty:
        return
    top = core.max() * (10.0 if ax.get_yscale() == "log" else 2.0)
    if part["value"].max() > top:
        ax.set_ylim(top=top)


def denoising(records, grouping, styles) -> Figure | None:
    """Predictor error against noise level (each seed thin, mean thick), with the noisy
    input z_t/sqrt(abar_t), the Gaussian posterior mean sqrt(abar_t) z_t and the I-JEPA
    predictor's deterministic error (no noise level: a horizontal line) as references."""
    rows = select(records, protocol="denoising")
    if rows.empty or "params.estimator" not in rows.columns:
        return None
    rows = _with_keys(rows[rows["metric"].isin(["mse", "cosine"])], grouping)
    rows = rows[rows["params.estimator"].isin(list(ESTIMATOR_STYLES))]
    curves = _numeric(rows, "params.noise_t")
    if curves.empty:
        return None  # a reference line alone is not a figure
    flat = rows[rows["params.estimator"] == "ijepa_predictor"]
    metrics = [m for m in ("mse", "cosine") if m in set(curves["metric"])]
    fig, axes = _new_figure(len(metrics), width=DOUBLE_COLUMN_IN if len(metrics) > 1 else None)
    predictor_keys: set[Key] = set()
    flat_keys: set[Key] = set()
    for ax, metric in zip(axes, metrics, strict=True):
        part = curves[curves["metric"] == metric]
        for estimator, (dash, _) in ESTIMATOR_STYLES.items():
            sub = part[part["params.estimator"] == estimator]
            if sub.empty:
                continue
            data = curve(sub, "params.noise_t")
            seeds = per_seed(sub, "params.noise_t")
            for key, style in styles.items():
                line = data[data["key"] == key].sort_values("x")
                if line.empty:
                    continue
                is_predictor = estimator == "predictor"
                if is_predictor:
                    predictor_keys.add(key)
                    _draw_seeds(ax, seeds, key, style, dash=dash)
                marker = style.marker if is_predictor else None
                width = 1.3 if is_predictor else 0.9
                ax.plot(line["x"], line["mean"], color=style.color, linestyle=dash,
                        marker=marker, linewidth=width, zorder=2 + is_predictor)  # fmt: skip
                if is_predictor and line["half"].notna().any():
                    half = line["half"].fillna(0.0)
                    ax.fill_between(line["x"], line["mean"] - half, line["mean"] + half,
                                    color=style.color, alpha=0.18, linewidth=0)  # fmt: skip
        flat_keys |= _reference_lines(
            ax, flat[flat["metric"] == metric], styles, ESTIMATOR_STYLES["ijepa_predictor"][0]
        )
        if metric == "mse":
            flat_values = flat.loc[flat["metric"] == metric, "value"]
            _log_if_wide(ax, pd.concat([part["value"], flat_values]))
            _clip_reference(ax, part, flat_values)
        ax.set_xlabel("noise level t")
        ax.set_ylabel("MSE to clean target" if metric == "mse" else "cosine to clean target")
    # Every legend swatch is drawn exactly as its line: rows by their own colour and dash.
    handles = [
        _handle(s, linestyle=ESTIMATOR_STYLES["predictor"][0], label=f"{s.label} predictor")
        for k, s in styles.items()
        if k in predictor_keys
    ]
    handles += [
        _handle(s, linestyle=ESTIMATOR_STYLES["ijepa_predictor"][0], marker=None,
                label=f"{s.label} {ESTIMATOR_STYLES['ijepa_predictor'][1]}")
        for k, s in styles.items()
        if k in flat_keys
    ]  # fmt: skip
    present = set(curves["params.estimator"])
    handles += [
        Line2D([], [], color="black", linestyle=dash, linewidth=0.9, label=label)
        for estimator, (dash, label) in ESTIMATOR_STYLES.items()
        if estimator in present and estimator not in ("predictor", "ijepa_predictor")
    ]
    if curves.groupby("key")["seed"].nunique().gt(1).any():
        handles.append(Line2D([], [], color="grey", linewidth=SEED_LINEWIDTH, alpha=0.8,
                              label="single seeds"))  # fmt: skip
    _legend(fig, handles, ncol=min(3, len(handles)))
    return fig


def sampling(records, grouping, styles) -> Figure | None:
    """Sample-mean error, diversity and energy score against DDIM sampling steps; the
    I-JEPA predictor's deterministic prediction as a dotted reference in the error and
    energy-score panels (its MSE and its L2 error)."""
    rows = select(records, protocol="denoising")
    rows = _numeric(rows[rows["metric"].isin(list(SAMPLING_METRICS))], "params.steps")
    if rows.empty:
        return None
    if "params.eta" in rows.columns:
        deterministic = pd.to_numeric(rows["params.eta"], errors="coerce") == 0.0
        if deterministic.any():
            rows = rows[deterministic]  # deterministic DDIM (eta=0) when several were run
    rows = _with_keys(rows, grouping)
    reference = select(records, protocol="denoising")
    if "params.estimator" in reference.columns:
        reference = reference[reference["params.estimator"] == "ijepa_predictor"]
    else:
        reference = reference.iloc[0:0]
    reference = _with_keys(reference, grouping)
    metrics = [m for m in SAMPLING_METRICS if m in set(rows["metric"])]
    fig, axes = _new_figure(len(metrics), row_height=1.9)
    referenced = False
    for ax, metric in zip(axes, metrics, strict=True):
        data = _draw_curves(ax, rows[rows["metric"] == metric], "params.steps", styles)
        if metric in SAMPLING_REFERENCES:
            ref = reference[reference["metric"] == SAMPLING_REFERENCES[metric]]
            referenced |= bool(
                _reference_lines(ax, ref, styles, ESTIMATOR_STYLES["ijepa_predictor"][0])
            )
        steps = sorted(data["x"].unique())
        ax.set_xscale("log")
        ax.set_xticks(steps, [f"{s:g}" for s in steps])
        ax.minorticks_off()
        ax.set_title(SAMPLING_METRICS[metric])
        ax.set_xlabel("sampling steps")
    handles = _used_keys(styles, rows)
    if referenced:
        ref_keys = set(reference["key"])
        handles += [
            _handle(s, linestyle=":", marker=None, label=f"{s.label} prediction (no sampling)")
            for k, s in styles.items()
            if k in ref_keys
        ]
    _legend(fig, handles + _seed_handles(rows))
    return fig


def _seed_dash(seeds: list[int], seed: int) -> object:
    return SEED_DASHES[seeds.index(seed) % len(SEED_DASHES)]


def training_curves(logs: pd.DataFrame, grouping: Grouping, styles) -> Figure | None:
    """Loss parts, kNN monitor and RankMe during training: one line per run (colour = row,
    dash = seed); a per-epoch panel with a single epoch shows one marker per run by row."""
    if logs.empty or "kind" not in logs.columns:
        return None
    if not all(f in logs.columns for f in grouping.fields):
        return None
    logs = logs.assign(key=keys_of(logs, grouping))
    logs = logs[logs["key"].isin(list(styles))]  # runs without records have no row
    panels = []
    for kind, column, title, x in TRAINING_PANELS:
        if column not in logs.columns or x not in logs.columns:
            continue
        part = logs[logs["kind"] == kind]
        part = part.assign(
            y=pd.to_numeric(part[column], errors="coerce"),
            x=pd.to_numeric(part[x], errors="coerce"),
        ).dropna(subset=["x", "y"])
        # A series that is all zero (the diffusion loss of an I-JEPA run) is not drawn.
        nonzero = part.groupby("run_dir")["y"].transform(lambda y: bool((y != 0).any()))
        part = part[nonzero.astype(bool)]
        if not part.empty:
            panels.append((part, title, x, column))
    if not panels:
        return None
    seeds = sorted({int(s) for s in logs["seed"].dropna()}) if "seed" in logs else [0]
    keys_order = [k for k in styles if k in set(logs["key"])]
    fig, axes = _new_figure(len(panels), row_height=1.8)
    for ax, (part, title, x, column) in zip(axes, panels, strict=True):
        single_point = part.groupby("run_dir")["x"].nunique().max() <= 1
        if single_point:
            _draw_single_points(ax, part, keys_order, styles, seeds)
        else:
            for _run_dir, run in part.groupby("run_dir", sort=True):
                style = styles[run["key"].iloc[0]]
                run = run.sort_values("x")
                seed = int(run["seed"].iloc[0]) if "seed" in run else 0
                marker = None
                if x == "epoch" and seed in seeds:
                    marker = SEED_MARKERS[seeds.index(seed) % len(SEED_MARKERS)]
                ax.plot(run["x"], run["y"], color=style.color,
                        linestyle=_seed_dash(seeds, seed) if seed in seeds else "-",
                        linewidth=0.9, alpha=0.9, marker=marker)  # fmt: skip
            ax.set_xlabel(x)
            xs = sorted(set(part["x"]))
            if x == "epoch" and len(xs) <= 8:
                ax.set_xticks(xs, [f"{v:g}" for v in xs])
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        ax.set_title(title)
        if single_point:
            ax.set_xlabel(f"after epoch {part['x'].iloc[0]:g}")
        positive = part["y"][part["y"] > 0]
        spans_decade = len(positive) == len(part) and positive.max() / positive.min() > 10
        if column.startswith("loss") and spans_decade and not single_point:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    logs_keys = set().union(*(set(part["key"]) for part, *_ in panels))
    handles = [_handle(s, marker=None, linestyle="-") for k, s in styles.items() if k in logs_keys]
    if len(seeds) > 1:
        handles += [
            Line2D([], [], color="black", linewidth=0.9, linestyle=_seed_dash(seeds, s),
                   marker=SEED_MARKERS[seeds.index(s) % len(SEED_MARKERS)], markersize=3.5,
                   label=f"seed {s}")
            for s in seeds
        ]  # fmt: skip
    _legend(fig, handles)
    return fig


def _draw_single_points(ax, part: pd.DataFrame, keys: list[Key], styles, seeds: list[int]):
    """A per-epoch value logged once per run: one marker per run, rows side by side on a
    categorical axis, seeds spread slightly and marked with their seed's marker."""
    keys = [k for k in keys if k in set(part["key"])]
    for position, key in enumerate(keys):
        mine = part[part["key"] == key]
        runs = sorted(mine.groupby("run_dir"), key=lambda item: int(item[1]["seed"].iloc[0]))
        for index, (_, run) in enumerate(runs):
            seed = int(run["seed"].iloc[0])
            offset = (index - (len(runs) - 1) / 2) * 0.12
            marker = SEED_MARKERS[seeds.index(seed) % len(SEED_MARKERS)] if seed in seeds else "o"
            ax.plot([position + offset], [run["y"].iloc[-1]], linestyle="none", marker=marker,
                    markersize=4.5, color=styles[key].color)  # fmt: skip
    ax.set_xticks(range(len(keys)), [styles[k].label for k in keys])
    ax.set_xlim(-0.6, len(keys) - 0.4)
    ax.grid(axis="x", visible=False)
