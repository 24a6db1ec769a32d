"""The kNN probe: k = 200, cosine similarity, votes weighted by exp(sim / 0.1) (InstDisc / SimCLR monitor)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from mimcli.probe.records import Summary
from mimcli.probe.stats import summary

KNN_K = 200
KNN_TEMPERATURE = 0.1


def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    n_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 512,
) -> Tensor:
    """Weighted kNN: the k most cosine-similar train items vote with weight exp(sim / temperature)."""
    train = F.normalize(train_x.float(), dim=1)
    k = min(k, train.shape[0])
    predictions = []
    for block in torch.split(F.normalize(test_x.float(), dim=1), chunk):
        similarity, index = (block @ train.T).topk(k, dim=1)
        votes = torch.zeros(block.shape[0], n_classes, device=block.device)
        votes.scatter_add_(1, train_y[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_probe(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, n_classes: int | None = None
) -> dict[str, Summary]:
    n_classes = n_classes or int(max(train_y.max(), test_y.max())) + 1
    predictions = knn_predict(train_x, train_y, test_x, n_classes)
    return {"acc": summary([(predictions == test_y).float().mean().item() * 100])}
