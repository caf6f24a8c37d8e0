"""The Stable Diffusion parts at tiny sizes: training steps, LoRA round trips, LCM, metrics."""

import copy
import dataclasses
import json
import logging

import numpy as np
import pytest
import torch

from cxrlab.core.errors import ConfigError, DataError
from cxrlab.generation.config import (
    BaseTrainConfig,
    LcmTrainConfig,
    LoraTrainConfig,
    VaeTrainConfig,
)
from cxrlab.generation.evaluate import (
    INCEPTION_RANGE,
    SetScorer,
    class_agreement,
    class_matched,
    compare_samplers,
    frechet_distance,
    inception_features,
    mean_pairwise_distance,
    saturated_fraction,
)
from cxrlab.generation.imagefolder import read_imagefolder, write_imagefolder
from cxrlab.generation.model import (
    build_pipeline,
    build_tokenizer,
    encode_latents,
    load_pipeline,
    load_variant,
    sample_classes,
    sample_images,
    save_lora,
    set_latent_scale,
    to_rgb,
    use_sampler,
    vae_batch,
)
from cxrlab.generation.train import (
    ConsistencySolver,
    distill_lcm,
    make_conditioning,
    train_base_unet,
    train_lora,
    train_vae,
)
from cxrlab.params import load_section
from tests import tiny
from tests.conftest import REPO, assert_resume_gives_the_same_weights


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 28, 28), dtype=np.uint8)


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    return build_pipeline(tiny.DIFFUSION, seed=0)


