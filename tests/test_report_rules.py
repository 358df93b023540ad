"""The report's rules on synthetic records with known answers: RankMe only across equal
dimensions, no interval or mark below 3 seeds, power, Holm, external models kept apart,
regulariser and evaluation-preset labelling, options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import optimize, stats

from djepa_bench.records import RunIdentity, append_records, make_record


def write(
    root: Path,
    run: str,
    method: str,
    seed: int,
    *,
    knn: float | None = None,
    linear: float | None = None,
    rankme: float | None = None,
    dim: int = 128,
    checkpoint: str | None = None,
    preset: str | None = None,
    regularizer: dict | None = None,
    folder: str | None = None,
) -> Path:
    """Records of one subject (in RUN/results, or loose in FOLDER as `eval --out` writes)."""
    ident = RunIdentity(run, method, seed, checkpoint or f"{run}-{seed}".ljust(64, "0"))

    def rec(protocol, metric, value, **params):
        record = make_record(ident, dataset="digits", split="test", protocol=protocol,
                             metric=metric, value=value, params=params)  # fmt: skip
        if preset is not None:
            record["eval_preset"] = preset
        return record

    recs = []
    if knn is not None:
        recs += [rec("knn", "top1", knn + 0.1 * i, k=k, temperature=0.07, weighting="dino")
                 for i, k in enumerate((10, 20, 100))]  # fmt: skip
        recs[1]["value"] = knn  # k=20 is exactly the given value
    if linear is not None:
        recs.append(rec("linear", "top1", linear, lr=0.01))
    if rankme is not None:
        recs.append(rec("representation", "rankme", rankme, dim=dim, num_images=500))
    if folder is not None:
        append_records(root / folder / "records.jsonl", recs)
        return root / folder
    run_dir = root / run
    append_records(run_dir / "results" / "all.jsonl", recs)
    if regularizer is not None:
        config = {"train": {"method": method, "seed": seed}, "regularizer": regularizer}
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def build(root: Path, out: Path, **kwargs):
    from djepa_bench.reports.build import build_report

    report = build_report([str(root)], out, figure_names=kwargs.pop("figures", ()), **kwargs)
    return report, out


def csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv", keep_default_na=True)


def cell(frame: pd.DataFrame, method: str, column: str) -> pd.Series:
    rows = frame[(frame["method"] == method) & (frame["column"] == column)]
    assert len(rows) == 1, (method, column, rows)
    return rows.iloc[0]


def table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ")]


# --- RankMe across dimensions --------------------------------------------------------------


def test_rankme_is_never_compared_across_embedding_dimensions(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write(root, f"i{seed}", "ijepa", seed, knn=50.0 + seed, rankme=10.0 + seed)
        write(root, f"d{seed}", "djepa", seed, knn=52.0 + seed, rankme=20.0 + seed)
    write(root, "pixels", "pixels", 0, knn=90.0, rankme=590.0, dim=3072,
          checkpoint="model:pixels", folder="floors")  # fmt: skip
    report, out = build(root, tmp_path / "out", columns="knn20,rankme,rankme_per_dim")
    head = csv(out, "headline")
    pixels = cell(head, "pixels", "RankMe")
    assert not pixels["best"] and pixels["apart"] and pixels["signature"] == "D=3072"
    assert cell(head, "djepa", "RankMe")["best"]  # best among the 128-d rows
    deltas = csv(out, "delta_vs_ijepa")
    pix_delta = cell(deltas, "pixels", "RankMe")
    assert not pix_delta["comparable"] and math.isnan(pix_delta["diff"])  # was +580 before
    assert cell(deltas, "djepa", "RankMe")["diff"] == pytest.approx(10.0)
    md = (out / "report.md").read_text()
    assert "| raw pixels | 1 | **90.0** | 590.0† |" in md
    assert "n/c" in md and "RankMe: raw pixels (D=3072)" in " ".join(report.notes)
    # The floor comparison leaves RankMe out rather than calling the methods below pixels.
    assert "RankMe not compared" in md and "on RankMe" not in md
    # RankMe / D is comparable across dimensions: 590/3072 = 0.192 beats 21/128 = 0.164.
    per_dim = cell(head, "pixels", "RankMe/D")
    assert per_dim["mean"] == pytest.approx(590 / 3072, rel=1e-5) and per_dim["best"]
    expected = 590 / 3072 - 10 / 128
    assert cell(deltas, "pixels", "RankMe/D")["diff"] == pytest.approx(expected, rel=1e-5)
    tex = (out / "tables" / "headline.tex").read_text()
    assert r"$590.0^{\dagger}$" in tex and r"\mathbf{590.0}" not in tex


def test_corruption_columns_compared_only_on_the_same_corruption_set(tmp_path):
    root = tmp_path / "runs"

    def robust(run, method, seed, value, corruptions):
        ident = RunIdentity(run, method, seed, f"{run}".ljust(64, "0"))
        params = {"classifier": "linear", "corruptions": corruptions, "severities": [1, 3, 5]}
        append_records(root / run / "results" / "r.jsonl", [make_record(
            ident, dataset="digits", split="test", protocol="robustness",
            metric="mean_corruption_acc", value=value, params=params)])  # fmt: skip

    for seed in range(3):
        robust(f"i{seed}", "ijepa", seed, 40.0 + seed, 15)
        robust(f"d{seed}", "djepa", seed, 45.0 + seed, 4)  # evaluated on 4 corruptions only
    _, out = build(root, tmp_path / "out", columns="corr_acc")
    head = csv(out, "headline")
    assert not head["best"].any()  # two rows, each alone in its setting
    assert cell(csv(out, "delta_vs_ijepa"), "djepa", "mean corr. acc")["comparable"] is np.False_


# --- one uncertainty policy ----------------------------------------------------------------


def _two_methods(root: Path, seeds: int, ijepa=(50.0, 52.0, 51.0), djepa=(60.0, 63.0, 63.0)):
    for seed in range(seeds):
        write(root, f"i{seed}", "ijepa", seed, knn=ijepa[seed], linear=70.0 + seed)
        write(root, f"d{seed}", "djepa", seed, knn=djepa[seed], linear=75.0 + seed * 2)


def test_below_three_seeds_no_interval_and_no_mark_but_per_seed_values(tmp_path):
    root = tmp_path / "runs"
    _two_methods(root, seeds=2)  # knn differences 10, 11: large, but only 2 pairs
    _, out = build(root, tmp_path / "out")
    knn = cell(csv(out, "delta_vs_ijepa"), "djepa", "kNN@20")
    assert knn["n_pairs"] == 2 and knn["diff"] == pytest.approx(10.5)
    assert math.isnan(knn["ci_low"]) and math.isnan(knn["p"]) and not knn["significant"]
    assert knn["per_seed"] == "10;11"
    head = cell(csv(out, "headline"), "djepa", "kNN@20")
    assert math.isnan(head["ci_half"]) and head["per_seed"] == "60;63"
    md = (out / "report.md").read_text()
    lines = "\n".join(table_lines(md))
    assert "**61.5** (60.0, 63.0)" in lines and "+10.5 (+10.0, +11.0)" in lines
    assert "±" not in lines and "[" not in lines and "+10.5*" not in lines
    assert "per-seed measurements, not established differences" in md
    tex = (out / "tables" / "delta_vs_ijepa.tex").read_text()
    assert "^{*}" not in tex and r"\pm" not in tex and "(+10.0, +11.0)" in tex


def test_from_three_seeds_interval_and_mark(tmp_path):
    root = tmp_path / "runs"
    _two_methods(root, seeds=3, djepa=(60.0, 63.0, 63.0))  # knn differences 10, 11, 12
    _, out = build(root, tmp_path / "out", columns="knn20")
    knn = cell(csv(out, "delta_vs_ijepa"), "djepa", "kNN@20")
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert knn["ci_low"] == pytest.approx(11 - half, rel=1e-5)
    assert knn["ci_high"] == pytest.approx(11 + half, rel=1e-5)
    assert knn["p"] == pytest.approx(stats.ttest_1samp([10, 11, 12], 0).pvalue, rel=1e-5)
    assert knn["significant"]  # one test: Holm leaves its p as it is
    md = (out / "report.md").read_text()
    assert "+11.0* [+8.5, +13.5]" in md and "better on kNN@20" in md


def _figure(root: Path, fn_name: str, baseline="ijepa", logs=False):
    from djepa_bench.reports import figures
    from djepa_bench.reports.collect import load_collection
    from djepa_bench.reports.groups import attach_groups

    collection = load_collection([str(root)])
    grouping = attach_groups(collection, [], baseline)
    styles = figures.key_styles(grouping)
    source = collection.logs if logs else collection.records
    return figures.draw(getattr(figures, fn_name), source, grouping, styles), styles


def _bands(fig) -> int:
    from matplotlib.collections import PolyCollection

    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


def test_figures_band_from_three_seeds_and_thin_lines_per_seed(tmp_path):
    from djepa_bench.reports.figures import SEED_LINEWIDTH

    two, three = tmp_path / "two", tmp_path / "three"
    _two_methods(two, seeds=2)
    _two_methods(three, seeds=3)
    fig, _ = _figure(two, "knn_vs_k")
    assert _bands(fig) == 0
    thin = [ln for ln in fig.axes[0].get_lines() if ln.get_linewidth() == SEED_LINEWIDTH]
    assert len(thin) == 4  # two seeds x two rows
    fig, _ = _figure(three, "knn_vs_k")
    assert _bands(fig) == 2


def test_lowshot_trials_of_one_seed_give_no_band(tmp_path):
    root = tmp_path / "runs"
    for method, run in (("ijepa", "i0"), ("djepa", "d0")):
        ident = RunIdentity(run, method, 0, run.ljust(64, "0"))
        recs = [make_record(ident, dataset="digits", split="test", protocol="lowshot",
                            metric="top1", value=10.0 * shots + 5 * trial,
                            params={"shots": shots, "trial": trial, "classifier": "logreg"})
                for shots in (1, 5) for trial in range(5)]  # fmt: skip
        append_records(root / run / "results" / "l.jsonl", recs)
    fig, _ = _figure(root, "lowshot")
    assert _bands(fig) == 0  # trial spread is not seed spread
    means = [ln for ln in fig.axes[0].get_lines() if ln.get_marker() not in (None, "None")]
    assert sorted(means[0].get_ydata()) == pytest.approx([20.0, 60.0])  # trials averaged


# --- power ---------------------------------------------------------------------------------


def _closed_form_power(delta: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test from the noncentral t, written out here."""
    df, ncp = n - 1, delta * math.sqrt(n) / sd
    crit = stats.t.isf(alpha / 2, df)
    wrong_sign = float(np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))  # far tail: may be NaN
    return 1 - stats.nct.cdf(crit, df, ncp) + wrong_sign


