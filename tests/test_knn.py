"""kNN: agreement with a numpy reference (DINO weighting) and scikit-learn, streamed or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from djepa_bench import knn as knn_module
from djepa_bench.errors import UserError
from djepa_bench.knn import KnnClassifier, faiss_available, knn_accuracy, topk_correct

BACKENDS = ["torch"] + (["faiss"] if faiss_available() else [])


def _data(seed=0, n=600, m=150, dim=24, classes=7):
    rng = np.random.default_rng(seed)
    bank = rng.standard_normal((n, dim)).astype(np.float32)
    queries = rng.standard_normal((m, dim)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    return bank, labels, queries, classes


def numpy_reference(bank, labels, queries, k, classes, temperature=0.07, weighting="dino"):
    """Straight from the formula: cosine sims, top-k, class score sum exp(s/T), argmax."""
    b = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = q @ b.T
    preds = []
    for row in sims:
        top = np.argsort(-row, kind="stable")[:k]
        scores = np.zeros(classes)
        for j in top:
            scores[labels[j]] += np.exp(row[j] / temperature) if weighting == "dino" else 1.0
        preds.append(int(np.argmax(scores)))
    return np.array(preds)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 10, 20, 100])
def test_dino_weighted_predictions_equal_numpy_reference(backend, k):
    bank, labels, queries, classes = _data()
    clf = KnnClassifier(torch.from_numpy(bank), torch.from_numpy(labels), classes, backend=backend)
    scores = clf.scores(torch.from_numpy(queries), [k])[k]
    expected = numpy_reference(bank, labels, queries, k, classes)
    np.testing.assert_array_equal(scores.argmax(1).numpy(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_vote_equals_sklearn_kneighbors(backend):
    from sklearn.neighbors import KNeighborsClassifier

    bank, labels, queries, classes = _data(seed=1)
    k = 15
    clf = KnnClassifier(
        torch.from_numpy(bank), torch.from_numpy(labels), classes, weighting="uniform",
        backend=backend,
    )  # fmt: skip
    ours = clf.predict(torch.from_numpy(queries), k).numpy()
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    expected = sk.fit(bank, labels).predict(queries)
    np.testing.assert_array_equal(ours, expected)


def test_classifier_one_search_serves_every_k():
    bank, labels, queries, classes = _data(seed=2)
    tb, tl, tq = map(torch.from_numpy, (bank, labels, queries))
    clf = KnnClassifier(tb, tl, classes, backend="torch")
    both = clf.scores(tq, [5, 50])
    for k in (5, 50):
        torch.testing.assert_close(both[k], clf.scores(tq, [k])[k])
    query_labels = torch.from_numpy(numpy_reference(bank, labels, queries, 5, classes))
    acc = clf.accuracy(tq, query_labels, [5], topk=(1, 5))
    assert acc[5][1] == pytest.approx(100.0)  # labels are the reference's own predictions
    assert acc[5][5] >= acc[5][1]


def test_k_larger_than_bank_is_capped_and_topk_counts_ties_low():
    bank = torch.eye(3)
    labels = torch.tensor([0, 1, 2])
    clf = KnnClassifier(bank, labels, 3, backend="torch")
    scores = clf.scores(torch.tensor([[1.0, 0.0, 0.0]]), [200])[200]
    assert scores.shape == (1, 3) and scores.argmax().item() == 0
    assert clf.k_used(200) == 3 and clf.k_used(2) == 2
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    assert topk_correct(tied, torch.tensor([0]), 1).item()
    assert not topk_correct(tied, torch.tensor([1]), 1).item()


def test_unknown_weighting_fails_at_config_build_and_faiss_index_needs_faiss():
    from djepa_bench.config import build_config

    with pytest.raises(UserError, match="'eval.knn.weighting' must be one of"):
        build_config(overrides=["eval.knn.weighting=gaussian"])
    with pytest.raises(UserError, match="FAISS index"):
        KnnClassifier(torch.randn(400, 8), torch.arange(400), 4, backend="torch", index="ivf-pq")


def test_top5_counts_min_5_k_classes_when_k_is_below_5():
    # Three neighbours, of classes 5, 6 and 7; the query's class 0 has no neighbour.
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [-1.0, 0.0]])
    labels = torch.tensor([5, 6, 7, 0])
    clf = KnnClassifier(bank, labels, 10, backend="torch")
    acc = clf.accuracy(torch.tensor([[1.0, 0.05]]), torch.tensor([0]), [3], topk=(1, 5))
    # Counting 5 classes would fill places 4-5 with zero-score classes 0 and 1: "correct".
    assert acc[3][5] == 0.0
    acc = clf.accuracy(torch.tensor([[1.0, 0.05]]), torch.tensor([7]), [3], topk=(1, 5))
    assert acc[3] == {1: 0.0, 5: 100.0}


def _clustered(n=3000, m=400, dim=32, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 1.5
    y, yq = rng.integers(0, classes, n), rng.integers(0, classes, m)
    x = (centres[y] + rng.standard_normal((n, dim))).astype(np.float32)
    q = (centres[yq] + rng.standard_normal((m, dim))).astype(np.float32)
    return x, y, q, yq, classes


@pytest.mark.parametrize("backend", BACKENDS)
def test_streamed_search_over_shards_equals_the_in_memory_search(tmp_path, backend, monkeypatch):
    from djepa_bench.shards import EntryWriter, open_entry

    x, y, q, yq, classes = _clustered()
    with EntryWriter(tmp_path / "bank", len(x), 700, "float32") as writer:
        for span in writer.my_shards:
            with writer.shard(span) as put:
                put(x[span.start : span.stop])
    resident = KnnClassifier(torch.from_numpy(x), torch.from_numpy(y), classes, backend=backend)
    monkeypatch.setattr(knn_module, "_RESULT_BYTES", 12 * 20 * 100)  # 100-query search calls
    streamed = KnnClassifier(open_entry(tmp_path / "bank"), torch.from_numpy(y), classes,
                             backend=backend, block_rows=450, resident_bytes=0)  # fmt: skip
    assert streamed._resident is None and streamed.block_rows == 450
    s1, i1 = resident.search(torch.from_numpy(q), 20)
    s2, i2 = streamed.search(q, 20)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2)
    expected = numpy_reference(x, y, q, 20, classes)
    acc = streamed.accuracy(q, torch.from_numpy(yq), [10, 20], topk=(1,))
    assert acc[20][1] == pytest.approx(100.0 * np.mean(expected == yq))
    assert acc == resident.accuracy(torch.from_numpy(q), torch.from_numpy(yq), [10, 20], (1,))


@pytest.mark.skipif(not faiss_available(), reason="approximate indexes are FAISS's")
def test_ivf_indexes_measure_their_recall_against_exact_search():
    x, y, q, yq, classes = _clustered()
    bank, labels = torch.from_numpy(x), torch.from_numpy(y)
    exact = KnnClassifier(bank, labels, classes)
    assert exact.recall(q, [10]) == {10: 1.0} and exact.params == {}
    # Every list probed: IVF-Flat is exhaustive, so it finds exactly the exact neighbours.
    full = KnnClassifier(bank, labels, classes, index="ivf-flat", nlist=8, nprobe=8)
    assert full.recall(q, [10, 20], sample=200) == {10: 1.0, 20: 1.0}
    assert torch.equal(full.search(q, 20)[1], exact.search(q, 20)[1])
    pq = KnnClassifier(bank, labels, classes, index="ivf-pq", nlist=16, nprobe=2, pq_m=4)
    assert pq.params == {"index": "ivf-pq", "nlist": 16, "nprobe": 2, "pq_m": 4, "refine": 1}
    recall = pq.recall(q, [20], sample=200)[20]
    assert 0.05 < recall < 1.0  # approximate, and measured as such
    refined = KnnClassifier(
        bank, labels, classes, index="ivf-pq", nlist=16, nprobe=2, pq_m=4, refine=4
    )
    assert refined.recall(q, [20], sample=200)[20] > recall
    sims, idx = refined.search(q[:50], 20)  # re-ranked: exact cosines of the found rows
    unit = torch.nn.functional.normalize
    expected = (unit(torch.from_numpy(q[:50]), dim=1).unsqueeze(1) * unit(bank, dim=1)[idx]).sum(2)
    torch.testing.assert_close(sims, expected)
    ks = [20]
    gap = exact.accuracy(q, yq, ks, (1,))[20][1] - refined.accuracy(q, yq, ks, (1,))[20][1]
    assert abs(gap) < 5  # on well-separated clusters the approximation costs little


def test_monitor_accuracy_follows_the_knn_settings():
    from sklearn.neighbors import KNeighborsClassifier

    from djepa_bench.config import KnnConfig

    x, y, q, yq, classes = _clustered(n=600, m=200, dim=8, seed=3)
    args = (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(q), torch.from_numpy(yq))
    uniform = knn_accuracy(*args, k=15, cfg=KnnConfig(weighting="uniform", backend="torch"))
    sk = KNeighborsClassifier(n_neighbors=15, metric="cosine", algorithm="brute").fit(x, y)
    assert uniform == pytest.approx(100.0 * np.mean(sk.predict(q) == yq))
    dino = knn_accuracy(*args, k=15)
    assert dino == pytest.approx(100.0 * np.mean(numpy_reference(x, y, q, 15, classes) == yq))


def _knn_records(tmp_path, *overrides):
    from djepa_bench.encoders import load_subject
    from djepa_bench.eval_protocols.base import build_context
    from djepa_bench.eval_protocols.knn import run

    subject = load_subject(
        model="pixels",
        overrides=["data.dataset=digits", f"eval.cache_dir={tmp_path}", *overrides],
    )
    ctx = build_context(subject)
    return ctx, run(ctx)


def test_protocol_records_the_k_used_and_what_was_asked(tmp_path):
    ctx, records = _knn_records(tmp_path, "eval.knn.k=[3,20,5000,9000]")
    bank = len(ctx.splits["train"])
    assert bank < 5000
    by_k = {(r["params"]["k"], r["metric"]): r for r in records}
    assert sorted({k for k, _ in by_k}) == [3, 20, bank]  # one record set per k used
    capped = by_k[(bank, "top1")]["params"]
    assert capped["k_requested"] == "5000,9000"
    assert "k_requested" not in by_k[(20, "top1")]["params"]
    assert "index" not in capped  # exact search: no approximate-index fields
    # top-5 at k=3 counts 3 classes: it equals top-3, not more.
    top3 = ctx.knn_classifier().accuracy(ctx.features.array("test"), ctx.features.labels("test"),
                                         [3], topk=(3,))[3][3]  # fmt: skip
    assert by_k[(3, "top5")]["value"] == pytest.approx(top3)


@pytest.mark.skipif(not faiss_available(), reason="approximate indexes are FAISS's")
def test_protocol_records_the_approximate_index_and_its_recall(tmp_path):
    _, records = _knn_records(
        tmp_path, "eval.knn.k=[10]", "eval.knn.index=ivf-flat", "eval.knn.nlist=4",
        "eval.knn.nprobe=4", "eval.knn.recall_sample=100",
    )  # fmt: skip
    params = records[0]["params"]
    assert params["index"] == "ivf-flat" and params["nlist"] == 4 and params["nprobe"] == 4
    assert params["recall"] == 1.0 and params["recall_sample"] == 100  # all lists probed
