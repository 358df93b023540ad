"""Report figures: one matplotlib style sized for two-column papers, each figure from records.

Every function takes the report's records (or training logs) and returns a Figure, or None
when its records are absent, so the builder can say which figures were skipped and why.
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
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from djepa_bench.io import atomic_write
from djepa_bench.reports.groups import Grouping, Key, keys_of
from djepa_bench.reports.stats import t_halfwidth
from djepa_bench.reports.tables import select

SINGLE_COLUMN_IN = 3.4  # width of one column of a two-column paper, inches
DOUBLE_COLUMN_IN = 7.0
PNG_DPI = 200
MIN_BAND_SAMPLES = 3  # seeds (or trials) needed before a 95% band is drawn
# Okabe-Ito: distinguishable with colour-vision deficiency and in greyscale print.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]
FLOOR_STYLES = {"pixels": ("#555555", (0, (4, 2)), "s"), "random": ("#999999", (0, (1, 1.5)), "x")}
MARKERS = ["o", "^", "D", "v", "P", "*", "h"]
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
CORRUPTION_FAMILIES = {  # as the robustness protocol groups them (brightness is digital)
    "noise": ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"],
    "blur": ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"],
    "weather": ["snow", "frost", "fog", "spatter"],
    "digital": ["brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
                "saturate"],
}  # fmt: skip
ESTIMATOR_STYLES = {  # denoising estimators drawn, and how
    "predictor": ("-", "predictor"),
    "ijepa_predictor": (":", "I-JEPA predictor (reference)"),
    "noisy_input": ("--", "noisy input z_t (reference)"),
}
SAMPLING_METRICS = {
    "sample_mean_mse": "error of the sample mean (MSE)",
    "diversity": "diversity",
    "energy_score": "energy score",
    "spread_error_corr": "spread-error correlation",
}
TRAINING_PANELS = [  # (log kind, column, title, x column)
    ("step", "loss", "total loss", "step"),
    ("step", "loss_jepa", "JEPA loss", "step"),
    ("step", "loss_diff", "diffusion loss", "step"),
    ("epoch", "knn_top1", "kNN monitor top-1 (%)", "epoch"),
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
        if key[0] in FLOOR_STYLES:
            color, dash, marker = FLOOR_STYLES[key[0]]
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


def _new_figure(panels: int, width: float | None = None, row_height: float = 2.1):
    ncols = 2 if panels == 4 else min(panels, 3)
    nrows = math.ceil(panels / ncols)
    width = width or (SINGLE_COLUMN_IN if panels == 1 else DOUBLE_COLUMN_IN)
    fig = Figure(figsize=(width, row_height * nrows + 0.35), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def _legend(fig: Figure, handles: list, ncol: int | None = None) -> None:
    if handles:
        fig.legend(
            handles=handles,
            loc="outside upper center",
            ncol=ncol or min(len(handles), 4),
            handlelength=2.4,
            columnspacing=1.2,
        )


def _handle(style: LineStyle, **overrides) -> Line2D:
    kwargs = dict(
        color=style.color, linestyle=style.linestyle, marker=style.marker, label=style.label
    )
    return Line2D([], [], **(kwargs | overrides))


def _with_keys(rows: pd.DataFrame, grouping: Grouping) -> pd.DataFrame:
    return rows.assign(key=keys_of(rows, grouping))


def curve(rows: pd.DataFrame, x: str, trials_when_one_seed: bool = False) -> pd.DataFrame:
    """Mean and 95% t-interval per (key, x) over seeds (runs of one seed averaged first).

    With one seed and `trials_when_one_seed`, the interval is over that run's trials instead.
    """
    out = []
    for (key, xv), group in rows.groupby(["key", x], sort=True):
        per_seed = group.groupby("seed")["value"].mean()
        samples = per_seed.to_numpy()
        if len(samples) == 1 and trials_when_one_seed and len(group) > 1:
            samples = group["value"].to_numpy()
        mean = float(per_seed.mean())
        # Two samples give t(0.975, 1) = 12.7 x the standard error: a band over the whole
        # axis that hides the lines; bands start at MIN_BAND_SAMPLES.
        half = t_halfwidth(samples) if len(samples) >= MIN_BAND_SAMPLES else math.nan
        out.append({"key": key, "x": float(xv), "mean": mean, "half": half, "n": len(per_seed)})
    return pd.DataFrame(out, columns=["key", "x", "mean", "half", "n"])


PERCENT = (0.0, 100.0)


def _draw_curves(
    ax, data: pd.DataFrame, styles: dict[Key, LineStyle], bounds: tuple[float, float] | None = None
) -> None:
    """Mean lines with their 95% bands; `bounds` clips bands to a metric's range (accuracy
    in %: with two or three seeds a t-interval easily reaches past 0 or 100)."""
    for key, style in styles.items():
        part = data[data["key"] == key].sort_values("x")
        if part.empty:
            continue
        ax.plot(part["x"], part["mean"], color=style.color, linestyle=style.linestyle,
                marker=style.marker, label=style.label)  # fmt: skip
        if part["half"].notna().any():
            half = part["half"].fillna(0.0)
            low, high = part["mean"] - half, part["mean"] + half
            if bounds is not None:
                low, high = low.clip(*bounds), high.clip(*bounds)
            ax.fill_between(part["x"], low, high, color=style.color, alpha=0.15, linewidth=0)


def _numeric(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    if column not in rows.columns:
        return rows.iloc[0:0]
    rows = rows.assign(**{column: pd.to_numeric(rows[column], errors="coerce")})
    return rows[rows[column].notna()]


def _used_keys(styles: dict[Key, LineStyle], data: pd.DataFrame) -> list[Line2D]:
    present = set(data["key"])
    return [_handle(s) for k, s in styles.items() if k in present]


def knn_vs_k(records, grouping, styles) -> Figure | None:
    """kNN top-1 against k (log axis), one line per row, 95% CI band over seeds."""
    rows = _numeric(select(records, protocol="knn", metric="top1", prefer={"weighting": "dino"}),
                    "params.k")  # fmt: skip
    if rows.empty:
        return None
    data = curve(_with_keys(rows, grouping), "params.k")
    fig, (ax,) = _new_figure(1)
    _draw_curves(ax, data, styles, PERCENT)
    ks = sorted(data["x"].unique())
    ax.set_xscale("log")
    ax.set_xticks(ks, [f"{k:g}" for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel("kNN top-1 (%)")
    _legend(fig, _used_keys(styles, data), ncol=2)
    return fig


def lowshot(records, grouping, styles) -> Figure | None:
    """Low-shot top-1 against images per class, 95% CI bands (over trials with one seed)."""
    rows = select(records, protocol="lowshot", metric="top1", prefer={"classifier": "logreg"})
    rows = _numeric(rows, "params.shots")
    if rows.empty:
        return None
    data = curve(_with_keys(rows, grouping), "params.shots", trials_when_one_seed=True)
    fig, (ax,) = _new_figure(1)
    _draw_curves(ax, data, styles, PERCENT)
    shots = sorted(data["x"].unique())
    ax.set_xscale("log")
    ax.set_xticks(shots, [f"{s:g}" for s in shots])
    ax.minorticks_off()
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("top-1 (%)")
    _legend(fig, _used_keys(styles, data), ncol=2)
    return fig


def _family(corruption: str) -> str:
    for family, members in CORRUPTION_FAMILIES.items():
        if corruption in members:
            return family
    return "other"


def robustness(records, grouping, styles) -> Figure | None:
    """Top-1 against severity (0 = clean) per corruption family and averaged over all."""
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
    # The protocol records each corruption's family; older records fall back to our map.
    recorded = corrupted["params.family"] if "params.family" in corrupted.columns else None
    mapped = corrupted["corruption"].map(_family)
    corrupted["family"] = mapped if recorded is None else recorded.where(recorded.notna(), mapped)
    order = [f for f in [*CORRUPTION_FAMILIES, "other"] if f in set(corrupted["family"])]
    panels = [*order, "mean"]
    fig, axes = _new_figure(len(panels), row_height=1.9)
    for ax, panel in zip(axes, panels, strict=True):
        part = corrupted if panel == "mean" else corrupted[corrupted["family"] == panel]
        # Average corruptions within each run first, so every run counts once per severity.
        per_run = part.groupby(["key", "run_key", "seed", "params.severity"], as_index=False)[
            "value"
        ].mean()
        per_run = pd.concat([clean.assign(**{"params.severity": 0.0}), per_run])
        per_run = per_run.groupby(["key", "run_key", "seed", "params.severity"], as_index=False)[
            "value"
        ].mean()
        _draw_curves(ax, curve(per_run, "params.severity"), styles, PERCENT)
        names = sorted(set(part["corruption"]))
        title = "mean over all corruptions" if panel == "mean" else f"{panel} ({len(names)})"
        ax.set_title(title)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel("top-1 (%)")
        ax.set_xticks(sorted(set(per_run["params.severity"])))
    _legend(fig, _used_keys(styles, rows))
    return fig


def _reference_lines(ax, rows: pd.DataFrame, styles: dict[Key, LineStyle], dash) -> None:
    """Horizontal lines (one per row key) for a measurement that has no x: mean over seeds."""
    for key, style in styles.items():
        part = rows[rows["key"] == key]
        if not part.empty:
            value = part.groupby("seed")["value"].mean().mean()
            ax.axhline(value, color=style.color, linestyle=dash, linewidth=1.2)


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
    """Predictor error against noise level, with the noisy input z_t/sqrt(abar_t) and the
    I-JEPA predictor's deterministic error (no noise level: a horizontal line) as references."""
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
    for ax, metric in zip(axes, metrics, strict=True):
        part = curves[curves["metric"] == metric]
        for estimator, (dash, _) in ESTIMATOR_STYLES.items():
            sub = part[part["params.estimator"] == estimator]
            if sub.empty:
                continue
            data = curve(sub, "params.noise_t")
            for key, style in styles.items():
                line = data[data["key"] == key].sort_values("x")
                if line.empty:
                    continue
                marker = style.marker if estimator == "predictor" else None
                ax.plot(line["x"], line["mean"], color=style.color, linestyle=dash, marker=marker)
                if estimator == "predictor" and line["half"].notna().any():
                    half = line["half"].fillna(0.0)
                    ax.fill_between(line["x"], line["mean"] - half, line["mean"] + half,
                                    color=style.color, alpha=0.18, linewidth=0)  # fmt: skip
        _reference_lines(
            ax, flat[flat["metric"] == metric], styles, ESTIMATOR_STYLES["ijepa_predictor"][0]
        )
        if metric == "mse":
            flat_values = flat.loc[flat["metric"] == metric, "value"]
            _log_if_wide(ax, pd.concat([part["value"], flat_values]))
            _clip_reference(ax, part, flat_values)
        ax.set_xlabel("noise level t")
        ax.set_ylabel("MSE to clean target" if metric == "mse" else "cosine to clean target")
    present = set(curves["params.estimator"]) | set(flat["params.estimator"])
    # Line style encodes the estimator here, so row handles are drawn solid.
    keys = set(curves["key"]) | set(flat["key"])
    handles = [_handle(s, linestyle="-") for k, s in styles.items() if k in keys] + [
        Line2D([], [], color="black", linestyle=dash, label=label)
        for estimator, (dash, label) in ESTIMATOR_STYLES.items()
        if estimator in present
    ]
    _legend(fig, handles, ncol=3)
    return fig


