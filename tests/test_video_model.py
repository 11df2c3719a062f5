"""The learned video-level score: attention pooling, out-of-fold honesty, confident-mean aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lus_core.metrics import aggregate_by_group
from lus_core.videolevel import model as model_module
from lus_core.videolevel.model import (
    AttentionMIL,
    VideoBags,
    VideoModel,
    fit_video_model,
    frame_features,
    frame_motion,
    pad_bags,
    score_videos,
)
from lus_core.videolevel.table import confident_mean

torch.set_num_threads(1)
CFG = {"hidden": 16, "epochs": 200, "lr": 0.02, "weight_decay": 0.0, "loss": "ce", "sord_alpha": 1.0,
       "confident_fraction": 0.5, "dropout": 0.0, "early_stopping": False, "motion": False}


def test_padding_and_frame_order_do_not_change_the_score():
    torch.manual_seed(0)
    net = AttentionMIL(4, 3, hidden=8).eval()
    bag = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    x, mask = pad_bags([bag])
    padded = torch.cat([x, torch.full((1, 3, 4), 99.0)], dim=1)  # garbage in masked positions
    pmask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)], dim=1)
    shuffled, _ = pad_bags([bag[::-1].copy()])
    with torch.no_grad():
        a, b, c = net(x, mask), net(padded, pmask), net(shuffled, mask)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def _witness_videos(rng, n_videos, n_frames=12):
    """Video class = the class of its few (2) 'witness' frames; the other frames look like class 0.

    The mean of the frame scores is pulled to 0, the attention can find the witnesses."""
    bags, labels = [], []
    for _ in range(n_videos):
        y = int(rng.integers(0, 3))
        soft = np.tile([0.8, 0.1, 0.1], (n_frames, 1)) + rng.normal(0, 0.03, (n_frames, 3))
        witness = rng.choice(n_frames, 2, replace=False)
        soft[witness] = np.eye(3)[y] * 0.8 + 0.1 + rng.normal(0, 0.03, (2, 3))
        bags.append(soft.astype(np.float32))
        labels.append(y)
    return bags, np.array(labels)


def test_attention_learns_what_the_mean_of_frame_scores_misses():
    rng = np.random.default_rng(1)
    train_bags, train_y = _witness_videos(rng, 90)
    test_bags, test_y = _witness_videos(rng, 60)
    model, _ = fit_video_model(train_bags, train_y, 3, CFG, seed=0)
    att = model.predict_proba(test_bags).argmax(1)
    mean = np.array([aggregate_by_group(b.argmax(1), np.zeros(len(b), int), 1, "mean", 3)[0] for b in test_bags])
    assert (att == test_y).mean() >= 0.9
    assert (mean == test_y).mean() < 0.6
    # deterministic in its seed
    again = fit_video_model(train_bags, train_y, 3, CFG, seed=0)[0].predict_proba(test_bags)
    np.testing.assert_array_equal(model.predict_proba(test_bags), again)


def test_saved_model_scores_the_same(tmp_path):
    rng = np.random.default_rng(2)
    bags, y = _witness_videos(rng, 20)
    model, _ = fit_video_model(bags, y, 3, CFG, seed=0)
    model.save(tmp_path / "v.pt", {"input": "softmax"})
    loaded, meta = VideoModel.load(tmp_path / "v.pt")
    assert meta["input"] == "softmax"
    np.testing.assert_allclose(loaded.predict_proba(bags), model.predict_proba(bags), rtol=1e-6)


def _cohort(rng, n_patients=12, videos_per_patient=3, n_frames=6):
    """Frame rows of a small cohort: patients P00.. (the first 3 test), frames' softmax noisy."""
    video, patient, split, label, soft = [], [], [], [], []
    for p in range(n_patients):
        for v in range(videos_per_patient):
            y = int(rng.integers(0, 3))
            s = np.eye(3)[y] * 0.5 + rng.dirichlet(np.ones(3), n_frames) * 0.5
            video += [f"P{p:02d}_v{v}"] * n_frames
            patient += [f"P{p:02d}"] * n_frames
            split += ["test" if p < 3 else "train"] * n_frames
            label += [y] * n_frames
            soft.append(s)
    soft = np.concatenate(soft).astype(np.float32)
    train_patients = [f"P{p:02d}" for p in range(3, n_patients)]
    folds = [{"fold": f, "val_patients": train_patients[f::3]} for f in range(3)]
    return dict(video=video, patient=patient, split=split, label=np.array(label), softmax=soft), {"folds": folds}


