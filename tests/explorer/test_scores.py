"""Explorer scores on data whose answer is known: planted label errors, outliers and duplicates rank first."""

import numpy as np
import pytest

from simclr_core.errors import UserError
from simclr_core.explorer import scores
from simclr_core.explorer.neighbours import NeighbourIndex


@pytest.fixture
def planted():
    """6 well-separated classes of 50 points in 32-D; 6 labels flipped, 4 far outliers, 1 exact duplicate."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 32)) * 4
    truth = np.repeat(np.arange(6), 50)
    x = centres[truth] + rng.normal(size=(300, 32))
    labels = truth.copy()
    flipped = rng.choice(300, 6, replace=False)
    labels[flipped] = (truth[flipped] + 1 + rng.integers(0, 5, 6)) % 6  # always another class
    outliers = np.setdiff1d(np.arange(300), flipped)[:4]
    x[outliers] = rng.normal(size=(4, 32)) * 30  # far from every cluster and from each other
    dup_src, dup = 10 if 10 not in outliers else 11, 299
    x[dup] = x[dup_src]
    sims, rows = NeighbourIndex(x).graph(20)
    return dict(
        x=x, truth=truth, labels=labels, flipped=flipped, outliers=outliers, dup=(dup_src, dup), sims=sims, rows=rows
    )


def test_flipped_labels_rank_first_as_label_errors(planted):
    p = planted
    score = scores.label_error_score(p["sims"], p["rows"], p["labels"], 6, k=10)
    assert score.shape == (300,) and np.all((score >= -1) & (score <= 1))
    # (an outlier's few neighbours may all be of another class too: that is a fair flag, so leave them out here)
    typical = ~np.isin(np.arange(300), p["outliers"])
    top = scores.worst(score, len(p["flipped"]), keep=typical)
    assert set(top.tolist()) == set(p["flipped"].tolist())
    assert np.all(score[p["flipped"]] > 0.9)  # every neighbour votes for the true class


def test_knn_vote_predicts_the_true_class_of_flipped_images(planted):
    p = planted
    pred, conf = scores.knn_vote(p["sims"], p["rows"], p["labels"], 6, k=10)
    clean = np.setdiff1d(np.arange(300), np.concatenate([p["outliers"], p["flipped"]]))
    assert np.array_equal(pred[p["flipped"]], p["truth"][p["flipped"]])
    assert np.mean(pred[clean] == p["truth"][clean]) > 0.98
    assert conf.min() >= 0 and conf.max() <= 1 and np.median(conf[clean]) > 0.9


def test_outliers_rank_first(planted):
    p = planted
    out = scores.outlier_score(p["sims"], k=5)
    assert np.all((out >= 0) & (out <= 2))
    assert set(scores.worst(out, 4).tolist()) == set(p["outliers"].tolist())


def test_an_exact_duplicate_ranks_first(planted):
    dup = scores.duplicate_score(planted["sims"])
    assert set(scores.worst(dup, 2).tolist()) == set(planted["dup"])
    assert dup[planted["dup"][1]] == pytest.approx(1.0, abs=1e-5)


def test_unlabelled_images_get_no_label_error_and_abstain_from_votes(planted):
    p = planted
    labels = p["labels"].copy()
    labels[:50] = -1
    score = scores.label_error_score(p["sims"], p["rows"], labels, 6, k=10)
    assert np.isnan(score[:50]).all() and not np.isnan(score[50:]).any()
    assert not set(scores.worst(score, 300).tolist()) & set(range(50))  # NaN rows never listed
    pred, _ = scores.knn_vote(p["sims"], p["rows"], np.full(300, -1), 6, k=10)
    assert (pred == -1).all()  # nobody has a label to vote with


def test_worst_respects_the_filter_and_is_stable():
    s = np.array([0.5, 0.9, 0.9, 0.1, np.nan])
    assert scores.worst(s, 10).tolist() == [1, 2, 0, 3]
    assert scores.worst(s, 10, keep=np.array([1, 0, 1, 1, 1], bool)).tolist() == [2, 0, 3]
    assert scores.worst(s, 1).tolist() == [1]


def test_kmeans_finds_the_clusters(planted):
    clean = np.setdiff1d(np.arange(300), planted["outliers"])
    ids = scores.kmeans_clusters(planted["x"][clean], 6)
    truth = planted["truth"][clean]
    for c in range(6):  # each found cluster is (nearly) one true class
        members = truth[ids == c]
        assert np.bincount(members).max() / len(members) > 0.95


def test_bad_k():
    with pytest.raises(UserError, match="k-means needs"):
        scores.kmeans_clusters(np.zeros((3, 2)), 4)
    with pytest.raises(UserError, match="at least 1"):
        scores.knn_vote(np.zeros((3, 2)), np.zeros((3, 2), int), np.zeros(3, int), 1, k=0)
    with pytest.raises(UserError, match="at least 2 images"):
        scores.outlier_score(np.zeros((1, 0)))


def test_votes_match_a_hand_count():
    # row 0's neighbours: rows 1 (class 0) and 2 (class 1); row 1's: 0 and 2; row 2's: 0 (class 0) and 1
    sims = np.array([[0.9, 0.5], [0.9, 0.2], [0.5, 0.2]])
    rows = np.array([[1, 2], [0, 2], [0, 1]])
    labels = np.array([0, 0, 1])
    pred, conf = scores.knn_vote(sims, rows, labels, 2, k=2, temperature=1.0)
    w = np.exp(np.array([0.9, 0.5]) - 1)
    assert pred.tolist() == [0, 0, 0]
    assert conf[0] == pytest.approx(w[0] / w.sum())
    assert conf[2] == pytest.approx(1.0)  # both neighbours say class 0
    err = scores.label_error_score(sims, rows, labels, 2, k=2, temperature=1.0)
    assert err[2] == pytest.approx(1.0) and err[0] < 0


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_splits_get_scores_or_a_message(n):
    x = np.random.default_rng(n).standard_normal((n, 8))
    sims, rows = NeighbourIndex(x).graph(50)  # k larger than the split: clamped to n - 1
    labels = np.arange(n) % 2
    pred, conf = scores.knn_vote(sims, rows, labels, 2, k=20)
    assert pred.shape == conf.shape == (n,)
    err = scores.label_error_score(sims, rows, labels, 2, k=20)
    assert err.shape == (n,)
    if n == 1:
        assert pred[0] == -1 and err[0] == 0  # nobody to vote: neither agreement nor disagreement
        with pytest.raises(UserError, match="at least 2 images"):
            scores.outlier_score(sims, 10)
        with pytest.raises(UserError, match="at least 2 images"):
            scores.duplicate_score(sims)
    else:
        assert scores.outlier_score(sims, 10).shape == scores.duplicate_score(sims).shape == (n,)
    assert scores.kmeans_clusters(x, n).shape == (n,)
    with pytest.raises(UserError, match="k-means needs"):
        scores.kmeans_clusters(x, n + 1)