def test_power_helpers_match_textbook_values_and_simulation():
    from djepa_bench.reports.power import detectable_difference, paired_power, seeds_needed

    # G*Power, paired t-test, two-sided, alpha 0.05: d = 1 needs 10 pairs (power 0.803),
    # d = 0.5 needs 34 pairs.
    assert paired_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(0.5, 1.0) == 34
    assert seeds_needed(-0.5, 1.0) == 34  # direction does not matter
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.001, 1.0) is None  # > 1000
    mde = detectable_difference(2.0, 5)
    assert _closed_form_power(mde, 2.0, 5) == pytest.approx(0.8, abs=1e-6)
    # A simulated paired t-test rejects as often as the formula says.
    rng = np.random.default_rng(0)
    diffs = rng.normal(1.2, 1.0, size=(40000, 6))
    t = diffs.mean(1) / (diffs.std(1, ddof=1) / math.sqrt(6))
    rejected = float((np.abs(t) > stats.t.ppf(0.975, 5)).mean())
    assert rejected == pytest.approx(paired_power(1.2, 1.0, 6), abs=0.01)


def test_report_power_table_against_closed_form(tmp_path):
    root = tmp_path / "runs"
    ijepa, djepa = [50.0, 51.0, 52.0, 53.0], [51.0, 54.0, 54.0, 57.0]  # diffs 1, 3, 2, 4
    for seed in range(4):
        write(root, f"i{seed}", "ijepa", seed, knn=ijepa[seed])
        write(root, f"d{seed}", "djepa", seed, knn=djepa[seed])
    _, out = build(root, tmp_path / "out")
    power = cell(csv(out, "power_vs_ijepa"), "djepa", "kNN@20")
    sd = float(np.std([1, 3, 2, 4], ddof=1))
    assert power["sd"] == pytest.approx(sd, rel=1e-5) and power["n_pairs"] == 4
    expected = optimize.brentq(lambda d: _closed_form_power(d, sd, 4) - 0.8, 0.01, 10)
    assert power["detectable_diff"] == pytest.approx(expected, rel=1e-5)
    needed = int(power["seeds_needed"])
    assert _closed_form_power(2.5, sd, needed) >= 0.8 > _closed_form_power(2.5, sd, needed - 1)
    md = (out / "report.md").read_text()
    assert "## Power" in md and f"| {expected:.1f} | {needed} |" in md