def _table(frames, split):
    bags = VideoBags.from_frames(frames["video"], frames["patient"], frames["split"], frames["label"],
                                 frames["softmax"], frames["softmax"])
    return score_videos(bags, split, 3, {**CFG, "epochs": 60}, seed=0)[0].set_index("video")


def test_training_videos_are_scored_out_of_fold_and_test_videos_never_train():
    frames, split = _cohort(np.random.default_rng(3))
    base = _table(frames, split)
    assert set(base.loc[base["split"] == "test", "fold"]) == {-1}
    assert set(base.loc[base["split"] == "train", "fold"]) == {0, 1, 2}
    probs = [f"p_{c}" for c in range(3)]

    # new labels for fold 0's videos: fold 0's own scores cannot move (its model never saw them)
    fold0 = {p for f in split["folds"] if f["fold"] == 0 for p in f["val_patients"]}
    relabelled = {**frames, "label": frames["label"].copy()}
    rows = np.isin(frames["patient"], list(fold0))
    relabelled["label"][rows] = (relabelled["label"][rows] + 1) % 3
    changed = _table(relabelled, split)
    in_fold0 = base["patient"].isin(fold0)
    np.testing.assert_array_equal(changed.loc[in_fold0, probs], base.loc[in_fold0, probs])
    assert not np.allclose(changed.loc[~in_fold0 & (base["split"] == "train"), probs],
                           base.loc[~in_fold0 & (base["split"] == "train"), probs])

    # anything about test videos (labels, frame scores) leaves every training video's score alone
    shuffled = {**frames, "label": frames["label"].copy(), "softmax": frames["softmax"].copy()}
    test_rows = np.asarray(frames["split"]) == "test"
    shuffled["label"][test_rows] = 2 - shuffled["label"][test_rows]
    shuffled["softmax"][test_rows] = shuffled["softmax"][test_rows][:, ::-1]
    after = _table(shuffled, split)
    train = base["split"] == "train"
    np.testing.assert_array_equal(after.loc[train, probs], base.loc[train, probs])


def test_confident_mean_against_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(1, 15))
        classes = rng.integers(0, 4, n)
        conf = rng.choice([0.3, 0.5, 0.7, 0.9], n)  # ties on purpose
        fraction = float(rng.choice([0.1, 0.5, 1.0]))
        keep = max(1, int(np.ceil(fraction * n)))
        # brute force: walk frames from the most confident, earlier frames first among equals
        chosen = sorted(range(n), key=lambda i: (-conf[i], i))[:keep]
        expected = int(np.floor(np.mean(classes[chosen]) + 0.5))
        assert confident_mean(classes, conf, fraction) == expected
    assert confident_mean(np.array([0, 3, 3]), np.array([0.2, 0.9, 0.8]), 1.0) == 2  # all frames: the mean
    with pytest.raises(ValueError, match="confident_fraction"):
        confident_mean(np.array([1]), np.array([0.5]), 0.0)


def test_a_video_split_across_train_and_test_is_refused():
    frames, _ = _cohort(np.random.default_rng(5), n_patients=4)
    frames["split"] = list(frames["split"])
    frames["split"][0] = "train"  # P00 is a test patient: its first frame now claims train
    with pytest.raises(ValueError, match="both train and test"):
        VideoBags.from_frames(frames["video"], frames["patient"], frames["split"], frames["label"],
                              frames["softmax"], frames["softmax"])


def test_frame_motion_against_a_loop_by_hand():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(7, 4))
    video = np.array(["a", "a", "a", "b", "b", "c", "c"])
    got = frame_motion(emb, video)[:, 0]
    expected = [0.0 if i == 0 or video[i] != video[i - 1] else float(np.sqrt(((emb[i] - emb[i - 1]) ** 2).mean()))
                for i in range(len(emb))]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(frame_motion(emb[:3])[:, 0], expected[:3], rtol=1e-6)  # one video
    cfg = {"input": "softmax", "use_findings": False, "motion": True}
    feats = frame_features(np.full((7, 3), 1 / 3), emb, np.zeros((7, 0)), cfg, video)
    assert feats.shape == (7, 4) and np.allclose(feats[:, 3], expected, atol=1e-6)


