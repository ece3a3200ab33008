"""The map's colouring and points table (ui.map_points), on plain arrays: no streamlit run needed."""

import numpy as np

from ui import mapview
from ui.map_points import BRIGHT, DIMMED, colour_points, highlighted, highlighted_rows, on_map, points_frame

CLASSES = ["cat", "dog", "owl"]
LABELS = np.array([0, 1, 2, 1])  # one label per split row
ROWS = np.arange(4)  # every row plotted
CAT, DOG, OWL = (tuple(int(v) for v in mapview.PALETTE[i]) for i in range(3))
DIM = tuple(mapview.DIM)
GREY = tuple(int(v) for v in mapview.GREY)


def rgb(c) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in px) for px in c.rgb]


def test_a_class_highlight_dims_the_others_and_keeps_the_class_colours():
    keep = highlighted(LABELS, CLASSES, ["dog"], {}, [])
    assert keep.tolist() == [False, True, False, True]
    c = colour_points("class", LABELS[ROWS], CLASSES, {}, ROWS, shown=keep[ROWS])
    assert rgb(c) == [DIM, DOG, DIM, DOG]
    assert c.alpha.dtype == np.uint8 and c.alpha.tolist() == [DIMMED, BRIGHT, DIMMED, BRIGHT] == [40, 220, 40, 220]
    assert c.legend.names == ("cat", "dog", "owl") and c.legend.ids == (0, 1, 2)  # every class, dimmed or not
    assert c.legend.bar is None and c.legend.wrong is None


def test_no_highlight_keeps_every_point_bright():
    keep = highlighted(LABELS, CLASSES, [], {}, [])
    assert keep.all() and highlighted_rows(keep) == []
    c = colour_points("class", LABELS, CLASSES, {}, ROWS, shown=keep)
    assert rgb(c) == [CAT, DOG, OWL, DOG] and set(c.alpha.tolist()) == {220}


def test_classes_and_tags_highlight_together_and_tags_colour_by_the_newest():
    tags = {"a": [0, 1], "b": [1, 3]}
    keep = highlighted(LABELS, CLASSES, ["dog", "owl"], tags, ["a"])
    assert highlighted_rows(keep) == [1]  # a dog or an owl, and tagged "a"
    c = colour_points("tag", LABELS, CLASSES, {}, ROWS, tags=tags)
    # row 1 is in both tags: the newer, "b", colours it; row 2 has none (grey)
    assert rgb(c) == [CAT, DOG, GREY, DOG]
    assert c.legend.names == ("a", "b", "no tag") and c.legend.ids == (0, 1, -1)


def test_knn_right_wrong_and_the_share_wrong():
    s = {"pred": np.array([0, 2, 2, 1])}
    c = colour_points("correct", LABELS, CLASSES, s, ROWS)
    right, wrong = tuple(int(v) for v in mapview.RIGHT), tuple(int(v) for v in mapview.WRONG)
    assert rgb(c) == [right, wrong, right, right]
    assert c.legend.wrong == 0.25 and c.legend.names is None


def test_a_plotted_subset_reads_the_scores_by_split_row():
    s = {"confidence": np.array([0.5, 0.0, 0.5, 1.0])}
    rows = np.array([1, 3])
    c = colour_points("confidence", LABELS[rows], CLASSES, s, rows, shown=np.array([True, False]))
    assert rgb(c) == [(68, 1, 84), DIM]  # confidence 0: the scale's first colour; the other dimmed
    assert c.legend.bar == ("share of the kNN vote", 0.0, 1.0)
    pred = colour_points("pred", LABELS[rows], CLASSES, {"pred": np.array([2, 2, 0, 0])}, rows)
    assert rgb(pred) == [OWL, CAT] and pred.legend.names == ("cat", "owl")


def test_clusters_and_unlabelled_points():
    c = colour_points("cluster", LABELS, CLASSES, {}, ROWS, clusters=np.array([1, 1, 0, 1]))
    assert rgb(c) == [DOG, DOG, CAT, DOG] and c.legend.names == ("cluster 0", "cluster 1")
    unlabelled = colour_points("class", np.array([-1, 0]), CLASSES, {}, np.arange(2))
    assert rgb(unlabelled) == [GREY, CAT] and unlabelled.legend.names == ("unlabelled", "cat")


def test_the_points_table_of_both_views():
    coords = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    c = colour_points("class", np.array([0, 1]), CLASSES, {}, np.array([7, 9]), shown=np.array([True, False]))
    df = points_frame(coords, c.rgb, np.array([7, 9]), ["cat", "dog"], c.alpha, dims=3)
    assert list(df.columns) == ["x", "y", "r", "g", "b", "a", "row", "label", "z"]
    assert df.iloc[1].tolist() == [3.0, 4.0, *DIM, 40, 9, "dog", 5.0]
    assert df.iloc[0][["r", "g", "b", "a"]].tolist() == [*CAT, 220]
    plain = points_frame(coords[:, :2], c.rgb, [7, 9], ["cat", "dog"])  # over training: no alpha, 2-D
    assert list(plain.columns) == ["x", "y", "r", "g", "b", "row", "label"]


def test_rings_mark_only_the_plotted_rows():
    rows, coords = np.array([2, 5, 8]), np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    assert on_map(rows, coords, [8, 3, 2], dims=2).values.tolist() == [[2.0, 2.0], [0.0, 0.0]]
    assert on_map(rows, coords, [], dims=2).empty
