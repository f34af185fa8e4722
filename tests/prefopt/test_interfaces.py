"""The core's records and contracts: columns that agree, pairs as indices, a backbone's media-size rules."""

import numpy as np
import pytest

from prefopt.interfaces import ABILITIES, MEASURE_METHODS, Backbone, PairIndices, ScoredItems


def test_scored_items_columns_must_agree_and_subsets_keep_them_aligned():
    items = ScoredItems(ids=np.array(["a", "b", "c"], object), sources=np.array(["x", "y", "x"], object),
                        prompts=np.array(["p", "q", "r"], object), scores={"r": np.array([1.0, 2.0, 3.0])})
    subset = items.subset(items.sources == "x")
    assert list(subset.ids) == ["a", "c"] and list(subset.scores["r"]) == [1.0, 3.0]
    with pytest.raises(ValueError, match="column `r` has 2 entries, expected 3"):
        ScoredItems(ids=items.ids, sources=items.sources, prompts=items.prompts, scores={"r": np.zeros(2)})


def test_pair_indices_take_and_empty():
    pairs = PairIndices(np.array([0, 1, 2]), np.array([3, 4, 5]), np.array([1.0, 0.5, 2.0]))
    kept = pairs.take(np.array([True, False, True]))
    assert list(kept.winners) == [0, 2] and list(kept.weights) == [1.0, 2.0] and len(PairIndices.empty()) == 0


def test_a_video_backbone_takes_its_frame_multiple_plus_one(make_backbone_class):
    backbone = make_backbone_class("v")
    backbone.frame_multiple, backbone.media = 4, "video"
    Backbone.check_media_size(backbone, 9, 32, 32)
    with pytest.raises(ValueError, match=r"takes 4·k \+ 1 frames \(e.g. 17\), got 8"):
        Backbone.check_media_size(backbone, 8, 32, 32)


def test_every_kind_lists_its_abilities_and_every_measure_its_methods():
    assert set(ABILITIES) == {"rewards", "pair_selectors", "backbones", "recipes"}
    assert MEASURE_METHODS["face_embedding"] == ("embed_largest_face", "similarity", "reference_embedding")
