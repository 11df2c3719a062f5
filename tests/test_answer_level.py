"""evaluate.selection.level: the answer per frame or per video (lus_core.evaluation.answer_level)."""

from __future__ import annotations

import pandas as pd
import pytest

from lus_core.evaluation.answer_level import labels_are_per_video, resolve_level, video_answer


def test_labels_are_per_video_when_every_videos_frames_share_one_score():
    per_video = pd.DataFrame({"video": ["a", "a", "b", "b"], "label": [2, 2, 0, 0]})
    assert labels_are_per_video(per_video)
    assert not labels_are_per_video(per_video.assign(label=[2, 1, 0, 0]))


@pytest.mark.parametrize(("setting", "has_video", "per_video", "level"), [
    ("auto", True, True, "video"), ("auto", True, False, "frame"), ("auto", False, True, "frame"),
    ("frame", True, True, "frame"), ("video", True, False, "video"),
])
def test_resolve_level(setting, has_video, per_video, level):
    assert resolve_level(setting, has_video, per_video) == level


def test_resolve_level_refuses_video_without_video_scores():
    with pytest.raises(ValueError, match="video_model.enabled"):
        resolve_level("video", False, True)
    with pytest.raises(ValueError, match="must be one of"):
        resolve_level("patient", True, True)


def _row(how, val_qwk, qwk=0.1):
    return {"video_score": how, "val_qwk": val_qwk, "val_accuracy": 0.5, "qwk": qwk, "qwk_lo": qwk - 0.1,
            "qwk_hi": qwk + 0.1, "accuracy": 0.4, "accuracy_lo": 0.3, "accuracy_hi": 0.5, "n_test_videos": 9}


def test_video_answer_is_the_best_validation_video_qwk_of_any_backbone():
    level = {"a": [_row("max", 0.2), _row("mean", 0.35, qwk=0.9)],
             "b": [_row("max", float("nan")), _row("majority", 0.4, qwk=-0.2), _row("attention", 0.4)]}
    answer = video_answer(level)
    # b's majority: the best validation QWK (its later tie, attention, loses to the listed order);
    # the test scores play no part (a's mean has the best test QWK)
    assert (answer["backbone"], answer["video_score"], answer["validation_qwk"]) == ("b", "majority", 0.4)
    assert answer["test"]["qwk"] == {"estimate": -0.2, "lo": pytest.approx(-0.3), "hi": pytest.approx(-0.1)}
    # ties between backbones go to the first backbone
    assert video_answer({"a": [_row("max", 0.4)], "b": [_row("max", 0.4)]})["backbone"] == "a"
    assert video_answer({"a": [_row("max", None)], "b": [_row("mean", 0.1)]})["backbone"] == "b"
    with pytest.raises(ValueError, match="no video scores"):
        video_answer({})