# --- multiple comparisons ------------------------------------------------------------------


def test_holm_adjustment_known_values():
    from djepa_bench.reports.stats import adjust, holm

    adjusted = holm([0.01, 0.04, 0.03, float("nan"), 0.005])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[4] == pytest.approx(0.02)
    assert math.isnan(adjusted[3])
    assert adjust([0.2, 0.01], "none") == [0.2, 0.01]


@pytest.mark.parametrize("correction", ["holm", "none"])
def test_correction_option_changes_marks_and_is_stated(tmp_path, correction):
    root = tmp_path / "runs"
    for seed, (knn_diff, linear_diff) in enumerate(((3, 5), (2, 1), (4, 9))):
        write(root, f"i{seed}", "ijepa", seed, knn=50.0, linear=70.0)
        write(root, f"d{seed}", "djepa", seed, knn=50.0 + knn_diff, linear=70.0 + linear_diff)
    _, out = build(root, tmp_path / correction, correction=correction, columns="knn20,linear")
    deltas = csv(out, "delta_vs_ijepa")
    knn, linear = cell(deltas, "djepa", "kNN@20"), cell(deltas, "djepa", "linear")
    p_knn = stats.ttest_1samp([3, 2, 4], 0).pvalue  # 0.035
    p_linear = stats.ttest_1samp([5, 1, 9], 0).pvalue  # 0.163
    assert knn["p"] == pytest.approx(p_knn, rel=1e-5)
    assert linear["p"] == pytest.approx(p_linear, rel=1e-5)
    md = (out / "report.md").read_text()
    if correction == "holm":
        assert knn["p_adjusted"] == pytest.approx(2 * p_knn, rel=1e-5) and not knn["significant"]
        assert linear["p_adjusted"] == pytest.approx(p_linear, rel=1e-5)
        assert "Holm's correction over the 2 paired test(s)" in md and "+3.0*" not in md
    else:
        assert knn["p_adjusted"] == pytest.approx(p_knn, rel=1e-5) and knn["significant"]
        assert "uncorrected p < 0.05" in md and "+3.0* [" in md
    assert set(deltas["correction"]) == {correction}


