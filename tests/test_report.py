"""Report builder on synthetic records of known values: tables, CIs, bold, figures, reruns."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from djepa_bench.records import RunIdentity, append_records, make_record

# kNN@20 top-1 per (method, seed): D-JEPA - I-JEPA = 3, 2, 4 -> mean 3, sd 1, n 3.
KNN20 = {("ijepa", 0): 70.0, ("ijepa", 1): 72.0, ("ijepa", 2): 74.0,
         ("djepa", 0): 73.0, ("djepa", 1): 74.0, ("djepa", 2): 78.0}  # fmt: skip
LINEAR = {("ijepa", 0): 80.0, ("ijepa", 1): 81.0, ("ijepa", 2): 82.0,
          ("djepa", 0): 80.5, ("djepa", 1): 80.0, ("djepa", 2): 82.5}  # fmt: skip
T_975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
CORRUPTIONS = ["gaussian_noise", "defocus_blur", "fog", "contrast"]


def write_run(
    root: Path,
    name: str,
    method: str,
    seed: int,
    dataset: str = "digits",
    size: str = "nano",
    full: bool = True,
    config: bool = True,
) -> Path:
    """A run dir with config.yaml, log.jsonl and result records of every protocol."""
    run = root / name
    run.mkdir(parents=True)
    ident = RunIdentity(name, method, seed, "0" * 64)
    shift = {"ijepa": 0.0, "djepa": 2.0, "pixels": -30.0, "random": -40.0}.get(method, 0.0)

    def rec(protocol, metric, value, **params):
        return make_record(ident, dataset=dataset, split="test", protocol=protocol,
                           metric=metric, value=value, params=params)  # fmt: skip

    base20 = KNN20.get((method, seed), 50.0 + shift)
    knn = [rec("knn", "top1", base20 - 0.01 * (k - 20), k=k, temperature=0.07, weighting="dino")
           for k in (10, 20, 100)]  # fmt: skip
    recs = knn + [rec("representation", "rankme", 40.0 + shift + seed)]
    recs.append(rec("linear", "top1", LINEAR.get((method, seed), 60.0 + shift), lr=0.01))
    if full:
        for shots in (1, 5, 25):
            for trial in range(3):
                base = 20 + 10 * math.log(shots) + shift + seed
                recs.append(rec("lowshot", "top1", base + trial - 1, shots=shots, trial=trial,
                                classifier="logreg"))  # fmt: skip
                recs.append(rec("lowshot", "top1", base - 5, shots=shots, trial=trial,
                                classifier="knn"))  # fmt: skip
        recs.append(rec("robustness", "top1", 90 + shift, corruption="clean", severity=0,
                        classifier="linear"))  # fmt: skip
        for c_index, corruption in enumerate(CORRUPTIONS):
            for severity in range(1, 6):
                acc = 90 + shift - 8 * severity - c_index + 0.5 * seed
                recs.append(rec("robustness", "top1", acc, corruption=corruption,
                                severity=severity, classifier="linear"))  # fmt: skip
        # An extra (non-benchmark) corruption where D-JEPA is far worse: not in mCE.
        bad = 40.0 if method == "djepa" else 0.0
        recs.append(rec("robustness", "top1", 60 + shift - bad, corruption="saturate",
                        severity=3, classifier="linear", family="digital"))  # fmt: skip
        for t in (0, 250, 500, 750, 999):  # noisy input z_t/sqrt(abar) explodes near t=T
            for estimator, err in (("predictor", 0.1 + t / 2000 - 0.02 * shift / 2),
                                   ("noisy_input", 0.001 + (t / 1000) ** 4 * 1e3)):  # fmt: skip
                recs.append(rec("denoising", "mse", err, noise_t=t, estimator=estimator))
                recs.append(rec("denoising", "cosine", 1 - err / 4, noise_t=t, estimator=estimator))
        if method == "ijepa":  # the deterministic reference: no noise level
            recs.append(rec("denoising", "mse", 0.6, estimator="ijepa_predictor"))
            recs.append(rec("denoising", "cosine", 0.85, estimator="ijepa_predictor"))
            recs.append(rec("denoising", "energy_score", 0.9, estimator="ijepa_predictor",
                            samples=1))  # fmt: skip
        recs.append(rec("denoising", "mse", 1.0, estimator="zeros"))
        for steps in (1, 5, 25):
            for metric, value in (("sample_mean_mse", 0.5 / steps), ("diversity", 0.1 * steps),
                                  ("energy_score", 1 / steps + 0.2)):  # fmt: skip
                recs.append(rec("denoising", metric, value, steps=steps, samples=4, eta=0.0))
    append_records(run / "results" / "all.jsonl", recs)
    if config:
        cfg = {"model": {"size": size}, "train": {"method": method, "seed": seed, "epochs": 2},
               "diffusion": {"lambda_diff": 1.0 if method == "djepa" else 0.0},
               "data": {"dataset": dataset}}  # fmt: skip
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        (run / "meta.json").write_text(json.dumps({"seed": seed}))
        rows = [{"kind": "step", "step": s, "epoch": s // 10, "loss": 1.0 / (s + 1) + 0.1,
                 "loss_jepa": 0.8 / (s + 1), "loss_diff": 0.2 / (s + 1) if method == "djepa"
                 else None} for s in range(0, 20, 2)]  # fmt: skip
        rows += [{"kind": "epoch", "epoch": e, "step": 10 * e, "knn_top1": 50 + 5 * e + shift,
                  "rankme": 30 + e} for e in range(2)]  # fmt: skip
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Three seeds of I-JEPA and D-JEPA plus a raw-pixel and a random-init floor."""
    root = tmp_path_factory.mktemp("runs")
    for method in ("ijepa", "djepa"):
        for seed in range(3):
            write_run(root, f"{method}-s{seed}", method, seed)
    write_run(root, "pixels", "pixels", 0, config=False)
    write_run(root, "random", "random", 0, full=False, config=False)
    return root


