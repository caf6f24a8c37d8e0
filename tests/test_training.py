import numpy as np
import pytest
import torch

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.classification.model import build_classifier
from cxrlab.classification.train import train_classifier
from cxrlab.core.augment import AugmentConfig, augment_batch
from cxrlab.core.utils import seed_everything


def weights(model):
    return torch.cat(
        [p.detach().flatten() for p in model.state_dict().values() if p.is_floating_point()]
    )


def test_tiny_model_learns_the_synthetic_task(tiny_npz, tiny_model_cfg, tiny_train_cfg):
    seed_everything(0)
    splits = load_pneumoniamnist(tiny_npz)
    model = build_classifier(tiny_model_cfg)
    seen = []
    result = train_classifier(
        model, splits["train"], splits["val"], tiny_train_cfg, on_epoch=seen.append
    )
    assert [row["epoch"] for row in seen] == [1, 2, 3]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_score >= 0.9  # val AUC on a blob-vs-noise task
    assert 1 <= result.best_epoch <= 3


def test_same_seed_gives_identical_weights(tiny_npz, tiny_model_cfg, tiny_train_cfg):
    splits = load_pneumoniamnist(tiny_npz)
    runs = []
    for _ in range(2):
        seed_everything(0)
        model = build_classifier(tiny_model_cfg)
        train_classifier(model, splits["train"], splits["val"], tiny_train_cfg)
        runs.append(weights(model))
    assert torch.equal(runs[0], runs[1])


class Interrupted(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(
    tmp_path, tiny_npz, tiny_model_cfg, tiny_train_cfg
):
    splits = load_pneumoniamnist(tiny_npz)
    ckpt = tmp_path / "ckpt.pt"

    seed_everything(0)
    reference = build_classifier(tiny_model_cfg)
    ref_result = train_classifier(reference, splits["train"], splits["val"], tiny_train_cfg)

    def crash_after_two(row):
        if row["epoch"] == 2:
            raise Interrupted

    seed_everything(0)
    with pytest.raises(Interrupted):
        train_classifier(
            build_classifier(tiny_model_cfg),
            splits["train"],
            splits["val"],
            tiny_train_cfg,
            ckpt,
            crash_after_two,
        )
    assert ckpt.is_file()

    seed_everything(1)  # a different process state: resume must not depend on it
    resumed = build_classifier(tiny_model_cfg)
    replayed = []
    result = train_classifier(
        resumed, splits["train"], splits["val"], tiny_train_cfg, ckpt, replayed.append
    )
    assert [row["epoch"] for row in replayed] == [1, 2, 3]  # history replayed, then epoch 3
    assert result.history == ref_result.history
    assert torch.equal(weights(resumed), weights(reference))
    assert not ckpt.exists()  # removed after success


def test_checkpoint_of_another_config_is_ignored(
    tmp_path, tiny_npz, tiny_model_cfg, tiny_train_cfg
):
    from dataclasses import replace

    splits = load_pneumoniamnist(tiny_npz)
    ckpt = tmp_path / "ckpt.pt"

    def crash(row):
        raise Interrupted

    with pytest.raises(Interrupted):
        train_classifier(
            build_classifier(tiny_model_cfg),
            splits["train"],
            splits["val"],
            tiny_train_cfg,
            ckpt,
            crash,
        )
    seen = []
    other = replace(tiny_train_cfg, optim=replace(tiny_train_cfg.optim, lr=1e-3), epochs=1)
    train_classifier(
        build_classifier(tiny_model_cfg), splits["train"], splits["val"], other, ckpt, seen.append
    )
    assert [row["epoch"] for row in seen] == [1]


def test_augment_off_is_identity_and_on_is_seeded():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert torch.equal(augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0)), x)
    cfg = AugmentConfig(rotate_deg=10, shift=0.1, zoom=0.1, hflip=0.5, brightness=0.1, contrast=0.1)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(3))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1