def unet_out(unet, emb, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        return unet(z, torch.tensor([10, 500]), emb[:1].expand(2, -1, -1)).sample


def test_tokenizer_matches_open_clip_ids():
    import open_clip

    text = "a chest x-ray showing right lower lobe pneumonia"
    ours = build_tokenizer(32)(text).input_ids
    theirs = open_clip.get_tokenizer("RN50")([text])[0].tolist()
    assert ours == theirs[: len(ours)] and ours[0] == 49406 and ours[-1] == 49407


def test_pipeline_round_trips_through_save_pretrained(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "base")
    loaded = load_pipeline(tmp_path / "base")
    emb = make_conditioning(pipe, ["a chest x-ray"]).bank
    assert torch.equal(unet_out(pipe.unet, emb), unet_out(loaded.unet, emb))
    half = load_pipeline(tmp_path / "base", torch.bfloat16)  # the gpu profile's inference dtype
    assert {p.dtype for m in (half.unet, half.vae) for p in m.parameters()} == {torch.bfloat16}
    with pytest.raises(DataError, match="cannot load a Stable Diffusion pipeline"):
        load_pipeline(tmp_path / "missing")


def test_vae_training_lowers_reconstruction_error_and_sets_scale(pipe, images):
    x = to_rgb(images, 16)
    before = torch.nn.functional.mse_loss(pipe.vae(x).sample, x).item()
    cfg = VaeTrainConfig(epochs=3, batch_size=8, optim=tiny.optim(VaeTrainConfig, lr=3e-3))
    result = train_vae(pipe.vae, x, x[:8], cfg)
    assert result.history[-1]["val_loss"] < before
    scale = set_latent_scale(pipe.vae, x)
    assert encode_latents(pipe.vae, x).std().item() == pytest.approx(1.0, rel=1e-4)
    # the VAE's batches are bounded by pixels: 8 images at SD's 512 px, 256 at 32 px
    assert (vae_batch(512), vae_batch(256), vae_batch(32), vae_batch(4096)) == (8, 32, 256, 1)
    assert pipe.vae.config.scaling_factor == scale


def test_base_training_resumes_to_the_same_weights(pipe, images, tmp_path):
    z = encode_latents(pipe.vae, to_rgb(images, 16))
    cond = make_conditioning(pipe, ["a chest x-ray"] * len(z))
    cfg = BaseTrainConfig(epochs=2, batch_size=8, uncond_prob=0.5)
    state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    full, ema_full = train_base_unet(pipe.unet, pipe.scheduler, z, z[:8], cond, cond, cfg)
    assert len(full.history) == 2 and np.isfinite(full.history[-1]["val_loss"])
    assert not torch.equal(next(ema_full.parameters()), next(pipe.unet.parameters()))

    pipe.unet.load_state_dict(state)
    ckpt = tmp_path / "base.pt"

    def crash_after_one(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_base_unet(pipe.unet, pipe.scheduler, z, z[:8], cond, cond, cfg, ckpt, crash_after_one)
    assert ckpt.is_file()
    pipe.unet.load_state_dict(state)  # a fresh process would rebuild the same initial model
    resumed, ema = train_base_unet(pipe.unet, pipe.scheduler, z, z[:8], cond, cond, cfg, ckpt)
    assert resumed.history == full.history and not ckpt.exists()
    for a, b in zip(ema.parameters(), ema_full.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lora_resumes_to_the_same_weights_and_checkpoints_only_the_adapter(pipe, images, tmp_path):
    z = encode_latents(pipe.vae, to_rgb(images, 16))
    cond = make_conditioning(pipe, ["normal lungs", "pneumonia"] * (len(z) // 2))
    cfg = LoraTrainConfig(steps=4, eval_every=1, optim=tiny.optim(LoraTrainConfig, lr=1e-2))
    ckpt = tmp_path / "lora.pt"
    seen = {}

    def train(unet, checkpoint, on_epoch):
        if checkpoint and checkpoint.exists():  # the interrupted run's
            saved = torch.load(checkpoint, weights_only=True)
            seen["model"], seen["best"] = len(saved["model"]), len(saved["best"])
        torch.manual_seed(0)  # the LoRA's initial weights, as a fresh stage process seeds them
        train_lora(unet, pipe.scheduler, z, cond, z[:4], cond, cfg, checkpoint, on_epoch)
        seen["lora"] = sum("lora_" in n for n, _ in unet.named_parameters())

    assert_resume_gives_the_same_weights(
        train, lambda: copy.deepcopy(pipe.unet), ckpt,
        weights=lambda unet: {k: v for k, v in unet.state_dict().items() if "lora_" in k},
    )  # fmt: skip
    # the kept block and the checkpoint hold the adapter's tensors, not the frozen UNet's
    assert seen["model"] == seen["best"] == seen["lora"] > 0, seen


def test_lora_saves_and_reloads_to_identical_outputs(pipe, images, tmp_path, caplog):
    pipe.save_pretrained(tmp_path / "base")
    z = encode_latents(pipe.vae, to_rgb(images, 16))
    texts = ["normal lungs", "pneumonia"] * (len(z) // 2)
    cond = make_conditioning(pipe, texts)
    cfg = LoraTrainConfig(steps=3, eval_every=2, optim=tiny.optim(LoraTrainConfig, lr=1e-2))
    result = train_lora(pipe.unet, pipe.scheduler, z, cond, z[:4], cond, cfg)
    assert [row["epoch"] for row in result.history] == [1, 2]  # blocks of 2 + 1 steps
    trainable = {n for n, p in pipe.unet.named_parameters() if p.requires_grad}
    assert trainable and all("lora" in n for n in trainable)
    save_lora(pipe.unet, tmp_path / "lora")

    fresh = load_pipeline(tmp_path / "base")
    base_out = unet_out(fresh.unet, cond.bank)
    note = "No LoRA keys associated to CLIPTextModel"
    # diffusers' own handler holds the stream of import time: read its records instead
    with caplog.at_level(logging.WARNING, logger="diffusers"):
        fresh.load_lora_weights(tmp_path / "lora", adapter_name="class")
    assert note in caplog.text  # diffusers' note: the LoRA adapts the UNet only
    caplog.clear()
    assert torch.allclose(
        unet_out(fresh.unet, cond.bank), unet_out(pipe.unet, cond.bank), atol=1e-6
    )
    assert not torch.allclose(unet_out(fresh.unet, cond.bank), base_out, atol=1e-4)
    with caplog.at_level(logging.WARNING, logger="diffusers"):
        fused = load_variant(tmp_path / "base", {"class": (tmp_path / "lora", 1.0)}, True)
    assert note not in caplog.text  # the stages' logs stay free of it
    assert fused.vae.use_slicing  # diffusion.generate.vae_slicing
    # generate_lora's two adapters, by the names it gives them: no "missing keys" flood
    # (an adapter named "lora" matches every other adapter's lora_A/lora_B keys)
    pair = {"lcm": (tmp_path / "lora", 1.0), "class": (tmp_path / "lora", 1.0)}
    with caplog.at_level(logging.WARNING, logger="diffusers"):
        load_variant(tmp_path / "base", pair)
    assert "missing keys" not in caplog.text
    assert not any("lora" in name for name, _ in fused.unet.named_parameters())
    assert torch.allclose(
        unet_out(fused.unet, cond.bank), unet_out(pipe.unet, cond.bank), atol=1e-5
    )
    plain = load_variant(tmp_path / "base", {})
    assert torch.allclose(unet_out(plain.unet, cond.bank), base_out, atol=1e-6)


def test_lora_steps_must_be_positive():
    from cxrlab.core.config import from_dict

    with pytest.raises(ConfigError, match="'lora.steps' must be positive"):
        from_dict(LoraTrainConfig, {"steps": 0}, "lora")


def test_consistency_boundary_conditions(pipe):
    solver = ConsistencySolver(pipe.scheduler, 50)
    assert solver.timesteps[0] == 19 and solver.timesteps[-1] == 999 and solver.skip == 20
    z, out = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    # At t = 0 the consistency function is the identity: f(z, 0) = z.
    assert torch.allclose(solver._consistency(out, z, torch.tensor([0, 0])), z)
    # At large t it is (almost) the model's clean-latent estimate.
    t = torch.tensor([999, 999])
    assert torch.allclose(solver._consistency(out, z, t), solver._x0(out, z, t), atol=1e-5)


def test_lcm_distillation_trains_only_the_lora_and_samples_in_four_steps(pipe, images, tmp_path):
    pipe.save_pretrained(tmp_path / "base")
    z = encode_latents(pipe.vae, to_rgb(images, 16))
    cond = make_conditioning(pipe, ["a chest x-ray"] * len(z))
    base_out = unet_out(pipe.unet, cond.bank)
    cfg = LcmTrainConfig(steps=3, eval_every=3, batch_size=8, rank=2, teacher_guidance=2.0)
    result = distill_lcm(pipe.unet, pipe.scheduler, z, z[:8], cond, cond, cfg)
    assert np.isfinite(result.history[-1]["train_loss"])
    assert np.isfinite(result.history[-1]["val_loss"])
    # After the teacher's passes the adapter is on again, and it changed the output.
    assert not torch.allclose(unet_out(pipe.unet, cond.bank), base_out, atol=1e-5)
    distilled = unet_out(pipe.unet, cond.bank)
    save_lora(pipe.unet, tmp_path / "lcm")
    pipe.unet.disable_adapters()
    assert torch.allclose(unet_out(pipe.unet, cond.bank), base_out, atol=1e-6)

    # The LoRA adapts convolutions too; all of it must come back on reload.
    pipe = load_pipeline(tmp_path / "base")
    pipe.load_lora_weights(tmp_path / "lcm", adapter_name="lcm")
    assert torch.allclose(unet_out(pipe.unet, cond.bank), distilled, atol=1e-6)
    use_sampler(pipe, "lcm", dict(pipe.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    a = sample_images(pipe, "a chest x-ray", 3, 4, 1.0, seed=1, batch_size=2, resolution=16)
    b = sample_images(pipe, "a chest x-ray", 3, 4, 1.0, seed=1, batch_size=2, resolution=16)
    c = sample_images(pipe, "a chest x-ray", 3, 4, 1.0, seed=2, batch_size=2, resolution=16)
    assert a.shape == (3, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(pipe.scheduler.timesteps) == 4
    # Per class: prompt c from seed + c, labelled c, as generate_images saves them.
    images, labels = sample_classes(pipe, ["a chest x-ray", "pneumonia"], 3, 4, 1.0, 1, 2, 16)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1] and np.array_equal(images[:3], a)
    second = sample_images(pipe, "pneumonia", 3, 4, 1.0, seed=2, batch_size=2, resolution=16)
    assert np.array_equal(images[3:], second)
    with pytest.raises(DataError, match="unknown sampler"):
        use_sampler(pipe, "euler", dict(pipe.scheduler.config))


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0, -2.0])
    assert frechet_distance(a, a + shift) == pytest.approx(9.0, rel=1e-6)
    # Independent axes with std 1 and 3: trace term = sum (1 - 3)^2 = 4 per axis.
    assert frechet_distance(a, 3 * a) == pytest.approx(
        4 * 4 * np.var(a, axis=0, ddof=1).mean(), rel=0.05
    )
    with pytest.raises(ValueError):
        frechet_distance(a, a[:, :3])


def test_class_matched_takes_the_reference_mix_and_the_first_images_of_each_class():
    generated, test = np.repeat([0, 1], 250), np.repeat([0, 1], [234, 390])  # 37.5 / 62.5 %
    keep = class_matched(generated, test)
    assert (generated[keep] == 0).sum() == 150 and (generated[keep] == 1).sum() == 250
    assert keep[:150].tolist() == list(range(150))  # the first of each class, in order
    val = np.repeat([0, 1], [135, 389])  # pneumonia-heavier than test: normal runs out first
    assert np.bincount(val[class_matched(val, test)]).tolist() == [135, 225]


def test_matching_the_class_mix_removes_the_fid_that_the_mix_alone_causes():
    """Generated features from the real class distributions, only 50/50 instead of the
    test split's 37.5/62.5: the unmatched FID counts the mix, the matched one hardly."""
    rng = np.random.default_rng(0)
    centre = {0: np.zeros(4), 1: np.full(4, 6.0)}

    def draw(labels):
        return np.stack([rng.normal(centre[c], 1.0) for c in labels])

    test_labels, labels = np.repeat([0, 1], [750, 1250]), np.repeat([0, 1], 1000)
    real = {"val": (draw(test_labels), test_labels), "test": (draw(test_labels), test_labels)}
    scorer = SetScorer(lambda x: (x, np.full(len(x), 0.5)), real, ["normal", "pneumonia"])
    row = scorer.score(draw(labels), labels)
    assert row["domain_fid"] > 1.0 and row["domain_fid_matched"] < 0.1 * row["domain_fid"]
    assert row["domain_fid_normal"] < 0.1 and row["domain_fid_pneumonia"] < 0.1
    assert "inception_fid" not in row  # no Inception network given


def test_val_fid_cuts_the_generated_set_to_vals_mix_and_score_val_needs_no_test():
    """Generated features drawn from the real class distributions at 50/50, real val at
    26/74: the val FID, cut to val's mix, is near zero, and a scorer given val alone scores
    the set without any test image."""
    rng = np.random.default_rng(1)
    centre = {0: np.zeros(4), 1: np.full(4, 6.0)}

    def draw(labels):
        return np.stack([rng.normal(centre[c], 1.0) for c in labels])

    val_labels, labels = np.repeat([0, 1], [520, 1480]), np.repeat([0, 1], 1000)
    real = {"val": (draw(val_labels), val_labels)}
    # the features are the images; P(pneumonia) is 1 where the first one is past midway
    scorer = SetScorer(lambda x: (x, (x[:, 0] > 3).astype(float)), real, ["normal", "pneumonia"])
    generated = draw(labels)
    row = scorer.score_val(generated, labels)
    unmatched = frechet_distance(generated, real["val"][0])
    assert row["val_domain_fid"] < 0.1 < unmatched
    assert row["class_agreement_normal"] > 0.99 and row["class_agreement_pneumonia"] > 0.99
    assert set(row) == {"val_domain_fid", "class_agreement", "class_agreement_normal",
                        "class_agreement_pneumonia", "saturated"}  # fmt: skip
    with pytest.raises(KeyError):
        scorer.score(generated, labels)  # no test split was given


def test_reference_measures_how_far_val_and_test_lie_from_train():
    """Train and val from one distribution, test shifted: train_vs_test_fid shows the
    shift, train_vs_val_fid does not, whatever the class mixes."""
    rng = np.random.default_rng(2)

    def draw(labels, shift=0.0):
        return np.stack([rng.normal(np.full(4, 6.0 * c + shift), 1.0) for c in labels])

    labels = {"train": np.repeat([0, 1], [1000, 3000]), "val": np.repeat([0, 1], [300, 700]),
              "test": np.repeat([0, 1], [600, 400])}  # fmt: skip
    real = {s: (draw(y, 2.0 if s == "test" else 0.0), y) for s, y in labels.items()}
    scorer = SetScorer(lambda x: (x, np.full(len(x), 0.5)), real, ["normal", "pneumonia"])
    out = scorer.reference(real["test"][0][:50])
    assert out["train_vs_val_fid"] < 0.1 and out["train_vs_test_fid"] > 10


def test_guidance_sweep_takes_the_lowest_val_fid_among_scales_that_reach_the_target():
    from tools.guidance_sweep import choose

    def row(g, fid, normal, pneumonia):
        return {"guidance": g, "val_domain_fid": fid, "class_agreement_normal": normal,
                "class_agreement_pneumonia": pneumonia}  # fmt: skip

    rows = [row(3, 10.0, 0.4, 0.9), row(10, 25.0, 0.74, 0.9), row(15, 20.0, 0.79, 0.9)]
    assert choose(rows)["guidance"] == 15  # 3 has the lowest FID but misses the target
    rows = [row(3, 10.0, 0.4, 0.9), row(5, 12.0, 0.6, 0.95), row(7.5, 14.0, 0.5, 0.99)]
    assert choose(rows)["guidance"] == 5  # none reaches 0.7: the highest smaller class


def test_variant_adapters_name_the_lcm_and_class_loras_per_sampler_and_variant():
    from cxrlab.generation.model import variant_adapters

    paths = type("Paths", (), {"lcm_lora": "models/lcm_lora", "lora": "models/lora"})
    assert variant_adapters(paths, "ddim", "base", 0.8) == {}
    assert variant_adapters(paths, "lcm", "base", 0.8) == {"lcm": ("models/lcm_lora", 1.0)}
    assert variant_adapters(paths, "lcm", "lora", 0.8) == {
        "lcm": ("models/lcm_lora", 1.0), "class": ("models/lora", 0.8)}  # fmt: skip


def test_inception_input_is_299_px_three_channels_in_the_networks_range(tmp_path):
    class Probe(torch.nn.Module):
        def forward(self, x):  # what the network sees, per image
            size = torch.full_like(x[:, 0, 0, :1], float(x.shape[-1]))
            return torch.cat([x.amin((1, 2, 3))[:, None], x.amax((1, 2, 3))[:, None], size,
                              torch.full_like(size, float(x.shape[1]))], 1)  # fmt: skip

    torch.jit.save(torch.jit.script(Probe()), tmp_path / "probe.pt")
    images = np.stack([np.zeros((32, 32), np.uint8), np.full((32, 32), 255, np.uint8)])
    out = inception_features(tmp_path / "probe.pt", batch_size=1)(images)
    low, high = INCEPTION_RANGE
    assert out[:, 2:].tolist() == [[299, 3], [299, 3]]
    assert out[0, :2] == pytest.approx([low, low]) and out[1, :2] == pytest.approx([high, high])
    (tmp_path / "not.pt").write_bytes(b"not a network")
    with pytest.raises(DataError, match="not a TorchScript network"):
        inception_features(tmp_path / "not.pt")
    with pytest.raises(DataError, match="run the fetch_data stage"):
        inception_features(tmp_path / "missing.pt")


def test_the_fetched_fid_inception_gives_2048_features_that_tell_noise_from_x_rays():
    weights = REPO / "data/raw/fid_inception/default_1.pt"
    if not weights.is_file():
        pytest.skip("fid_inception not fetched: make weights")
    from cxrlab.classification.data import load_pneumoniamnist
    from tests.conftest import SHARED_DATA

    splits = load_pneumoniamnist(SHARED_DATA / "pneumoniamnist/pneumoniamnist.npz")
    a, b = splits["test"].images[:20], splits["test"].images[20:40]
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    features = inception_features(weights)
    fa, fb, fn = features(a), features(b), features(noise)
    assert fa.shape == (20, 2048) and np.isfinite(fa).all()
    assert frechet_distance(fa, fn) > 3 * frechet_distance(fa, fb)


def test_the_fast_fid_inception_gives_the_shipped_networks_features():
    """The eager channels-last rebuild (batch norms folded) matches the TorchScript file."""
    weights = REPO / "data/raw/fid_inception/default_1.pt"
    if not weights.is_file():
        pytest.skip("fid_inception not fetched: make weights")
    from cxrlab.core.pretrained import load_torchscript
    from cxrlab.generation.inception import fast_inception

    script = load_torchscript(weights)
    fast = fast_inception(script)
    assert not isinstance(fast, torch.jit.ScriptModule)
    x = torch.rand(3, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want, got = script(x), fast(x)
    assert got.shape == want.shape == (3, 2048)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # any other TorchScript network runs as it is
    other = torch.jit.script(torch.nn.Linear(2, 2))
    assert fast_inception(other) is other


def test_class_agreement_and_diversity_known_answers():
    prob = np.array([0.9, 0.2, 0.7, 0.1])
    shares = class_agreement(prob, np.array([1, 1, 0, 0]))
    assert shares == {"all": 0.5, 0: 0.5, 1: 0.5}
    triangle = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    assert mean_pairwise_distance(triangle) == pytest.approx(1.0)
    assert saturated_fraction(np.array([[0, 5, 6, 128], [249, 250, 255, 30]], np.uint8)) == 0.5
    scores = {
        s: {
            "base": {"domain_fid": 10.0, "class_agreement": 0.5, "images_per_s": ips},
            "lora": {"domain_fid": fid, "class_agreement": 0.8, "images_per_s": ips},
        }
        for s, ips, fid in (("lcm", 120.0, 12.0), ("ddim", 10.0, 10.0))
    }
    out = compare_samplers(scores, "lcm", "ddim")
    assert out["speedup_base"] == 12.0 and out["fid_ratio_lora"] == 1.2
    assert out["lora_agreement_gain_lcm"] == pytest.approx(0.3)


def test_imagefolder_round_trip_and_bad_input(tmp_path, images):
    folder = write_imagefolder(tmp_path / "s", images[:2], ["a", "b"], ["x0", "x1"])
    read, texts = read_imagefolder(folder)
    assert np.array_equal(read, images[:2]) and texts == ["a", "b"]
    meta = folder / "metadata.jsonl"

    def broken(text, match):
        meta.write_text(text)
        with pytest.raises(DataError, match=match):
            read_imagefolder(folder)

    broken("", "the subset is empty")
    broken(json.dumps({"text": "a"}) + "\n", "no 'file_name' field")
    broken(json.dumps({"file_name": "x0.png"}) + "\n", "no 'text' field")
    broken(json.dumps({"file_name": "gone.png", "text": "a"}) + "\n", "gone.png .* unreadable")
    broken("{not json\n", "line 1 is not JSON")
    (folder / "small.png").write_bytes((folder / "x0.png").read_bytes())
    from PIL import Image

    Image.fromarray(images[0][:20, :20]).save(folder / "small.png")
    rows = [{"file_name": "x0.png", "text": "a"}, {"file_name": "small.png", "text": "b"}]
    broken("".join(json.dumps(r) + "\n" for r in rows), "small.png is")
    with pytest.raises(DataError, match="export_clip_subset"):
        read_imagefolder(tmp_path / "nowhere")


def test_lr_schedule_warms_up_then_decays():
    from cxrlab.core.loop import lr_factor

    cosine = [lr_factor(s, warmup=4, total=20, shape="cosine") for s in range(20)]
    assert cosine[:4] == [0.25, 0.5, 0.75, 1.0] and cosine[4] == 1.0
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:], strict=False))
    assert cosine[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 15 / 16)))
    assert [lr_factor(s, 0, 20, shape="constant") for s in (0, 19)] == [1.0, 1.0]
    linear = [lr_factor(s, warmup=4, total=20, shape="linear") for s in range(20)]
    assert linear[:5] == [0.25, 0.5, 0.75, 1.0, 1.0] and linear[-1] == 1 / 16
    assert all(a - b == pytest.approx(1 / 16) for a, b in zip(linear[4:], linear[5:], strict=False))


def test_divergence_guard_stops_on_nan_and_on_a_sustained_rise_only():
    from cxrlab.core.errors import TrainingDiverged
    from cxrlab.core.loop import DivergenceGuard

    def guard():
        return DivergenceGuard("val_loss", 2.0, 2, "lora", "lower lora.optim.lr.", steps_per_row=50)

    g = guard()
    for epoch, loss in enumerate([0.2, 0.1, 0.25, 0.12, 0.3], start=1):  # one spike: fine
        g({"epoch": epoch, "val_loss": loss, "train_loss": loss})
    with pytest.raises(TrainingDiverged, match=r"at step 300: val_loss 0\.35 stayed above 2x"):
        g({"epoch": 6, "val_loss": 0.35, "train_loss": 0.3})
    g = guard()
    g.start_from(0.1)
    with pytest.raises(TrainingDiverged, match=r"diverged at step 50: val_loss became nan"):
        g({"epoch": 1, "val_loss": float("nan"), "train_loss": 0.1})


def test_min_snr_weighting_is_one_above_every_snr_and_lowers_the_loss_below(pipe, images):
    from cxrlab.generation.train import denoising_loss

    z = encode_latents(pipe.vae, to_rgb(images[:8], 16))
    emb = make_conditioning(pipe, ["normal lungs"] * 8).bank[[0] * 8]

    def loss(gamma):
        with torch.no_grad():
            return float(denoising_loss(pipe.unet, pipe.scheduler, z, emb,
                                        torch.Generator().manual_seed(0), gamma))  # fmt: skip

    plain = loss(None)
    assert loss(1e9) == pytest.approx(plain, rel=1e-5)  # min(snr, gamma) / snr == 1
    assert loss(0.01) < plain  # low-noise timesteps weighted down


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_lora_holds_for_five_times_the_default_steps(pipe, images, seed):
    """The default lr, schedule and clipping, 5x the default steps: the val loss ends
    within 1.5x its best and the kept adapter is not marked diverged."""
    z = encode_latents(pipe.vae, to_rgb(images, 16))
    cond = make_conditioning(pipe, ["normal lungs", "pneumonia"] * (len(z) // 2))
    default = load_section("lora", REPO / "params.yaml")  # the pipeline's lora params
    steps = 5 * default.steps
    cfg = dataclasses.replace(default, seed=seed, steps=steps, eval_every=steps // 10,
                              batch_size=4)  # fmt: skip
    assert (cfg.optim, cfg.max_grad_norm) == (default.optim, 1.0)
    result = train_lora(pipe.unet, pipe.scheduler, z, cond, z[:8], cond, cfg)
    val = [row["val_loss"] for row in result.history]
    assert len(val) == 10 and all(np.isfinite(val))
    assert val[-1] <= 1.5 * min(val), val
    assert not result.record["diverged"] and result.record["val_loss"] == min(val)


def test_generation_refuses_a_lora_without_a_record_or_marked_diverged(pipe, tmp_path):
    from cxrlab.generation.model import add_lora, check_lora_record

    add_lora(pipe.unet, 2, None, ["to_q"])
    save_lora(pipe.unet, tmp_path / "bare")
    with pytest.raises(DataError, match="was not saved by train_lora"):
        check_lora_record(tmp_path / "bare")
    record = {"val_loss": 0.9, "base_val_loss": 0.1, "diverged": True}
    save_lora(pipe.unet, tmp_path / "bad", record)
    with pytest.raises(DataError, match=r"diverged in training \(val loss 0.9, base model 0.1\)"):
        check_lora_record(tmp_path / "bad")
    save_lora(pipe.unet, tmp_path / "good", {**record, "val_loss": 0.09, "diverged": False})
    assert check_lora_record(tmp_path / "good")["val_loss"] == 0.09