@pytest.fixture(scope="module")
def built(study, tmp_path_factory):
    from djepa_bench.reports.build import build_report

    out = tmp_path_factory.mktemp("report")
    report = build_report([str(study)], out)
    return report, out


def _headline(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / "headline.csv")


def _cell(frame: pd.DataFrame, method: str, column: str) -> pd.Series:
    rows = frame[(frame["method"] == method) & (frame["column"] == column)]
    assert len(rows) == 1, (method, column, rows)
    return rows.iloc[0]


def test_headline_numbers_match_known_values(built):
    _, out = built
    table = _headline(out)
    knn = _cell(table, "djepa", "kNN@20")
    assert knn["mean"] == pytest.approx(75.0)
    assert knn["std"] == pytest.approx(math.sqrt(7.0))  # 73, 74, 78
    assert knn["n"] == 3
    assert _cell(table, "ijepa", "kNN@20")["mean"] == pytest.approx(72.0)
    assert _cell(table, "ijepa", "kNN@20")["std"] == pytest.approx(2.0)
    # Low-shot uses logistic regression (preferred over the knn classifier), mean of trials.
    one_shot = _cell(table, "ijepa", "1-shot")
    assert one_shot["mean"] == pytest.approx(20 + 1.0)  # seeds 0, 1, 2 add 0, 1, 2
    assert _cell(table, "djepa", "25-shot")["mean"] == pytest.approx(20 + 10 * math.log(25) + 3)
    # Floors are rows, with one seed and no std.
    pixels = _cell(table, "pixels", "linear")
    assert pixels["mean"] == pytest.approx(30.0) and pixels["n"] == 1 and math.isnan(pixels["std"])
    assert _cell(table, "random", "RankMe")["mean"] == pytest.approx(0.0)


def test_mce_is_relative_to_the_baseline_and_lower_is_better(built):
    _, out = built
    table = _headline(out)
    assert _cell(table, "ijepa", "mCE")["mean"] == pytest.approx(100.0, abs=0.5)
    djepa = _cell(table, "djepa", "mCE")["mean"]
    assert djepa < 100.0
    # D-JEPA is 2 points better at every benchmark corruption and severity; the extra
    # corruption "saturate", where it is far worse, is left out of mCE as in ImageNet-C.
    errors_ijepa = [sum(100 - (90 - 8 * s - c + 0.5) for s in range(1, 6)) for c in range(4)]
    errors_djepa = [sum(100 - (92 - 8 * s - c + 0.5) for s in range(1, 6)) for c in range(4)]
    expected = 100 * sum(d / i for d, i in zip(errors_djepa, errors_ijepa, strict=True)) / 4
    assert djepa == pytest.approx(expected)
    mce = table[table["column"] == "mCE"]
    best = mce[mce["best"]]
    assert list(best["method"]) == ["djepa"]  # lowest mCE is the best, not the highest


