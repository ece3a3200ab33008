"""Tests for simclr_core.evaluation.classifiers: kNN classifier, top-k accuracy, linear probe, confusion matrix."""

from __future__ import annotations

import math

import pytest
import torch

from simclr_core.errors import UserError
from simclr_core.evaluation.classifiers import (
    confusion_matrix,
    knn_accuracy,
    knn_predict,
    linear_probe,
    topk_accuracy,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _clusters(n_per_class: int, num_classes: int, dim: int, seed: int, spread: float = 1.0, noise_seed: int = 0):
    """Gaussian clusters around random centres (fixed by seed; nearly orthogonal in high dim)."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)) * 4.0
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    noise = torch.randn(len(y), dim, generator=torch.Generator().manual_seed(1000 + noise_seed))
    return centres[y] + spread * noise, y


def _naive_knn(query, bank, labels, num_classes, k, t):
    """One query at a time: sort cosine similarities, keep the top k, sum exp(sim/T) per label."""
    bank = bank / bank.norm(dim=1, keepdim=True)
    out = torch.zeros(len(query), num_classes, dtype=torch.float64)
    for i, q in enumerate(query):
        sims = (bank @ (q / q.norm())).tolist()
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        for j in order:
            out[i, int(labels[j])] += torch.tensor(sims[j] / t, dtype=torch.float64).exp()
    return out


@pytest.mark.parametrize("q,n,c,k,chunk", [(7, 30, 4, 5, 3), (5, 12, 3, 50, 2), (9, 40, 6, 40, 1024)])
def test_knn_predict_matches_naive(q, n, c, k, chunk):
    g = torch.Generator().manual_seed(q * 100 + n)
    query = torch.randn(q, 8, generator=g, dtype=torch.float64)
    bank = torch.randn(n, 8, generator=g, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=g)
    scores = knn_predict(query, bank, labels, c, k=k, temperature=0.2, chunk_size=chunk)
    assert scores.shape == (q, c)
    torch.testing.assert_close(scores, _naive_knn(query, bank, labels, c, k, 0.2))


def test_knn_predict_float32_and_validation():
    bank, labels = torch.randn(10, 4), torch.randint(0, 3, (10,))
    assert knn_predict(torch.randn(2, 4).half(), bank, labels, 3).dtype == torch.float32
    with pytest.raises(ValueError):
        knn_predict(torch.randn(0, 4), bank, labels, 3)
    with pytest.raises(ValueError):
        knn_predict(torch.randn(2, 5), bank, labels, 3)
    with pytest.raises(ValueError):
        knn_predict(torch.randn(2, 4), bank, labels[:9], 3)
    with pytest.raises(ValueError):
        knn_predict(torch.randn(2, 4), bank, labels, 2 if labels.max() == 2 else 1)


def test_knn_accuracy_separated_clusters_is_perfect():
    bank, bank_y = _clusters(30, 5, 32, seed=0, spread=0.5)  # 150 rows < default k=200: clamped
    query, query_y = _clusters(10, 5, 32, seed=0, spread=0.5, noise_seed=1)
    acc = knn_accuracy(bank, bank_y, query, query_y)
    assert acc == {"knn_top1": 100.0, "knn_top5": 100.0}


def test_knn_accuracy_random_labels_is_chance():
    g = torch.Generator().manual_seed(1)
    bank, query = torch.randn(600, 16, generator=g), torch.randn(600, 16, generator=g)
    bank_y, query_y = torch.randint(0, 10, (600,), generator=g), torch.randint(0, 10, (600,), generator=g)
    acc = knn_accuracy(bank, bank_y, query, query_y, k=50)
    assert 4.0 <= acc["knn_top1"] <= 17.0
    assert 40.0 <= acc["knn_top5"] <= 60.0


def test_knn_accuracy_drops_unlabelled_and_rejects_unlabelled_splits():
    bank, bank_y = _clusters(20, 3, 16, seed=2, spread=0.3)
    query, query_y = _clusters(5, 3, 16, seed=2, spread=0.3, noise_seed=1)
    # A -1 bank row would be an invalid class and a -1 query row could never be right: both must go.
    noisy_bank, noisy_y = torch.cat([bank, query[:5]]), torch.cat([bank_y, torch.full((5,), -1)])
    noisy_query, noisy_qy = torch.cat([query, bank[:4]]), torch.cat([query_y, torch.full((4,), -1)])
    assert knn_accuracy(noisy_bank, noisy_y, noisy_query, noisy_qy, k=5)["knn_top1"] == 100.0
    with pytest.raises(UserError, match="has no labels"):
        knn_accuracy(bank, torch.full_like(bank_y, -1), query, query_y)
    with pytest.raises(UserError, match="has no labels"):
        knn_accuracy(bank, bank_y, query, torch.full_like(query_y, -1))
    with pytest.raises(ValueError):
        knn_accuracy(bank, bank_y[:-1], query, query_y)


def test_topk_accuracy_known_answer_and_clamping():
    scores = torch.tensor(
        [
            [0.9, 0.05, 0.03, 0.02],  # label 0: top1 hit
            [0.1, 0.2, 0.6, 0.1],  # label 1: second -> top2 hit
            [0.5, 0.3, 0.1, 0.05],  # label 3: last -> only k >= 4
            [0.2, 0.1, 0.3, 0.4],
        ]
    )  # label 2: second
    labels = torch.tensor([0, 1, 3, 2])
    assert topk_accuracy(scores, labels, (1, 2, 3)) == {1: 0.25, 2: 0.75, 3: 0.75}
    assert topk_accuracy(scores, labels, (4, 10)) == {4: 1.0, 10: 1.0}  # 10 clamped to 4 classes
    with pytest.raises(ValueError):
        topk_accuracy(scores, labels[:3])


def test_linear_probe_separable_and_deterministic():
    train_x, train_y = _clusters(30, 10, 64, seed=3)
    test_x, test_y = _clusters(10, 10, 64, seed=3, noise_seed=1)
    kwargs = dict(epochs=20, batch_size=64, seed=7)
    res = linear_probe(train_x, train_y, test_x, test_y, **kwargs)
    assert set(res) == {"probe_top1", "probe_top5", "probe_train_top1"}
    assert res["probe_top1"] >= 95.0 and res["probe_train_top1"] >= 95.0
    assert res["probe_top5"] >= res["probe_top1"]
    assert linear_probe(train_x, train_y, test_x, test_y, **kwargs) == res
    # Unlabelled rows with wild features: if kept they would shift the mean/std and the shuffle.
    bad = torch.full((7, 64), 1e3)
    res_noisy = linear_probe(
        torch.cat([train_x, bad]),
        torch.cat([train_y, torch.full((7,), -1)]),
        torch.cat([test_x, bad[:3]]),
        torch.cat([test_y, torch.full((3,), -1)]),
        **kwargs,
    )
    assert res_noisy == res
    # Callers embed under inference mode; the probe must still be able to train.
    with torch.inference_mode():
        inf = linear_probe(train_x.clone(), train_y.clone(), test_x.clone(), test_y.clone(), **kwargs)
    assert inf == res


def test_linear_probe_reports_every_epoch_without_changing_its_result():
    train_x, train_y = _clusters(30, 10, 64, seed=3)
    test_x, test_y = _clusters(10, 10, 64, seed=3, noise_seed=1)
    kwargs = dict(epochs=12, batch_size=64, seed=7)
    calls = []
    res = linear_probe(train_x, train_y, test_x, test_y, progress=lambda *a: calls.append(a), **kwargs)
    assert [(done, total) for done, total, _ in calls] == [(e, 12) for e in range(1, 13)]  # once per epoch, in order
    losses = [loss for _, _, loss in calls]
    assert all(math.isfinite(v) and v >= 0 for v in losses) and losses[-1] < losses[0] / 2  # the mean train loss
    assert res == linear_probe(train_x, train_y, test_x, test_y, **kwargs)


def test_linear_probe_errors():
    x, y = _clusters(5, 2, 8, seed=6)
    with pytest.raises(UserError, match="has no labels"):
        linear_probe(x, torch.full_like(y, -1), x, y, epochs=1)
    with pytest.raises(UserError, match="has no labels"):
        linear_probe(x, y, x, torch.full_like(y, -1), epochs=1)
    with pytest.raises(ValueError):
        linear_probe(x, y[:-1], x, y, epochs=1)
    with pytest.raises(ValueError):
        linear_probe(x[:0], y[:0], x, y, epochs=1)


def test_confusion_matrix_matches_loop():
    g = torch.Generator().manual_seed(8)
    labels, pred = torch.randint(0, 4, (50,), generator=g), torch.randint(0, 4, (50,), generator=g)
    cm = confusion_matrix(pred, labels, 4)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in zip(labels.tolist(), pred.tolist(), strict=True):
        expected[t, p] += 1
    assert cm.dtype == torch.int64 and int(cm.sum()) == 50
    assert torch.equal(cm, expected)
    with pytest.raises(ValueError):
        confusion_matrix(pred, labels[:-1], 4)
    with pytest.raises(ValueError):
        confusion_matrix(pred, labels, 3 if labels.max() == 3 and pred.max() == 3 else 1)


@CUDA
def test_cuda_and_mixed_devices():
    bank, bank_y = _clusters(20, 3, 16, seed=9, spread=0.3)
    query, query_y = _clusters(5, 3, 16, seed=9, spread=0.3, noise_seed=1)
    cpu = knn_predict(query, bank, bank_y, 3, k=10)
    gpu = knn_predict(query, bank.cuda(), bank_y, 3, k=10)  # query and labels on CPU, bank on GPU
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu)
    assert knn_accuracy(bank.cuda(), bank_y.cuda(), query, query_y, k=10)["knn_top1"] == 100.0
    res = linear_probe(bank.cuda(), bank_y.cuda(), query, query_y, epochs=5, batch_size=16)
    assert res["probe_top1"] >= 95.0
    cm = confusion_matrix(query_y, query_y.cuda(), 3)
    assert cm.is_cuda and int(cm.trace()) == len(query_y)
