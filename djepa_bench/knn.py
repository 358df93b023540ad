"""Weighted k-NN classification on L2-normalised features: the one implementation.

`KnnClassifier` serves the kNN protocol, low-shot, robustness and (via `knn_accuracy`) the
trainer's per-epoch monitor, with one backend rule (`resolve_backend`) and one error type.

Exact search (the default) streams the bank in blocks, from memory or from on-disk shards
(djepa_bench.shards), and merges each block's top-k into a running top-k, so neither the
bank nor the similarity matrix is ever whole in memory; banks up to 1 GiB (float32) are
normalised once and kept. FAISS searches each block (`faiss.knn` on CPU; a flat index on
one GPU, sharded over GPUs when faiss sees several); torch matmul is the fallback, and
"auto" picks it on a GPU without faiss-gpu. Approximate search (IVF-Flat, IVF-PQ) is
FAISS's own index, trained on a sample and filled block by block; `recall` measures it
against exact search on a sample of queries. The merge and the vote are written here:
FAISS returns neighbours, not DINO's class scores.

Scores follow DINO: class score = sum over the top k of exp(s/T) ("dino") or 1
("uniform"); top-5 counts min(5, k) classes as DINO does; a k beyond the bank size is
capped (`k_used`) and callers record the k actually used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from djepa_bench.errors import UserError

_BLOCK_BYTES = 256 << 20  # float32 bytes of one streamed bank block
_RESIDENT_BYTES = 1 << 30  # banks up to this size (float32) are normalised once and kept
_RESULT_BYTES = 256 << 20  # (queries x k) similarity + index bytes of one search call
_SCORE_ROWS = 4096  # queries scored at once (scores are queries x classes)
INDEXES = ("exact", "ivf-flat", "ivf-pq")


def faiss_available() -> bool:
    """True when the `faiss` module (faiss-cpu or faiss-gpu) imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_gpus() -> int:
    """GPUs FAISS can use (0 with faiss-cpu or without faiss)."""
    if not faiss_available():
        return 0
    import faiss

    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def l2_normalise(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, in float32."""
    features = features.float()
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _float_rows(rows: Any) -> torch.Tensor:
    """Rows of any array-like (numpy, memmap, shard slice, tensor) as float32 CPU torch."""
    if isinstance(rows, torch.Tensor):
        return rows.detach().float().cpu()
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))


def resolve_backend(backend: str, device: torch.device) -> str:
    """eval.knn.backend -> "faiss" or "torch" (auto: FAISS unless on a GPU without faiss-gpu)."""
    if backend == "faiss":
        if not faiss_available():
            raise UserError("eval.knn.backend=faiss but faiss is not installed; use auto or torch")
        return "faiss"
    if backend == "torch":
        return "torch"
    if not faiss_available():
        return "torch"
    # A GPU without faiss-gpu: torch matmul on the GPU beats a CPU FAISS index.
    return "faiss" if faiss_gpus() > 0 or device.type != "cuda" else "torch"


def _faiss_on_gpus(index):
    """A CPU FAISS index moved to the GPUs faiss sees: sharded over several, or one; else as is.

    Not exercised by the test suite (it needs faiss-gpu); returns the index and what keeps
    its GPU resources alive.
    """
    import faiss

    gpus = faiss_gpus()
    if gpus > 1:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # each GPU holds 1/gpus of the bank; results are merged
        return faiss.index_cpu_to_all_gpus(index, co=options), None
    if gpus == 1:
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, 0, index), resources
    return index, None


def _merge(
    best: tuple[torch.Tensor, torch.Tensor] | None,
    new: tuple[torch.Tensor, torch.Tensor],
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of two (similarities, indices) candidate lists per query."""
    if best is None:
        return new
    sims = torch.cat([best[0], new[0]], dim=1)
    idx = torch.cat([best[1], new[1]], dim=1)
    top, where = sims.topk(min(k, sims.shape[1]), dim=1)
    return top, idx.gather(1, where)


def knn_scores(
    sims: torch.Tensor,
    neighbour_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float = 0.07,
    weighting: str = "dino",
) -> torch.Tensor:
    """Class scores (M, C) from the top-k neighbours: sum of exp(s/T) (dino) or votes (uniform).

    Missing neighbours (similarity -inf, from an approximate index) count for nothing.
    """
    sims = sims[:, :k].double()
    labels = neighbour_labels[:, :k].long()
    if weighting == "dino":
        weights = (sims / temperature).exp()
    elif weighting == "uniform":
        weights = torch.ones_like(sims)
    else:  # eval.knn.weighting's type allows only these two
        raise ValueError(f"weighting must be dino or uniform, got {weighting!r}")
    weights = torch.where(torch.isfinite(sims), weights, torch.zeros_like(weights))
    scores = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64, device=sims.device)
    scores.scatter_add_(1, labels.clamp_min(0), weights)
    return scores


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (M,) whether the true label is among the k highest scores (ties: lowest index)."""
    k = min(k, scores.shape[1])
    # A stable descending sort makes ties resolve to the lower class index, as argmax does.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return (order == labels.view(-1, 1).to(order.device)).any(dim=1)


def _auto_nlist(n: int) -> int:
    """About sqrt(n) lists, with at least 39 training points per list (FAISS's minimum)."""
    return max(1, min(round(math.sqrt(n)), n // 39))


def _auto_pq_m(dim: int) -> int:
    """The largest divisor of `dim` not above dim / 8 (8 dimensions per PQ byte)."""
    target = max(1, dim // 8)
    return next(m for m in range(target, 0, -1) if dim % m == 0)


class KnnClassifier:
    """A k-NN classifier over a fixed bank: built once, queried many times.

    `bank` is (N, D) features as a tensor, a numpy array or memmap, or any array-like with
    `.shape` and row slicing (a djepa_bench.shards.ShardedArray); it is read block by block.
    `index` is "exact" (default) or an approximate FAISS index ("ivf-flat", "ivf-pq";
    `refine` > 1 re-ranks k x refine PQ candidates by exact cosine read from the bank).
    Banks up to `resident_bytes` (float32) are normalised once and kept in memory; larger
    ones are read again, `block_rows` at a time (default: 256 MB blocks), at every search.
    """

    def __init__(
        self,
        bank: Any,
        bank_labels: torch.Tensor,
        num_classes: int,
        temperature: float = 0.07,
        weighting: str = "dino",
        backend: str = "auto",
        device: str | torch.device = "cpu",
        *,
        index: str = "exact",
        nlist: int = 0,
        nprobe: int = 16,
        pq_m: int = 0,
        refine: int = 1,
        seed: int = 0,
        block_rows: int | None = None,
        resident_bytes: int = _RESIDENT_BYTES,
    ):
        if len(bank.shape) != 2 or bank.shape[0] < 1:
            raise UserError(f"the kNN bank must hold (N, D) features, got {tuple(bank.shape)}")
        self.num_classes = num_classes
        self.temperature = temperature
        self.weighting = weighting
        self.size, self.dim = int(bank.shape[0]), int(bank.shape[1])
        self.device = torch.device(device)
        self.index_kind = index
        self.backend = resolve_backend(backend, self.device)
        if index != "exact" and self.backend != "faiss":
            if backend == "torch" or not faiss_available():
                raise UserError(
                    f"eval.knn.index={index} is a FAISS index; install faiss or use index=exact"
                    + (" (and not backend=torch)" if backend == "torch" else "")
                )
            self.backend = "faiss"
        self._bank = bank
        on_device = self.backend == "torch"
        self.labels = torch.as_tensor(bank_labels).long().to(self.device if on_device else "cpu")
        self.block_rows = block_rows or max(1, _BLOCK_BYTES // (4 * self.dim))
        self._resident: list[tuple[int, torch.Tensor]] | None = None
        if self.size * self.dim * 4 <= resident_bytes:
            self._resident = list(self._read_blocks())
        self._flat_gpu = None  # a GPU flat index reused for every block (faiss-gpu only)
        if self.backend == "faiss" and index == "exact" and faiss_gpus() > 0:
            import faiss

            self._flat_gpu = _faiss_on_gpus(faiss.IndexFlatIP(self.dim))
        self._ivf = None
        self.refine = max(1, int(refine)) if index == "ivf-pq" else 1
        self.params: dict[str, Any] = {}
        if index != "exact":
            self._ivf = self._build_ivf(index, nlist, nprobe, pq_m, seed)
            if index == "ivf-pq":
                self.params["refine"] = self.refine

    @classmethod
    def from_config(
        cls,
        bank: Any,
        bank_labels: torch.Tensor,
        num_classes: int,
        cfg: Any,
        device: str | torch.device = "cpu",
    ) -> KnnClassifier:
        """A classifier with an eval.knn section's settings (djepa_bench.config.KnnConfig)."""
        return cls(
            bank, bank_labels, num_classes, cfg.temperature, cfg.weighting, cfg.backend,
            device, index=cfg.index, nlist=cfg.nlist, nprobe=cfg.nprobe, pq_m=cfg.pq_m,
            refine=cfg.refine,
        )  # fmt: skip

    # --- the bank, block by block -------------------------------------------------------

    def _read_blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        where = self.device if self.backend == "torch" else torch.device("cpu")
        for start in range(0, self.size, self.block_rows):
            rows = self._bank[start : min(self.size, start + self.block_rows)]
            yield start, l2_normalise(_float_rows(rows)).to(where)

    def _blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        return iter(self._resident) if self._resident is not None else self._read_blocks()

    # --- search ---------------------------------------------------------------------------

    def k_used(self, k: int) -> int:
        """The k a search for `k` neighbours actually uses (capped at the bank size)."""
        return min(int(k), self.size)

    def _block_search(self, queries: torch.Tensor, block: torch.Tensor, k: int):
        if self.backend == "torch":
            chunk = max(1, _BLOCK_BYTES // (4 * block.shape[0]))
            sims, idx = [], []
            for start in range(0, queries.shape[0], chunk):
                s, i = (queries[start : start + chunk] @ block.T).topk(k, dim=1)
                sims.append(s)
                idx.append(i)
            return torch.cat(sims), torch.cat(idx)
        import faiss

        q, b = queries.numpy(), block.numpy()
        if self._flat_gpu is not None:
            index = self._flat_gpu[0]
            index.reset()
            index.add(b)
            sims, idx = index.search(q, k)
        else:
            sims, idx = faiss.knn(q, b, k, metric=faiss.METRIC_INNER_PRODUCT)
        return torch.from_numpy(sims), torch.from_numpy(idx).long()

    def exact_search(self, queries: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact cosine similarities and indices (M, k), streamed over the bank's blocks."""
        k = self.k_used(k)
        q = l2_normalise(_float_rows(queries))
        q = q.to(self.device) if self.backend == "torch" else q
        best = None
        for start, block in self._blocks():
            sims, idx = self._block_search(q, block, min(k, block.shape[0]))
            best = _merge(best, (sims, idx + start), k)
        return best

    def search(self, queries: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities and bank indices (M, k) of each query's k nearest bank rows.

        With an approximate index a query may get fewer than k neighbours: index -1,
        similarity -inf.
        """
        if self._ivf is None:
            return self.exact_search(queries, k)
        k = self.k_used(k)
        q = l2_normalise(_float_rows(queries))
        sims, idx = self._ivf.search(q.numpy(), min(self.size, k * self.refine))
        sims, idx = torch.from_numpy(sims), torch.from_numpy(idx).long()
        if self.refine > 1:
            return self._rerank(q, idx, k)
        return sims.masked_fill(idx < 0, -math.inf), idx

    def _rerank(self, q: torch.Tensor, candidates: torch.Tensor, k: int):
        """Exact cosines of the approximate candidates, read from the bank; the top k."""
        per = candidates.shape[1]
        rows = max(1, _BLOCK_BYTES // (4 * self.dim * per))
        sims, idx = [], []
        for lo in range(0, q.shape[0], rows):
            cand = candidates[lo : lo + rows]
            vectors = _float_rows(self._bank[cand.clamp_min(0).reshape(-1).numpy()])
            vectors = l2_normalise(vectors).view(cand.shape[0], per, self.dim)
            s = torch.einsum("md,mkd->mk", q[lo : lo + rows], vectors)
            s = s.masked_fill(cand < 0, -math.inf)
            top, where = s.topk(k, dim=1)
            sims.append(top)
            idx.append(cand.gather(1, where).masked_fill(~torch.isfinite(top), -1))
        return torch.cat(sims), torch.cat(idx)

    # --- classification -------------------------------------------------------------------

    def _query_rows(self, k: int) -> int:
        return max(1024, min(1 << 16, _RESULT_BYTES // (12 * max(1, k))))

    def _query_blocks(self, queries: Any, k: int) -> Iterator[tuple[int, Any]]:
        rows = self._query_rows(k)
        total = int(queries.shape[0])
        for start in range(0, total, rows):
            yield start, queries[start : min(total, start + rows)]

    def scores(self, queries: Any, ks: list[int]) -> dict[int, torch.Tensor]:
        """Class scores (M, C) per requested k, from one search (for query sets that fit)."""
        sims, idx = self.search(queries, max(ks))
        neighbours = self.labels.to(idx.device)[idx.clamp_min(0)]
        return {
            k: knn_scores(
                sims, neighbours, self.num_classes, self.k_used(k), self.temperature,
                self.weighting,
            )
            for k in ks
        }  # fmt: skip

    def predict(self, queries: Any, k: int = 20) -> torch.Tensor:
        """Predicted class (M,) at one k (ties: the lowest class index)."""
        return self.scores(queries, [k])[k].argmax(1).cpu()

    def accuracy(
        self, queries: Any, labels: torch.Tensor, ks: list[int], topk=(1, 5)
    ) -> dict[int, dict[int, float]]:
        """{k: {1: top-1 %, 5: top-5 %}} per requested k, one search per block of queries.

        Top-t counts min(t, k) classes (DINO). `queries` may be any (M, D) array-like.
        """
        labels = torch.as_tensor(labels).long()
        kmax = self.k_used(max(ks))
        hits = {k: dict.fromkeys(topk, 0) for k in ks}
        for start, block in self._query_blocks(queries, kmax):
            sims, idx = self.search(block, kmax)
            neighbours = self.labels.to(idx.device)[idx.clamp_min(0)]
            for lo in range(0, sims.shape[0], _SCORE_ROWS):
                part = slice(lo, lo + _SCORE_ROWS)
                truth = labels[start + lo : start + lo + sims[part].shape[0]]
                for k in ks:
                    used = self.k_used(k)
                    score = knn_scores(
                        sims[part], neighbours[part], self.num_classes, used, self.temperature,
                        self.weighting,
                    )  # fmt: skip
                    for t in topk:
                        hits[k][t] += int(topk_correct(score, truth, min(t, used)).sum())
        total = int(queries.shape[0])
        return {k: {t: 100.0 * hits[k][t] / total for t in topk} for k in ks}

    def recall(
        self, queries: Any, ks: list[int], sample: int = 1000, seed: int = 0
    ) -> dict[int, float]:
        """Recall@k of this index against exact search on a seeded sample of queries.

        Recall@k = |approximate top-k ∩ exact top-k| / k, averaged over the sampled
        queries; 1.0 for the exact index.
        """
        if self._ivf is None:
            return {k: 1.0 for k in ks}
        total = int(queries.shape[0])
        rows = np.sort(np.random.default_rng(seed).permutation(total)[: min(sample, total)])
        picked = queries[rows]
        kmax = self.k_used(max(ks))
        approx = self.search(picked, kmax)[1]
        exact = self.exact_search(picked, kmax)[1]
        out = {}
        for k in ks:
            used = self.k_used(k)
            a, e = approx[:, :used], exact[:, :used]
            found = (a.unsqueeze(2) == e.unsqueeze(1)).any(dim=2) & (a >= 0)
            out[k] = float(found.double().sum(dim=1).div(used).mean())
        return out

    # --- approximate index ----------------------------------------------------------------

    def _build_ivf(self, kind: str, nlist: int, nprobe: int, pq_m: int, seed: int):
        import faiss

        n, d = self.size, self.dim
        nlist = nlist or _auto_nlist(n)
        if nlist > n:
            raise UserError(f"eval.knn.nlist={nlist} is more than the {n} bank rows; lower it")
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf-flat":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            self.params = {"index": kind, "nlist": nlist, "nprobe": nprobe}
            train_rows = min(n, 64 * nlist)
        else:
            m = pq_m or _auto_pq_m(d)
            if d % m:
                raise UserError(f"eval.knn.pq_m={m} must divide the feature width {d}")
            if n < 256:
                raise UserError(f"eval.knn.index=ivf-pq needs >= 256 bank rows, has {n}; use exact")
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            self.params = {"index": kind, "nlist": nlist, "nprobe": nprobe, "pq_m": m}
            train_rows = min(n, max(64 * nlist, 256 * 64))
        index.cp.seed = seed
        rows = np.sort(np.random.default_rng(seed).permutation(n)[:train_rows])
        index.train(l2_normalise(_float_rows(self._bank[rows])).numpy())
        index, self._gpu_resources = _faiss_on_gpus(index)
        for _, block in self._blocks():
            index.add(block.numpy())
        space = faiss.GpuParameterSpace() if faiss_gpus() > 0 else faiss.ParameterSpace()
        space.set_index_parameter(index, "nprobe", nprobe)
        return index


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    cfg: Any = None,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy (0-100) of exact k-NN with the temperature, weighting and backend of
    `cfg` (an eval.knn section; None: its defaults, DINO weighting at T=0.07, backend auto).

    The training monitor's number: its bank is small, so the search is always exact.
    """
    if cfg is None:
        from djepa_bench.config import KnnConfig

        cfg = KnnConfig()
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    classifier = KnnClassifier(
        bank, bank_labels, num_classes, cfg.temperature, cfg.weighting, cfg.backend, device
    )
    return classifier.accuracy(queries, query_labels, [k], topk=(1,))[k][1]