def test_bold_marks_the_best_row_per_column(built):
    _, out = built
    table = _headline(out)
    for column in ("kNN@20", "RankMe", "5-shot"):
        rows = table[table["column"] == column]
        assert list(rows[rows["best"]]["method"]) == ["djepa"], column
    linear = table[table["column"] == "linear"]  # 81.0 and 81.0: a tie bolds both
    assert sorted(linear[linear["best"]]["method"]) == ["djepa", "ijepa"]
    md = (out / "report.md").read_text()
    # 3 seeds: mean ± the 95% t half-width (t(0.975, 2) x sd / sqrt(3)), best mean in bold.
    assert f"**75.0** ± {T_975_DF2 * math.sqrt(7.0) / math.sqrt(3):.1f}" in md
    assert f"| 72.0 ± {T_975_DF2 * 2.0 / math.sqrt(3):.1f} |" in md
    tex = (out / "tables" / "headline.tex").read_text()
    assert r"$\mathbf{75.0}$\\{\scriptsize$\pm 6.6$}" in tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"mCE $\downarrow$" in tex


def test_paired_ci_width_for_a_known_sample(built):
    _, out = built
    deltas = pd.read_csv(out / "tables" / "delta_vs_ijepa.csv")
    knn = deltas[(deltas["method"] == "djepa") & (deltas["column"] == "kNN@20")].iloc[0]
    half = T_975_DF2 * 1.0 / math.sqrt(3)  # differences 3, 2, 4: sd 1
    assert knn["diff"] == pytest.approx(3.0)
    assert knn["ci_low"] == pytest.approx(3.0 - half, rel=1e-5)
    assert knn["ci_high"] == pytest.approx(3.0 + half, rel=1e-5)
    assert knn["n_pairs"] == 3 and knn["p"] == pytest.approx(0.0351, abs=1e-4)
    # Holm over the 8 tests: six columns have constant differences (p = 0), so kNN's p is
    # multiplied by 8 - 6 = 2 and no longer below 0.05.
    assert knn["p_adjusted"] == pytest.approx(2 * knn["p"]) and not bool(knn["significant"])
    linear = deltas[(deltas["method"] == "djepa") & (deltas["column"] == "linear")].iloc[0]
    assert linear["diff"] == pytest.approx(0.0) and not bool(linear["significant"])
    md = (out / "report.md").read_text()
    assert "| +3.0 [+0.5, +5.5] |" in md
    assert "3 seeds paired" in md and "no difference resolved on kNN@20" in md
    assert "better on 1-shot" in md


def test_stats_helpers_directly():
    from djepa_bench.reports.stats import paired_difference, summarise

    diff = paired_difference({0: 73.0, 1: 74.0, 2: 78.0, 5: 1.0}, {0: 70.0, 1: 72.0, 2: 74.0})
    assert diff.n == 3 and diff.high - diff.low == pytest.approx(2 * T_975_DF2 / math.sqrt(3))
    assert diff.diffs == (3.0, 2.0, 4.0) and diff.sd == pytest.approx(1.0)
    single = paired_difference({0: 2.0}, {0: 1.0})
    assert single.mean == 1.0 and not single.has_interval and not single.excludes_zero
    two = paired_difference({0: 2.0, 1: 9.0}, {0: 1.0, 1: 1.0})  # below 3 pairs: no interval
    assert not two.has_interval and math.isnan(two.low) and math.isnan(two.p)
    assert two.sd == pytest.approx(math.sqrt(24.5)) and two.diffs == (1.0, 8.0)
    assert summarise([1.0, 3.0]).std == pytest.approx(math.sqrt(2))
    assert math.isnan(summarise([1.0, 3.0]).half)
    assert summarise([1.0, 2.0, 3.0]).half == pytest.approx(T_975_DF2 / math.sqrt(3))


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] >= 500