# --- external models -----------------------------------------------------------------------


def test_external_models_are_kept_apart_and_group_by_run_works(tmp_path, run_cli):
    root = tmp_path / "runs"
    tiny = "timm:vit_tiny_patch16_224"
    for seed in (0, 1):  # one model evaluated with two seeds: one row of two seeds
        write(root, tiny, "timm", seed, knn=10.0 + seed, folder="floors",
              checkpoint=f"model:timm:vit_tiny_patch16_224:init:seed{seed}")  # fmt: skip
    write(
        root,
        tiny,
        "timm",
        0,
        knn=80.0,
        folder="floors",
        checkpoint="model:timm:vit_tiny_patch16_224:weights=0123456789abcdef:seed0",
    )
    write(
        root,
        "timm:resnet18",
        "timm",
        0,
        knn=60.0,
        folder="floors",
        checkpoint="model:timm:resnet18:pretrained:seed0",
    )
    for seed in (0, 1):
        write(root, f"i{seed}", "ijepa", seed, knn=30.0 + seed)
    _, out = build(root, tmp_path / "out")
    knn = csv(out, "headline")
    knn = knn[knn["column"] == "kNN@20"].set_index("method")
    assert knn.loc[f"{tiny} [init]", "mean"] == pytest.approx(10.5)
    assert knn.loc[f"{tiny} [init]", "n"] == 2
    assert knn.loc[f"{tiny} [weights=0123456789abcdef]", "mean"] == pytest.approx(80.0)
    assert knn.loc["timm:resnet18", "mean"] == pytest.approx(60.0)
    assert "timm" not in knn.index  # never one averaged "timm" row
    result = run_cli("report", root, "--out", tmp_path / "by-run", "--group-by", "run")
    assert result.code == 0, result.err
    by_run = pd.read_csv(tmp_path / "by-run" / "tables" / "headline.csv")
    ijepa = by_run[(by_run["method"] == "ijepa") & (by_run["column"] == "kNN@20")]
    assert sorted(ijepa["run"]) == ["i0", "i1"] and set(ijepa["n"]) == {1}
    assert "no row is paired" in result.out


# --- LaTeX -------------------------------------------------------------------------------