def test_hflip_only_mirrors_the_image():
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    flipped = augment_batch(x, AugmentConfig(hflip=1.0), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(flipped.numpy(), x.flip(-1).numpy(), atol=1e-5)


@pytest.mark.parametrize("schedule", ["onecycle", "linear"])
def test_one_optimizer_builder_groups_decay_scale_and_frozen_weights(schedule):
    from cxrlab.core.config import OptimConfig
    from cxrlab.core.loop import make_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)  # frozen: not optimised at all
    cfg = OptimConfig(lr=1e-2, weight_decay=0.1, schedule=schedule, warmup_frac=0.25)
    optimizer, scheduler = make_optimizer(model, cfg, 8, scaled={"0.weight", "0.bias"}, scale=0.1)
    groups = {
        tuple(sorted(n for n, p in model.named_parameters() if any(p is q for q in g["params"]))): g
        for g in optimizer.param_groups
    }
    assert set(groups) == {("2.weight",), ("0.weight",), ("1.bias", "1.weight"), ("0.bias",)}
    assert [groups[k]["weight_decay"] for k in sorted(groups)] == [0.0, 0.1, 0.0, 0.1]
    peaks = {k: 0.0 for k in groups}
    for _ in range(8):
        for k, g in groups.items():
            peaks[k] = max(peaks[k], g["lr"])
        optimizer.step()
        scheduler.step()
    # every group peaks at its own LR: the base LR, or scale times it for scaled weights
    assert peaks[("0.weight",)] == pytest.approx(1e-3) and peaks[("0.bias",)] == pytest.approx(1e-3)
    assert peaks[("2.weight",)] == pytest.approx(1e-2)
    # fit logs the first group's LR: it must be a full-LR group, not a pretrained one's 0.1x
    assert optimizer.param_groups[0]["params"][0] is model[2].weight


def _scripted_fit(val_dice: list[float], patience):
    """fit on a linear model whose val Dice per epoch is scripted; the result and weights."""
    from cxrlab.core.config import OptimConfig
    from cxrlab.core.loop import Keep, fit, make_optimizer, optimizer_step

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optim = OptimConfig(optimizer="adamw", lr=0.1, schedule="onecycle", warmup_frac=0.1)
    optimizer, scheduler = make_optimizer(model, optim, total_steps=len(val_dice))
    scores = iter(val_dice)

    def train_epoch(epoch: int) -> float:
        return optimizer_step(model(torch.ones(4, 2)).pow(2).mean(), optimizer, scheduler)

    result = fit(
        model, optimizer=optimizer, scheduler=scheduler, epochs=len(val_dice), run_id="t",
        train_epoch=train_epoch, validate=lambda: {"val_dice": next(scores)},
        keep=Keep.best("val_dice"), patience=patience,
    )  # fmt: skip
    return result, weights(model)


def test_early_stop_keeps_the_full_runs_weights_when_its_best_came_first():
    dice = [0.5, 0.9, 0.6, 0.7, 0.8, 0.95]
    full, full_weights = _scripted_fit(dice, patience=None)
    assert (full.best_epoch, len(full.history)) == (6, 6)
    # epochs 3-5 do not beat epoch 2: stop after 5 and keep 2, which a 6-epoch run loses to 6
    early, early_weights = _scripted_fit(dice, patience=3)
    assert (early.best_epoch, len(early.history)) == (2, 5)
    assert early.history == full.history[:5]  # the LR schedule still spans 6 epochs

    dice[-1] = 0.85  # now the full run's best is epoch 2 as well: the same weights
    full, full_weights = _scripted_fit(dice, patience=None)
    early, early_weights = _scripted_fit(dice, patience=3)
    assert full.best_epoch == early.best_epoch == 2
    assert torch.equal(early_weights, full_weights)
    torch.manual_seed(0)
    assert not torch.equal(early_weights, weights(torch.nn.Linear(2, 1)))  # it did train