def test_figures_are_valid_png_and_pdf(built):
    report, out = built
    expected = {"knn_vs_k", "lowshot", "robustness", "denoising", "sampling", "training_curves"}
    assert set(report.figures) == expected
    for name in expected:
        _check_png(out / "figures" / f"{name}.png")
        pdf = (out / "figures" / f"{name}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
        assert b"CreationDate" not in pdf
        assert f"figures/{name}.png" in (out / "report.md").read_text()


def test_outputs_and_records_csv(built, study):
    _, out = built
    records = pd.read_csv(out / "records.csv")
    total = sum(len(p.read_text().splitlines()) for p in study.glob("*/results/*.jsonl"))
    assert len(records) == total
    assert {"run", "method", "seed", "protocol", "metric", "value", "params"} <= set(
        records.columns
    )
    md = (out / "report.md").read_text()
    assert "I-JEPA: 3 seeds" in md and "raw pixels: 1 seed" in md
    floors = sum(
        m in ("pixels", "random") for m in pd.read_csv(out / "tables" / "runs.csv")["method"]
    )
    assert floors >= 1 and f"trained, {floors} floor" in md.splitlines()[2]
    assert "Every trained row is above the raw pixels floor (16 of 16" in md
    assert "20" not in md.split("\n")[0]  # no timestamp in the title line
    for name in ("headline.csv", "headline.tex", "delta_vs_ijepa.csv", "delta_vs_ijepa.tex",
                 "runs.csv"):  # fmt: skip
        assert (out / "tables" / name).is_file(), name


def test_rerun_gives_identical_bytes(built, study, tmp_path):
    from djepa_bench.reports.build import build_report

    _, first = built
    second = tmp_path / "again"
    # The same runs named differently (a glob, in another order) give byte-identical files.
    build_report(sorted(str(p) for p in study.iterdir())[::-1], second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert any(p.suffix == ".pdf" for p in files) and any(p.suffix == ".png" for p in files)
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_one_seed_says_so_instead_of_intervals(study, tmp_path):
    from djepa_bench.reports.build import build_report

    out = tmp_path / "one"
    runs = [str(study / "ijepa-s0"), str(study / "djepa-s0")]
    build_report(runs, out, formats="md,csv", figure_names=())
    md = (out / "report.md").read_text()
    assert "single seed" in md and "no interval" in md
    table_lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert "| D-JEPA | I-JEPA | 1 | +3.0 |" in "\n".join(table_lines)
    assert not any("±" in line or "[" in line for line in table_lines)
    assert not any(re.search(r"\d\*", line.replace("**", "")) for line in table_lines)
    assert not (out / "tables" / "headline.tex").exists()  # tex not requested


def test_absent_records_skip_their_figures(tmp_path, run_cli):
    root = tmp_path / "runs"
    write_run(root, "i0", "ijepa", 0, full=False, config=False)
    write_run(root, "d0", "djepa", 0, full=False, config=False)
    result = run_cli("report", str(root / "*"), "--out", tmp_path / "out")
    assert result.code == 0, result.err
    figures = {p.stem for p in (tmp_path / "out" / "figures").glob("*.png")}
    assert figures == {"knn_vs_k"}
    # Rebuilding into a folder with figures of an older, fuller report removes those.
    (tmp_path / "out" / "figures" / "lowshot.png").write_bytes(b"stale")
    assert run_cli("report", str(root / "*"), "--out", tmp_path / "out").code == 0
    assert not (tmp_path / "out" / "figures" / "lowshot.png").exists()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Skipped figures" in md and "Low-shot accuracy vs labelled images per class: no" in md
    assert "skipped figures:" in result.out


def test_rebuild_with_another_baseline_removes_old_delta_tables(tmp_path, run_cli):
    root = tmp_path / "runs"
    write_run(root, "i0", "ijepa", 0, full=False, config=False)
    write_run(root, "d0", "djepa", 0, full=False, config=False)
    tables = tmp_path / "out" / "tables"
    assert run_cli("report", str(root / "*"), "--out", tmp_path / "out").code == 0
    assert (tables / "delta_vs_ijepa.csv").is_file()
    assert (
        run_cli("report", str(root / "*"), "--out", tmp_path / "out", "--baseline", "djepa").code
        == 0
    )
    assert sorted(p.name for p in tables.glob("delta_vs_*")) == [
        "delta_vs_djepa.csv",
        "delta_vs_djepa.tex",
    ]
    assert (
        run_cli("report", str(root / "*"), "--out", tmp_path / "out", "--baseline", "none").code
        == 0
    )
    assert not list(tables.glob("delta_vs_*")) and (tables / "headline.csv").is_file()


def test_group_by_config_field_and_dataset(tmp_path, run_cli):
    root = tmp_path / "runs"
    for size in ("nano", "tiny"):
        for method in ("ijepa", "djepa"):
            write_run(root, f"{method}-{size}", method, 0, size=size, full=False)
    write_run(root, "pix-c10", "pixels", 0, dataset="cifar10", full=False, config=False)
    mixed = run_cli("report", root, "--out", tmp_path / "o1", "--group-by", "model.size")
    assert mixed.code == 2 and "--group-by dataset" in mixed.err
    assert len(mixed.err.strip().splitlines()) == 1
    ok = run_cli("report", root, "--out", tmp_path / "o2", "--group-by", "model.size",
                 "--group-by", "dataset")  # fmt: skip
    assert ok.code == 0, ok.err
    table = pd.read_csv(tmp_path / "o2" / "tables" / "headline.csv")
    knn = table[table["column"] == "kNN@20"]
    assert len(knn) == 5
    assert set(knn["model.size"].astype(str)) == {"nano", "tiny", "—"}
    # Best is judged within each dataset: the lone cifar10 floor is compared with nothing,
    # so it is not bold.
    assert not bool(knn[knn["dataset"] == "cifar10"]["best"].iloc[0])
    assert knn[knn["dataset"] == "digits"]["best"].sum() >= 1
    tex = (tmp_path / "o2" / "tables" / "headline.tex").read_text()
    assert r"model.size & dataset" in tex and "raw pixels (pix-c10) & --- & cifar10" in tex
    assert "—" not in tex  # plain-ASCII LaTeX


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{empty}"], "no result records found"),
        (["{runs}", "--baseline", "mae"], "baseline method 'mae' has no records"),
        (["{runs}", "--format", "html"], "unknown --format html"),
        (["{runs}", "--group-by", "model.sise"], "did you mean model.size"),
        (["{runs}/nope"], "does not exist"),
        (["{runs}/x*"], "matches nothing"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, run_cli, args, message):
    runs, empty = tmp_path / "runs", tmp_path / "empty"
    write_run(runs, "d0", "djepa", 0, full=False)
    (empty / "r" / "results").mkdir(parents=True)
    argv = [a.format(runs=runs, empty=empty) for a in args]
    result = run_cli("report", *argv, "--out", tmp_path / "out")
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_baseline_none_skips_deltas(tmp_path, run_cli):
    root = tmp_path / "runs"
    write_run(root, "d0", "djepa", 0, full=False, config=False)
    result = run_cli("report", root, "--out", tmp_path / "out", "--baseline", "none")
    assert result.code == 0, result.err
    assert not list((tmp_path / "out" / "tables").glob("delta_*"))
    assert "no baseline" in (tmp_path / "out" / "report.md").read_text()


def test_help_lists_every_option(run_cli):
    result = run_cli("report", "--help")
    assert result.code == 0
    for option in ("--out", "--baseline", "--format", "--group-by", "--columns", "--title",
                   "--correction", "--table-layout"):  # fmt: skip
        assert option in result.out


def test_eval_out_folders_reevaluation_and_reference_variants(tmp_path):
    from djepa_bench.reports.build import build_report

    root = tmp_path / "runs"

    def knn(identity, value, lr=None):
        params = {"k": 20, "temperature": 0.07, "weighting": "dino"}
        knn_rec = make_record(identity, dataset="digits", split="test", protocol="knn",
                              metric="top1", value=value, params=params)  # fmt: skip
        lin = make_record(identity, dataset="digits", split="test", protocol="linear",
                          metric="top1", value=value + 10, params={"lr": lr})  # fmt: skip
        return [knn_rec, lin]

    # A trained run evaluated, trained further (new checkpoint) and evaluated twice more.
    old, new = RunIdentity("i0", "ijepa", 0, "a" * 64), RunIdentity("i0", "ijepa", 0, "b" * 64)
    append_records(root / "i0" / "results" / "knn.jsonl", knn(old, 10.0, lr=0.1))
    append_records(root / "i0" / "results" / "knn.jsonl", knn(new, 50.0, lr=0.1))
    append_records(root / "i0" / "results" / "knn.jsonl", knn(new, 52.0, lr=0.3))
    # Reference models written by `eval --model ... --out runs/floors` (no results/ folder).
    floors = root / "floors"
    append_records(floors / "knn.jsonl", knn(RunIdentity("pixels", "pixels", 0, "p"), 20.0))
    for seed, value in ((0, 5.0), (1, 7.0)):  # ids as encoders.py writes them
        ident = RunIdentity("random:tiny", "random", seed, f"model:random:tiny:p4:ab:seed{seed}")
        append_records(floors / "knn.jsonl", knn(ident, value))
    small = RunIdentity("random:small", "random", 0, "model:random:small:p4:cd:seed0")
    append_records(floors / "knn.jsonl", knn(small, 9.0))

    report = build_report([str(root)], tmp_path / "out", figure_names=())
    table = _headline(tmp_path / "out")
    assert _cell(table, "ijepa", "kNN@20")["mean"] == pytest.approx(52.0)  # newest only
    assert _cell(table, "ijepa", "linear")["n"] == 1
    tiny = _cell(table, "random:tiny", "kNN@20")
    assert tiny["mean"] == pytest.approx(6.0) and tiny["n"] == 2  # two seeds, one row
    assert _cell(table, "random:small", "kNN@20")["mean"] == pytest.approx(9.0)
    assert _cell(table, "pixels", "kNN@20")["mean"] == pytest.approx(20.0)
    notes = " ".join(report.notes)
    assert "older checkpoints ignored" in notes and "superseded by the newest" in notes
    md = (tmp_path / "out" / "report.md").read_text()
    assert "random init (tiny)" in md and "raw pixels" in md
    records = pd.read_csv(tmp_path / "out" / "records.csv")
    assert len(records) == 2 + 2 * 4  # the run's newest pair + four reference subjects


def test_run_arguments_resolve_to_run_directories(tmp_path):
    from djepa_bench.reports.collect import find_run_dirs

    run = write_run(tmp_path / "runs", "d0", "djepa", 0, full=False)
    (tmp_path / "runs" / "notes.txt").write_text("not a run")
    for arg in (run, run / "results", run / "results" / "all.jsonl", tmp_path / "runs",
                tmp_path / "runs" / "*"):  # fmt: skip
        assert find_run_dirs([str(arg)]) == [run.resolve()], arg


def test_curve_bands_need_three_seeds_and_ignore_trials():
    from djepa_bench.reports.figures import curve

    key = ("djepa",)
    rows = pd.DataFrame(
        {
            "key": [key] * 5,
            "x": [1, 1, 1, 2, 2],
            "seed": [0, 1, 2, 0, 1],
            "value": [73.0, 74.0, 78.0, 10.0, 12.0],
        }  # fmt: skip
    )
    data = curve(rows, "x").set_index("x")
    assert data.loc[1.0, "mean"] == pytest.approx(75.0)
    assert data.loc[1.0, "half"] == pytest.approx(T_975_DF2 * math.sqrt(7.0) / math.sqrt(3))
    assert math.isnan(data.loc[2.0, "half"])  # two seeds: no band
    # One seed with three trials: the trials are averaged, never turned into a band.
    one_seed = pd.DataFrame(
        {"key": [key] * 3, "x": [5] * 3, "seed": [0] * 3, "value": [1.0, 2.0, 3.0]}
    )
    trials = curve(one_seed, "x")
    assert trials["mean"].iloc[0] == pytest.approx(2.0) and math.isnan(trials["half"].iloc[0])