def _wide_study(root: Path, seeds: int = 3) -> None:
    for seed in range(seeds):
        for method, shift in (("ijepa", 0.0), ("djepa", 1.5)):
            run = f"{method}{seed}"
            ident = RunIdentity(run, method, seed, run.ljust(64, "0"))
            recs = []

            def rec(protocol, metric, value, ident=ident, recs=recs, **params):
                recs.append(make_record(ident, dataset="cifar10", split="test",
                                        protocol=protocol, metric=metric, value=value,
                                        params=params))  # fmt: skip

            for k in (10, 20, 100, 200):
                rec("knn", "top1", 60.0 + shift + seed * 0.7 - k / 100, k=k, weighting="dino")
            rec("linear", "top1", 70.0 + shift + seed, lr=0.1)
            rec("linear", "top5", 95.0 + shift / 3 + seed * 0.1, lr=0.1)
            for shots in (1, 2, 5, 10, 25):
                rec("lowshot", "top1", 20.0 + shots + shift + seed, shots=shots, trial=0,
                    classifier="logreg")  # fmt: skip
            rec("robustness", "mean_corruption_acc", 50.0 + shift - seed, classifier="linear",
                corruptions=15, severities=[1, 3, 5])  # fmt: skip
            rec("robustness", "mce", 100.0 - 3 * shift + seed, classifier="linear",
                corruptions=15, severities=[1, 3, 5])  # fmt: skip
            rec("representation", "rankme", 30.0 + 4 * shift + seed, dim=192)
            append_records(root / run / "results" / "all.jsonl", recs)
    for run, method, shift in (("pixels", "pixels", -5.0), ("random:tiny", "random", -9.0)):
        ident = RunIdentity(run, method, 0, f"model:{run}")
        recs = [make_record(ident, dataset="cifar10", split="test", protocol="knn",
                            metric="top1", value=60.0 + shift,
                            params={"k": 20, "weighting": "dino"}),
                make_record(ident, dataset="cifar10", split="test", protocol="representation",
                            metric="rankme", value=600.0, params={"dim": 3072})]  # fmt: skip
        append_records(root / "floors" / f"{method}.jsonl", recs)