def _moving_videos(rng, n_videos, n_frames=8):
    """Every frame's softmax and embedding level look alike; the class is how much the embedding
    moves from frame to frame (a still, a slow and a fast video)."""
    softmax, embedding, video, labels = [], [], [], []
    for v in range(n_videos):
        y = int(rng.integers(0, 3))
        embedding.append(rng.normal(0, 1, (1, 6)) + np.cumsum(rng.normal(0, 0.05 + 0.6 * y, (n_frames, 6)), axis=0) * 0.3)
        softmax.append(np.tile([1 / 3] * 3, (n_frames, 1)) + rng.normal(0, 0.01, (n_frames, 3)))
        video += [f"v{v}"] * n_frames
        labels.append(y)
    return np.concatenate(softmax), np.concatenate(embedding), np.array(video), np.array(labels)


def test_motion_lets_the_video_model_see_what_moves():
    rng = np.random.default_rng(6)
    data = {part: _moving_videos(rng, n) for part, n in (("train", 90), ("test", 60))}
    accuracy = {}
    for motion in (False, True):
        cfg = {**CFG, "input": "softmax", "use_findings": False, "motion": motion}
        bags = {}
        for part, (soft, emb, video, labels) in data.items():
            feats = frame_features(soft, emb, np.zeros((len(soft), 0)), cfg, video)
            bags[part] = ([feats[video == v] for v in pd.unique(video)], labels)
        model, _ = fit_video_model(*bags["train"], 3, cfg, seed=0)
        accuracy[motion] = (model.predict_proba(bags["test"][0]).argmax(1) == bags["test"][1]).mean()
    assert accuracy[True] >= 0.8 and accuracy[False] < 0.6


def test_early_stopping_chooses_the_step_with_the_lowest_held_out_loss(monkeypatch):
    frames, split = _cohort(np.random.default_rng(7), n_patients=15)
    cfg = {**CFG, "epochs": 300, "lr": 0.05, "early_stopping": True}
    bags = VideoBags.from_frames(frames["video"], frames["patient"], frames["split"], frames["label"],
                                 frames["softmax"], frames["softmax"])
    seen = {}
    real = model_module.early_stopping_step

    def spy(curves, labels):
        seen["step"] = real(curves, labels)
        seen["curves"], seen["labels"] = curves, labels
        return seen["step"]

    monkeypatch.setattr(model_module, "early_stopping_step", spy)
    table, final = score_videos(bags, split, 3, cfg, seed=0)
    step, curves, labels = seen["step"], seen["curves"], seen["labels"]
    assert sorted(curves[0]) == list(range(10, 301, 10)) and final.steps == step
    # the held-out loss by hand: the chosen step has the lowest (ties: the earliest)
    nll = {s: np.mean(np.concatenate([-np.log(c[s][np.arange(len(y)), y]) for c, y in zip(curves, labels, strict=True)]))
           for s in curves[0]}
    assert nll[step] == min(nll.values()) and step == min(s for s in nll if nll[s] == nll[step])
    # each training video's out-of-fold score is its fold model's at the chosen step (table rows in bag order)
    for f, curve in zip(range(3), curves, strict=True):
        rows = table[(table["split"] == "train") & (table["fold"] == f)]
        assert len(rows) == len(curve[step])
        np.testing.assert_array_equal(rows[["p_0", "p_1", "p_2"]].to_numpy(), curve[step])
    # the final model trained for exactly that many steps: the same as fitting it so by hand
    again, _ = fit_video_model([bags.features[i] for i in np.flatnonzero(bags.split == "train")],
                               bags.label[bags.split == "train"], 3, cfg, 0, steps=step)
    test = [bags.features[i] for i in np.flatnonzero(bags.split == "test")]
    np.testing.assert_array_equal(final.predict_proba(test), again.predict_proba(test))


def test_dropout_trains_and_does_not_touch_scoring():
    rng = np.random.default_rng(8)
    bags, y = _witness_videos(rng, 40)
    plain, _ = fit_video_model(bags, y, 3, CFG, seed=0)
    dropped, _ = fit_video_model(bags, y, 3, {**CFG, "dropout": 0.5}, seed=0)
    assert not np.allclose(plain.predict_proba(bags), dropped.predict_proba(bags))  # it trained differently
    np.testing.assert_array_equal(dropped.predict_proba(bags), dropped.predict_proba(bags))  # eval: no dropout
