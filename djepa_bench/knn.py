"""Weighted k-NN classification on L2-normalised features: FAISS search, torch fallback.

Shared by the kNN protocol and the trainer's per-epoch monitor.
"""

from __future__ import annotations

import numpy as np
import torch

from djepa_bench.errors import UserError

_SEARCH_CHUNK = 4096


def faiss_available() -> bool:
    """True when the `faiss` module (faiss-cpu or faiss-gpu) imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def l2_normalise(features: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm, in float32."""
    features = features.float()
    return features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _faiss_index(bank: np.ndarray):
    """An exact inner-product FAISS index holding `bank`, sharded over GPUs when faiss has them."""
    import faiss

    index = faiss.IndexFlatIP(bank.shape[1])
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:
        # Shard the bank across every visible GPU.
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index = faiss.index_cpu_to_all_gpus(index, co=options)
    index.add(bank)
    return index


def _faiss_search(bank: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return _faiss_index(bank).search(queries, k)


def _torch_search(
    bank: torch.Tensor, queries: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    sims, idx = [], []
    for start in range(0, queries.shape[0], _SEARCH_CHUNK):
        s, i = (queries[start : start + _SEARCH_CHUNK] @ bank.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def knn_search(
    bank: torch.Tensor, queries: torch.Tensor, k: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities and indices (M, k) of each query's k nearest bank rows.

    `backend` is "faiss", "torch" or "auto" (FAISS when it imports). Inputs are
    L2-normalised here, so callers pass raw features.
    """
    k = min(k, bank.shape[0])
    bank = l2_normalise(bank)
    queries = l2_normalise(queries)
    use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
    if use_faiss:
        sims, idx = _faiss_search(
            np.ascontiguousarray(bank.cpu().numpy()), np.ascontiguousarray(queries.cpu().numpy()), k
        )
        return torch.from_numpy(sims), torch.from_numpy(idx).long()
    return _torch_search(bank, queries.to(bank.device), k)


def knn_scores(
    sims: torch.Tensor,
    neighbour_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float = 0.07,
    weighting: str = "dino",
) -> torch.Tensor:
    """Class scores (M, C) from the top-k neighbours: sum of exp(s/T) (dino) or votes (uniform)."""
    sims = sims[:, :k].double()
    labels = neighbour_labels[:, :k].long()
    if weighting == "dino":
        weights = (sims / temperature).exp()
    elif weighting == "uniform":
        weights = torch.ones_like(sims)
    else:
        raise ValueError(f"unknown kNN weighting '{weighting}' (use dino or uniform)")
    scores = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64, device=sims.device)
    scores.scatter_add_(1, labels, weights)
    return scores


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (M,) whether the true label is among the k highest scores (ties: lowest index)."""
    k = min(k, scores.shape[1])
    # A stable descending sort makes ties resolve to the lower class index, as argmax does.
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return (order == labels.view(-1, 1).to(order.device)).any(dim=1)


def knn_classify(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    ks: list[int],
    num_classes: int,
    temperature: float = 0.07,
    weighting: str = "dino",
    backend: str = "auto",
) -> dict[int, torch.Tensor]:
    """Class scores per k for every query, from one search at max(ks)."""
    sims, idx = knn_search(bank, queries, max(ks), backend)
    neighbour_labels = bank_labels.to(idx.device)[idx]
    return {
        k: knn_scores(sims, neighbour_labels, num_classes, k, temperature, weighting) for k in ks
    }


def knn_accuracy(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy (0-100) of DINO-weighted k-NN; a quick monitor for training."""
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    scores = knn_classify(bank, bank_labels, queries, [k], num_classes, temperature)[k]
    return 100.0 * topk_correct(scores, query_labels, 1).double().mean().item()


def _use_faiss(backend: str, device: torch.device) -> bool:
    if backend == "faiss":
        if not faiss_available():
            raise UserError("eval.knn.backend=faiss but faiss is not installed; use auto or torch")
        return True
    if backend == "torch":
        return False
    if backend != "auto":
        raise UserError(f"unknown eval.knn.backend '{backend}'; use auto, faiss or torch")
    if not faiss_available():
        return False
    import faiss

    # A GPU without faiss-gpu: torch matmul on the GPU beats a CPU FAISS index.
    has_faiss_gpu = hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0
    return has_faiss_gpu or device.type != "cuda"


class KnnClassifier:
    """A k-NN classifier over a fixed bank: the index is built once, queried many times.

    Used by the kNN protocol and reused by others (robustness scores corrupted test sets
    against the same clean bank). Scores follow `knn_scores` (DINO weighting by default).
    """

    def __init__(
        self,
        bank: torch.Tensor,
        bank_labels: torch.Tensor,
        num_classes: int,
        temperature: float = 0.07,
        weighting: str = "dino",
        backend: str = "auto",
        device: str | torch.device = "cpu",
    ):
        if weighting not in ("dino", "uniform"):
            raise UserError(f"unknown eval.knn.weighting '{weighting}'; use dino or uniform")
        self.num_classes = num_classes
        self.temperature = temperature
        self.weighting = weighting
        self.size = int(bank.shape[0])
        self.device = torch.device(device)
        self.use_faiss = _use_faiss(backend, self.device)
        normed = l2_normalise(bank)
        if self.use_faiss:
            self._index = _faiss_index(np.ascontiguousarray(normed.cpu().numpy()))
            self._bank = None
            self.labels = bank_labels.long().cpu()
        else:
            self._index = None
            self._bank = normed.to(self.device)
            self.labels = bank_labels.long().to(self.device)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine similarities and bank indices (M, k) of each query's k nearest bank rows."""
        k = min(k, self.size)
        queries = l2_normalise(queries)
        if self._index is not None:
            sims, idx = self._index.search(np.ascontiguousarray(queries.cpu().numpy()), k)
            return torch.from_numpy(sims), torch.from_numpy(idx).long()
        return _torch_search(self._bank, queries.to(self.device), k)

    def scores(self, queries: torch.Tensor, ks: list[int]) -> dict[int, torch.Tensor]:
        """Class scores (M, C) per k, from one search at max(ks)."""
        sims, idx = self.search(queries, max(ks))
        neighbour_labels = self.labels.to(idx.device)[idx]
        return {
            k: knn_scores(
                sims, neighbour_labels, self.num_classes, k, self.temperature, self.weighting
            )
            for k in ks
        }

    def predict(self, queries: torch.Tensor, k: int = 20) -> torch.Tensor:
        """Predicted class (M,) at one k (ties: the lowest class index)."""
        return self.scores(queries, [k])[k].argmax(1).cpu()

    def accuracy(
        self, queries: torch.Tensor, labels: torch.Tensor, ks: list[int], topk=(1, 5)
    ) -> dict[int, dict[int, float]]:
        """{k: {1: top-1 %, 5: top-5 %}} for each k, from one search."""
        out = {}
        for k, scores in self.scores(queries, ks).items():
            out[k] = {
                t: 100.0 * topk_correct(scores, labels, t).double().mean().item() for t in topk
            }
        return out