def _compile(folder: Path, body: str) -> str:
    import subprocess

    (folder / "doc.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs,graphicx}\n"
        f"\\begin{{document}}\n{body}\nText.\n\\end{{document}}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    log = (folder / "doc.log").read_text(errors="replace")
    assert result.returncode == 0, log[-2000:]
    return log


def test_latex_tables_compile_without_overfull_boxes(tmp_path):
    import shutil

    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (apt-get install texlive-latex-recommended)")
    root = tmp_path / "runs"
    _wide_study(root)
    all_columns = "knn10,knn20,knn100,knn200,linear,linear_top5,1shot,2shot,5shot,10shot,"
    all_columns += "25shot,corr_acc,mce,rankme,rankme_per_dim"
    for name, columns in (("default", None), ("wide", all_columns)):
        _, out = build(root, tmp_path / name, columns=columns)
        tables = out / "tables"
        floats = "".join(
            f"\\begin{{{env}}}[p]\\centering\\input{{{table}}}\\caption{{{env}}}\\end{{{env}}}\n"
            for env in ("table", "table*")
            for table in ("headline.tex", "delta_vs_ijepa.tex")
        )
        log = _compile(tables, floats)
        assert "Overfull \\hbox" not in log, name
        assert "headline" in log  # the tables were read
    # The default set, 3 seeds: fits a column in one of the two layouts without shrinking.
    one_column = "\\begin{table}\\centering\\input{headline.tex}\\end{table}"
    default_log = _compile(tmp_path / "default" / "tables", one_column)
    assert "shrunk" not in default_log
    # Control: the bare standard tabular of the wide set does overflow a column, so the
    # check above would catch a table that does not size itself.
    text = (tmp_path / "wide" / "tables" / "headline.tex").read_text()
    end_marker = "\\bottomrule\n\\end{tabular}"
    bare = text[text.index("\\begin{tabular}") : text.index(end_marker) + len(end_marker)]
    (tmp_path / "wide" / "tables" / "bare.tex").write_text(bare)
    bare_float = "\\begin{table}\\centering\\footnotesize\\input{bare.tex}\\end{table}"
    log = _compile(tmp_path / "wide" / "tables", bare_float)
    assert "Overfull \\hbox" in log


def test_transposed_layout_and_columns_option(tmp_path):
    root = tmp_path / "runs"
    _wide_study(root, seeds=1)
    _, out = build(root, tmp_path / "out", columns="rankme,knn20", table_layout="transposed")
    md = (out / "report.md").read_text()
    assert "| Metric | I-JEPA | D-JEPA | raw pixels | random init (tiny) |" in md
    metric_rows = [line.split(" | ")[0] for line in table_lines(md)]
    assert metric_rows.index("| RankMe ↑") < metric_rows.index("| kNN@20 ↑")
    tex = (out / "tables" / "headline.tex").read_text()
    assert "Metric & I-JEPA" in tex and "layout: one row per metric" in tex
    assert set(csv(out, "headline")["column"]) == {"RankMe", "kNN@20"}


# --- regulariser, presets, title -----------------------------------------------------------

VICREG = {"variance": 1.0, "covariance": 0.04, "projector_dim": 512}
PLAIN = {"variance": 0.0, "covariance": 0.0, "projector_dim": 0}


def test_regularizer_settings_label_rows_and_never_pair_across(tmp_path):
    root = tmp_path / "runs"
    for seed in range(3):
        write(root, f"i{seed}", "ijepa", seed, knn=50.0, regularizer=PLAIN)
        write(root, f"d{seed}", "djepa", seed, knn=52.0, regularizer=PLAIN)
        write(root, f"iv{seed}", "ijepa", seed, knn=60.0, regularizer=VICREG)
        write(root, f"dv{seed}", "djepa", seed, knn=61.0 + seed, regularizer=VICREG)
    report, out = build(root, tmp_path / "out")
    md = (out / "report.md").read_text()
    head = table_lines(md)
    for label in ("| I-JEPA |", "| D-JEPA |", "| I-JEPA + VICReg |", "| D-JEPA + VICReg |"):
        assert any(line.startswith(label) for line in head), label
    deltas = csv(out, "delta_vs_ijepa")
    plain = deltas[(deltas["method"] == "djepa") & (deltas["regularizer"] == "none")].iloc[0]
    vic = deltas[(deltas["method"] == "djepa") & (deltas["regularizer"] != "none")].iloc[0]
    assert plain["baseline"] == "I-JEPA" and plain["diff"] == pytest.approx(2.0)
    assert vic["baseline"] == "I-JEPA + VICReg" and vic["diff"] == pytest.approx(2.0)
    assert "rows are split and labelled by it" in md
    assert "regularizer.variance" not in " ".join(report.notes)  # not a hidden difference


def test_one_shared_regularizer_is_stated_and_an_unmatched_arm_is_not_paired(tmp_path):
    shared = tmp_path / "shared"
    for seed in range(2):
        write(shared, f"i{seed}", "ijepa", seed, knn=50.0, regularizer=VICREG)
        write(shared, f"d{seed}", "djepa", seed, knn=52.0, regularizer=VICREG)
    _, out = build(shared, tmp_path / "o1")
    md = (out / "report.md").read_text()
    assert (
        "Anti-collapse regulariser: VICReg (variance 1, covariance 0.04, projector 512) in "
        "every trained run." in md
    )
    assert "| D-JEPA | I-JEPA | 2 |" in md  # labels carry no suffix when all runs share it
    unmatched = tmp_path / "unmatched"
    for seed in range(2):
        write(unmatched, f"i{seed}", "ijepa", seed, knn=50.0, regularizer=PLAIN)
        write(unmatched, f"d{seed}", "djepa", seed, knn=52.0, regularizer=VICREG)
    report, out = build(unmatched, tmp_path / "o2")
    assert not (out / "tables" / "delta_vs_ijepa.csv").read_text().count("djepa")
    assert any("D-JEPA + VICReg is not paired" in n for n in report.notes)


def test_eval_presets_are_listed_and_mixed_presets_warned(tmp_path, run_cli):
    root = tmp_path / "runs"
    for seed in range(2):
        write(root, f"i{seed}", "ijepa", seed, knn=50.0, preset="quick")
        write(root, f"d{seed}", "djepa", seed, knn=52.0, preset="quick")
    write(root, "pixels", "pixels", 0, knn=70.0, preset="paper", checkpoint="model:pixels",
          folder="floors")  # fmt: skip
    result = run_cli("report", root, "--out", tmp_path / "out")
    assert result.code == 0, result.err
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Evaluation presets: paper, quick." in md
    assert "different evaluation presets (I-JEPA: quick; D-JEPA: quick; raw pixels: paper)" in md
    assert "warning: Rows compared" in result.out
    grouped = run_cli("report", root, "--out", tmp_path / "g", "--group-by", "eval_preset")
    assert grouped.code == 0 and "warning:" not in grouped.out
    old = tmp_path / "old"
    write(old, "i0", "ijepa", 0, knn=50.0)
    _, out = build(old, tmp_path / "o3")
    assert "Evaluation preset: not recorded in the records." in (out / "report.md").read_text()


def test_title_defaults_to_methods_and_dataset_and_can_be_set(tmp_path, run_cli):
    root = tmp_path / "runs"
    write(root, "i0", "ijepa", 0, knn=50.0)
    write(root, "d0", "djepa", 0, knn=52.0)
    write(root, "pixels", "pixels", 0, knn=70.0, checkpoint="model:pixels", folder="floors")
    _, out = build(root, tmp_path / "o1")
    assert (out / "report.md").read_text().startswith("# D-JEPA vs I-JEPA on digits\n")
    _, out = build(root, tmp_path / "o2", title="Diffusion targets on digits")
    assert (out / "report.md").read_text().startswith("# Diffusion targets on digits\n")
    for args, message in (
        (["--columns", "knn20,acc"], "unknown --columns entry 'acc'"),
        (["--correction", "bonferroni"], "unknown --correction 'bonferroni'"),
        (["--table-layout", "wide"], "unknown --table-layout 'wide'"),
    ):
        result = run_cli("report", root, "--out", tmp_path / "bad", *args)
        assert result.code == 2 and message in result.err
        assert len(result.err.strip().splitlines()) == 1


# --- figures -------------------------------------------------------------------------------


def _robustness_records(root: Path, with_family: bool) -> None:
    families = {"gaussian_noise": "noise", "defocus_blur": "blur", "fog": "weather",
                "brightness": "digital", "saturate": "extra"}  # fmt: skip
    for method, shift in (("ijepa", 0.0), ("djepa", 20.0)):
        ident = RunIdentity(f"{method}0", method, 0, method.ljust(64, "0"))
        recs = [make_record(ident, dataset="digits", split="test", protocol="robustness",
                            metric="top1", value=80.0 + shift,
                            params={"corruption": "clean", "severity": 0})]  # fmt: skip
        for index, (corruption, family) in enumerate(families.items()):
            for severity in (1, 3):
                params = {"corruption": corruption, "severity": severity}
                if with_family:
                    params["family"] = family
                value = 70.0 + shift - 10 * index * severity
                recs.append(make_record(ident, dataset="digits", split="test",
                                        protocol="robustness", metric="top1", value=value,
                                        params=params))  # fmt: skip
        append_records(root / f"{method}0" / "results" / "r.jsonl", recs)


def test_robustness_families_from_records_shared_y_and_no_empty_panel(tmp_path):
    from djepa_bench.reports.collect import load_collection
    from djepa_bench.reports.figures import robustness_caption

    root = tmp_path / "new"
    _robustness_records(root, with_family=True)
    fig, _ = _figure(root, "robustness")
    titles = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titles == ["noise (1)", "blur (1)", "weather (1)", "digital (1)", "extra (1)",
                      "mean over all corruptions"]  # fmt: skip
    assert all(ax.axison for ax in fig.axes)  # six panels: no hidden or empty one
    assert len({ax.get_ylim() for ax in fig.axes}) == 1  # one shared y-range
    caption = robustness_caption(load_collection([str(root)]).records)
    assert "Brightness is grouped under digital" in caption and "ImageNet-C" in caption
    old = tmp_path / "old"
    _robustness_records(old, with_family=False)
    fig, _ = _figure(old, "robustness")
    assert [ax.get_title() for ax in fig.axes] == ["unknown (5)", "mean over all corruptions"]
    assert "'unknown'" in robustness_caption(load_collection([str(old)]).records)


def _denoising_records(root: Path) -> None:
    for method in ("ijepa", "djepa"):
        for seed in (0, 1):
            ident = RunIdentity(f"{method}{seed}", method, seed, f"{method}{seed}".ljust(64, "0"))
            recs = []

            def rec(metric, value, ident=ident, recs=recs, **params):
                recs.append(make_record(ident, dataset="digits", split="test",
                                        protocol="denoising", metric=metric, value=value,
                                        params=params))  # fmt: skip

            if method == "ijepa":
                rec("mse", 0.3 + 0.4 * seed, estimator="ijepa_predictor")
                rec("energy_score", 0.9, estimator="ijepa_predictor", samples=1)
            else:
                for t in (0, 500, 999):
                    rec("mse", (0.01 + t / 2000) * (1 + 3 * seed), estimator="predictor",
                        noise_t=t)  # fmt: skip
                    rec("mse", 0.001 + t / 1000, estimator="gaussian_posterior", noise_t=t)
                    rec("mse", 0.001 + (t / 1000) ** 4 * 10, estimator="noisy_input", noise_t=t)
                for steps in (1, 5):
                    for metric in ("sample_mean_mse", "energy_score", "diversity"):
                        rec(metric, 0.5 / steps + seed, steps=steps, samples=4, eta=0.0)
            append_records(root / f"{method}{seed}" / "results" / "d.jsonl", recs)


def test_denoising_legend_matches_lines_posterior_drawn_seeds_thin(tmp_path):
    from djepa_bench.reports.figures import SEED_LINEWIDTH

    root = tmp_path / "runs"
    _denoising_records(root)
    fig, styles = _figure(root, "denoising")
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert "Gaussian posterior √ᾱ·z_t" in texts
    ijepa_handle = legend.legend_handles[texts.index("I-JEPA predictor, no noise input")]
    ijepa_color = styles[("ijepa",)].color
    # The swatch is drawn like its line: dotted, in I-JEPA's colour.
    assert ijepa_handle.get_linestyle() == ":" and ijepa_handle.get_color() == ijepa_color
    ax = fig.axes[0]
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert {ln.get_color() for ln in dotted} == {ijepa_color}
    thin = [ln for ln in ax.get_lines() if ln.get_linewidth() == SEED_LINEWIDTH]
    assert len(thin) >= 4  # two D-JEPA predictor seeds and two I-JEPA reference seeds
    posterior = [0.001, 0.501, 1.0]  # its records at t = 0, 500, 999
    assert any(list(ln.get_ydata()) == pytest.approx(posterior) for ln in ax.get_lines())


def test_sampling_error_panel_has_the_ijepa_reference(tmp_path):
    root = tmp_path / "runs"
    _denoising_records(root)
    fig, styles = _figure(root, "sampling")
    error_panel = next(ax for ax in fig.axes if ax.get_title().startswith("error of"))
    dotted = [ln for ln in error_panel.get_lines() if ln.get_linestyle() == ":"]
    assert dotted and {ln.get_color() for ln in dotted} == {styles[("ijepa",)].color}
    assert any(ln.get_ydata()[0] == pytest.approx(0.5) for ln in dotted)  # mean of 0.3, 0.7


def test_knn_floor_far_off_scale_goes_to_the_legend(tmp_path):
    root = tmp_path / "runs"
    _two_methods(root, seeds=2, ijepa=(30.0, 31.0), djepa=(32.0, 33.0))
    write(root, "pixels", "pixels", 0, knn=90.0, checkpoint="model:pixels", folder="floors")
    fig, styles = _figure(root, "knn_vs_k")
    ax = fig.axes[0]
    pixels_color = styles[("pixels",)].color
    assert not [ln for ln in ax.get_lines() if ln.get_color() == pixels_color]
    assert ax.get_ylim()[1] < 40
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "raw pixels (off scale): 90.0–90.2 over k" in texts


def test_training_curves_one_epoch_and_seed_line_styles(tmp_path):
    root = tmp_path / "runs"
    for method in ("ijepa", "djepa"):
        for seed in (0, 1):
            run = write(root, f"{method}{seed}", method, seed, knn=50.0, regularizer=PLAIN)
            rows = [{"kind": "step", "step": s, "epoch": 0, "loss": 1.0 / (s + 1) + seed,
                     "loss_jepa": 0.5 / (s + 1)} for s in range(5)]  # fmt: skip
            rows.append({"kind": "epoch", "epoch": 1, "step": 5, "knn_top1": 40.0 + seed,
                         "rankme": 3.0 + seed})  # fmt: skip
            (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig, _ = _figure(root, "training_curves", logs=True)
    titles = [ax.get_title() for ax in fig.axes]
    knn_ax = fig.axes[titles.index("kNN monitor (%)")]
    assert knn_ax.get_xlabel() == "after epoch 1"
    assert fig.axes[titles.index("RankMe")].get_xlabel() == "after epoch 1"
    assert [t.get_text() for t in knn_ax.get_xticklabels()] == ["I-JEPA", "D-JEPA"]
    assert len(knn_ax.get_lines()) == 4  # one marker per run
    loss_ax = fig.axes[titles.index("total loss")]
    styles = {str(ln.get_linestyle()) for ln in loss_ax.get_lines()}
    assert len(styles) == 2  # seed 0 and seed 1 drawn differently
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "seed 0" in texts and "seed 1" in texts


# --- attentive and fine-tuning columns ------------------------------------------------------


def test_attentive_and_finetune_columns_appear_only_when_recorded(tmp_path):
    root = tmp_path / "runs"
    for seed in range(2):
        write(root, f"i{seed}", "ijepa", seed, knn=50.0 + seed)
        write(root, f"d{seed}", "djepa", seed, knn=52.0 + seed)
    _, out = build(root, tmp_path / "without")
    assert not {"attentive", "fine-tune"} & set(csv(out, "headline")["column"])

    for seed in range(2):
        for run, method, base in ((f"i{seed}", "ijepa", 60.0), (f"d{seed}", "djepa", 64.0)):
            ident = RunIdentity(run, method, seed, f"{run}-{seed}".ljust(64, "0"))
            recs = [
                make_record(ident, dataset="digits", split="test", protocol=protocol,
                            metric="top1", value=base + shift + seed, params={})
                for protocol, shift in (("attentive", 0.0), ("finetune", 10.0))
            ]  # fmt: skip
            append_records(root / run / "results" / "extra.jsonl", recs)
    _, out = build(root, tmp_path / "with")
    head = csv(out, "headline")
    assert cell(head, "djepa", "attentive")["mean"] == pytest.approx(64.5)
    assert cell(head, "ijepa", "fine-tune")["mean"] == pytest.approx(70.5)
    header = table_lines((out / "report.md").read_text())[0]
    assert header.index("attentive") < header.index("fine-tune")
