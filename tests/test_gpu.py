"""The `device` param: every trainer and the GPU inference paths, on CUDA against the CPU.

Each trainer runs twice from the same initial weights, once on the CPU and once on the
GPU. Batches, augmentations and noise are drawn on the CPU in both runs, so the two runs
differ only by floating-point rounding (cuDNN's convolutions, TF32): their losses must
agree closely, the GPU must really have been used, and the model must come back on the
CPU. The tests that need a GPU are skipped on a machine without one (such as CI); the
device tool's H100 runs them (BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrlab.core.errors import ConfigError
from cxrlab.core.loop import optimizer_step
from cxrlab.core.runtime import (
    accelerator,
    autocast,
    device,
    device_of,
    grad_scaler,
    inference_dtype,
    use_device,
    use_precision,
)
from cxrlab.params import apply_profile

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def on_cpu_after():
    yield
    use_device("cpu")
    use_precision("fp32")


@pytest.fixture(autouse=True)
def full_fp32():
    """No TF32 in the GPU runs, so that they differ from the CPU only by summation order."""
    if not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def on_both(model: torch.nn.Module, predict) -> dict[str, object]:
    """``predict(model)`` with the same weights on the CPU and on the GPU."""
    out = {}
    for name in ("cpu", "cuda"):
        use_device(name)
        model.to(device())
        out[name] = predict(model)
    model.to("cpu")
    use_device("cpu")
    return out


def both_devices(train) -> dict[str, tuple[torch.nn.Module, list[float]]]:
    """``train()`` -> (model, losses), run on the CPU and then on the GPU."""
    runs = {}
    for name in ("cpu", "cuda"):
        use_device(name)
        torch.cuda.reset_peak_memory_stats()
        runs[name] = train()
        if name == "cuda":
            assert torch.cuda.max_memory_allocated() > 0, "nothing was put on the GPU"
    use_device("cpu")
    for model, _ in runs.values():
        assert device_of(model).type == "cpu"  # handed back where the stage saves it
    return runs


def assert_same_training(runs, rtol: float, atol: float = 0.005) -> None:
    """The per-epoch losses agree to ``rtol``, or to ``atol`` once they are near zero."""
    cpu, cuda = (np.asarray(runs[k][1]) for k in ("cpu", "cuda"))
    assert np.all(np.isfinite(cuda)) and cpu.shape == cuda.shape
    np.testing.assert_allclose(cuda, cpu, rtol=rtol, atol=atol)


def test_device_param_default_profile_and_errors(on_cpu_after):
    params = {"profile": "gpu", "device": "cpu", "profiles": {"gpu": {"device": "auto"}}}
    assert apply_profile(params)["device"] == "auto"
    assert apply_profile({**params, "profile": "cpu"})["device"] == "cpu"
    with pytest.raises(ConfigError, match="expected one of cpu, cuda, auto"):
        use_device("gpu")
    with pytest.raises(ConfigError, match="must be a mapping"):
        apply_profile({"profile": "gpu", "lora": {}, "profiles": {"gpu": {"lora": 3}}})
    use_device("auto")
    assert device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def _fit_line(steps: int = 150) -> tuple[float, float]:
    """A linear fit through optimizer_step under autocast: (first loss, last loss)."""
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    y = x @ torch.randn(16, 1)
    model = torch.nn.Linear(16, 1).to(device())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    losses = []
    for _ in range(steps):
        with autocast():
            pred = model(x.to(device()))
        loss = torch.nn.functional.mse_loss(pred.float(), y.to(device()))
        losses.append(optimizer_step(loss, optimizer, scheduler, model.parameters(), 1.0))
    return losses[0], losses[-1]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_param_autocasts_training_and_still_learns(precision, on_cpu_after):
    use_device("auto")
    use_precision(precision)
    with autocast():
        out = torch.nn.Linear(4, 4).to(device())(torch.ones(2, 4, device=device()))
    assert out.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert (grad_scaler() is not None) == (precision == "fp16")  # fp16 scales its loss
    first, last = _fit_line()
    assert last < 0.05 * first, (first, last)
    want = torch.bfloat16 if precision == "bf16" else torch.float16
    assert inference_dtype() == (want if device().type == "cuda" else torch.float32)


def test_fp32_precision_is_plain_fp32_and_bad_names_are_clear_errors(on_cpu_after):
    use_precision("fp32")
    with autocast():
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32
    assert grad_scaler() is None and inference_dtype() == torch.float32
    with pytest.raises(ConfigError, match="precision is 'half'; expected auto or one of fp32"):
        use_precision("half")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU's rule")
@pytest.mark.parametrize(
    ("caps", "onednn", "want"),
    [
        ({"avx512_bf16": True}, True, "bf16"),
        ({"amx_bf16": True, "avx512_bf16": False}, True, "bf16"),
        ({"avx512_bf16": False, "amx_bf16": False}, True, "fp32"),  # AVX2 or plain AVX-512
        ({"avx512_bf16": True}, False, "fp32"),  # ONEDNN_MAX_CPU_ISA holds oneDNN back
    ],
)
def test_auto_precision_is_bf16_only_on_a_cpu_with_bf16_instructions(
    caps, onednn, want, monkeypatch, on_cpu_after
):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert use_precision("auto") == want
    with autocast():
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[want]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(on_cpu_after):
    use_device("cuda")
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        accelerator()


@gpu
def test_classifier_trains_on_the_gpu_like_on_the_cpu(tiny_npz, tiny_model_cfg, tiny_train_cfg):
    from cxrlab.classification.data import load_pneumoniamnist
    from cxrlab.classification.model import build_classifier, predict_proba
    from cxrlab.classification.train import train_classifier

    splits = load_pneumoniamnist(tiny_npz)

    def train():
        torch.manual_seed(0)
        model = build_classifier(tiny_model_cfg)
        result = train_classifier(model, splits["train"], splits["val"], tiny_train_cfg)
        return model, [row["train_loss"] for row in result.history]

    runs = both_devices(train)
    assert_same_training(runs, rtol=0.02)
    from cxrlab.core.transforms import to_tensor

    x = to_tensor(splits["test"].images, 28)
    probs = on_both(runs["cpu"][0], lambda m: predict_proba(m, x))
    assert probs["cuda"].device.type == "cpu"
    assert torch.allclose(probs["cuda"], probs["cpu"], atol=1e-4)


@gpu
def test_segmenter_trains_on_the_gpu_like_on_the_cpu(tmp_path):
    from cxrlab.segmentation.config import SegTrainConfig
    from cxrlab.segmentation.model import build_segmenter
    from cxrlab.segmentation.train import train_segmenter
    from tests import tiny
    from tests.lungseg_fixtures import write_covid

    train, val = tiny.segmentation_split(write_covid(tmp_path / "covid_lungseg"))

    def train_once():
        torch.manual_seed(0)
        model = build_segmenter(tiny.SEGMENTER)
        result = train_segmenter(model, train, val, SegTrainConfig(epochs=3, batch_size=4))
        return model, [row["train_loss"] for row in result.history]

    assert_same_training(both_devices(train_once), rtol=0.02)


@gpu
def test_clip_trains_on_the_gpu_like_on_the_cpu(tiny_npz):
    from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
    from cxrlab.labeling.config import ClipTrainConfig
    from cxrlab.labeling.model import build_clip
    from cxrlab.labeling.train import train_clip
    from tests import tiny

    split = load_pneumoniamnist(tiny_npz)["train"]
    cfg = ClipTrainConfig(
        epochs=3,
        batch_size=16,
        optim=tiny.optim(ClipTrainConfig, lr=3e-3),
        captions=tiny.CLIP_CAPTIONS,
    )

    def train():
        torch.manual_seed(0)
        bundle = build_clip(tiny.CLIP)
        x = bundle.images_to_tensor(split.images)
        history = train_clip(bundle, x, split.labels, list(CLASS_NAMES), cfg)
        bundle.model.to(device())  # inference follows the weights' device
        emb = bundle.encode_images(x[:4])
        assert emb.device.type == "cpu" and bundle.encode_texts(["a"]).device.type == "cpu"
        bundle.model.to("cpu")
        return bundle.model, [row["train_loss"] for row in history.history]

    assert_same_training(both_devices(train), rtol=0.02)


@gpu
@pytest.mark.parametrize("family", ["blip", "llava"])
def test_captioner_trains_and_decodes_on_the_gpu_like_on_the_cpu(family):
    from cxrlab.captioning.config import CaptionTrainConfig
    from cxrlab.captioning.model import build_captioner, generate_captions, pixel_values
    from cxrlab.captioning.train import train_captioner
    from cxrlab.core.augment import AugmentConfig
    from tests import tiny

    images, texts = tiny.caption_images(), [tiny.CAPTIONS[i % 2] for i in range(8)]
    cfg = CaptionTrainConfig(
        epochs=4,
        batch_size=4,
        optim=tiny.optim(CaptionTrainConfig, lr=1e-2),
        augment=AugmentConfig(),
    )
    captioners = {}

    def train():
        torch.manual_seed(0)
        captioner = build_captioner(tiny.captioner(family))
        result = train_captioner(captioner, (images, texts), (images, texts), cfg)
        captioners[device().type] = captioner
        return captioner.model, [row["val_loss"] for row in result.history]

    assert_same_training(both_devices(train), rtol=0.02)
    captioner = captioners["cpu"]
    x = pixel_values(captioner, images[:2])
    captions = on_both(
        captioner.model, lambda m: generate_captions(captioner, x.to(device()), 3, 12, 3)
    )
    assert captions["cuda"] == captions["cpu"]


@gpu
def test_diffusion_trainers_and_sampling_on_the_gpu_like_on_the_cpu(tmp_path):
    from cxrlab.generation.config import (
        BaseTrainConfig,
        LcmTrainConfig,
        LoraTrainConfig,
        VaeTrainConfig,
    )
    from cxrlab.generation.model import (
        build_pipeline,
        encode_latents,
        load_variant,
        sample_images,
        save_lora,
        to_rgb,
    )
    from cxrlab.generation.train import (
        distill_lcm,
        make_conditioning,
        train_base_unet,
        train_lora,
        train_vae,
    )
    from tests import tiny

    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    x = to_rgb(images, 16)

    def pipeline():
        torch.manual_seed(0)
        return build_pipeline(tiny.DIFFUSION, seed=0)

    def vae():
        pipe = pipeline()
        result = train_vae(pipe.vae, x, x[:8], VaeTrainConfig(epochs=2, batch_size=8))
        return pipe.vae, [row["val_loss"] for row in result.history]

    def setup():
        pipe = pipeline()
        z = encode_latents(pipe.vae, x)
        return pipe, z, make_conditioning(pipe, ["normal lungs", "pneumonia"] * 12)

    def base():
        pipe, z, cond = setup()
        cfg = BaseTrainConfig(epochs=2, batch_size=8)
        result, ema = train_base_unet(pipe.unet, pipe.scheduler, z, z[:8], cond, cond, cfg)
        assert device_of(ema).type == "cpu"
        return pipe.unet, [row["train_loss"] for row in result.history]

    def lora():
        pipe, z, cond = setup()
        cfg = LoraTrainConfig(steps=4, eval_every=2)
        result = train_lora(pipe.unet, pipe.scheduler, z, cond, z[:8], cond, cfg)
        return pipe.unet, [row["train_loss"] for row in result.history]

    def lcm():
        pipe, z, cond = setup()
        if device().type == "cuda":
            pipe.save_pretrained(tmp_path / "base")  # before the LoRA is added
        cfg = LcmTrainConfig(steps=4, eval_every=2, batch_size=8, rank=2, teacher_guidance=2.0)
        result = distill_lcm(pipe.unet, pipe.scheduler, z, z[:8], cond, cond, cfg)
        if device().type == "cuda":
            save_lora(pipe.unet, tmp_path / "lcm")
        return pipe.unet, [row["val_loss"] for row in result.history]

    for train in (vae, base, lora, lcm):
        assert_same_training(both_devices(train), rtol=0.02)

    samples = {}
    for name in ("cpu", "cuda"):
        use_device(name)
        pipe = load_variant(tmp_path / "base", {"lcm": (tmp_path / "lcm", 1.0)})
        assert pipe.unet.device.type == name
        pipe.set_progress_bar_config(disable=True)
        samples[name] = sample_images(
            pipe, "pneumonia", 2, 4, 1.0, seed=1, batch_size=2, resolution=16
        )
    use_device("cpu")
    # the same starting noise on both devices: the images match up to rounding
    diff = np.abs(samples["cuda"].astype(int) - samples["cpu"].astype(int))
    assert diff.mean() < 2.0, diff.mean()
