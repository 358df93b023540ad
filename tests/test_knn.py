"""kNN: exact agreement with a plain numpy reference (DINO weighting) and with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from djepa_bench.knn import KnnClassifier, faiss_available, knn_classify, topk_correct

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
    scores = knn_classify(
        torch.from_numpy(bank), torch.from_numpy(labels), torch.from_numpy(queries), [k],
        classes, backend=backend,
    )[k]  # fmt: skip
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


def test_classifier_one_search_serves_every_k_and_matches_knn_classify():
    bank, labels, queries, classes = _data(seed=2)
    tb, tl, tq = map(torch.from_numpy, (bank, labels, queries))
    clf = KnnClassifier(tb, tl, classes, backend="torch")
    both = clf.scores(tq, [5, 50])
    for k in (5, 50):
        torch.testing.assert_close(
            both[k], knn_classify(tb, tl, tq, [k], classes, backend="torch")[k]
        )
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
    tied = torch.tensor([[1.0, 1.0, 0.0]])
    assert topk_correct(tied, torch.tensor([0]), 1).item()
    assert not topk_correct(tied, torch.tensor([1]), 1).item()


def test_unknown_weighting_is_a_user_error():
    from djepa_bench.errors import UserError

    with pytest.raises(UserError, match="weighting"):
        KnnClassifier(torch.randn(4, 2), torch.arange(4), 4, weighting="gaussian")