def sampling(records, grouping, styles) -> Figure | None:
    """Sample-mean error, diversity and energy score against DDIM sampling steps; the
    energy score of the I-JEPA predictor's deterministic prediction as a reference line."""
    rows = select(records, protocol="denoising")
    rows = _numeric(rows[rows["metric"].isin(list(SAMPLING_METRICS))], "params.steps")
    if rows.empty:
        return None
    if "params.eta" in rows.columns:
        deterministic = pd.to_numeric(rows["params.eta"], errors="coerce") == 0.0
        if deterministic.any():
            rows = rows[deterministic]  # deterministic DDIM (eta=0) when several were run
    rows = _with_keys(rows, grouping)
    reference = select(records, protocol="denoising", metric="energy_score")
    if "params.estimator" in reference.columns:
        reference = reference[reference["params.estimator"] == "ijepa_predictor"]
    else:
        reference = reference.iloc[0:0]
    reference = _with_keys(reference, grouping)
    metrics = [m for m in SAMPLING_METRICS if m in set(rows["metric"])]
    fig, axes = _new_figure(len(metrics), row_height=1.9)
    for ax, metric in zip(axes, metrics, strict=True):
        data = curve(rows[rows["metric"] == metric], "params.steps")
        _draw_curves(ax, data, styles)
        if metric == "energy_score":
            _reference_lines(ax, reference, styles, ESTIMATOR_STYLES["ijepa_predictor"][0])
        steps = sorted(data["x"].unique())
        ax.set_xscale("log")
        ax.set_xticks(steps, [f"{s:g}" for s in steps])
        ax.minorticks_off()
        ax.set_title(SAMPLING_METRICS[metric])
        ax.set_xlabel("sampling steps")
    handles = _used_keys(styles, pd.concat([rows[["key"]], reference[["key"]]]))
    if not reference.empty and "energy_score" in metrics:
        handles.append(Line2D([], [], color="black", linestyle=":", label="I-JEPA prediction"))
    _legend(fig, handles)
    return fig


def training_curves(logs: pd.DataFrame, grouping: Grouping, styles) -> Figure | None:
    """Loss parts, kNN monitor and RankMe during training: one thin line per run."""
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
    fig, axes = _new_figure(len(panels), row_height=1.8)
    for ax, (part, title, x, column) in zip(axes, panels, strict=True):
        for _run_dir, run in part.groupby("run_dir", sort=True):
            style = styles[run["key"].iloc[0]]
            run = run.sort_values("x")
            marker = style.marker if x == "epoch" else None
            ax.plot(run["x"], run["y"], color=style.color, linestyle=style.linestyle,
                    linewidth=0.9, alpha=0.85, marker=marker)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel(x)
        xs = sorted(set(part["x"]))
        if x == "epoch" and len(xs) <= 8:
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        positive = part["y"][part["y"] > 0]
        spans_decade = len(positive) == len(part) and positive.max() / positive.min() > 10
        if column.startswith("loss") and spans_decade:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    logs_keys = set().union(*(set(part["key"]) for part, *_ in panels))
    _legend(fig, [_handle(s, marker=None) for k, s in styles.items() if k in logs_keys])
    return fig
