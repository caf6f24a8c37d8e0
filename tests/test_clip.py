import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.classification.evaluate import binary_metrics, expected_calibration_error
from cxrlab.core.augment import AugmentConfig
from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.utils import seed_everything
from cxrlab.generation.imagefolder import METADATA_FILE, write_imagefolder
from cxrlab.labeling.config import ClipTrainConfig, LitConfig
from cxrlab.labeling.labels import COLUMNS, read_labels, select_balanced, write_labels
from cxrlab.labeling.model import build_clip, build_lit, load_clip, save_clip
from cxrlab.labeling.train import caption_classes, label_aware_clip_loss, train_clip
from cxrlab.labeling.zero_shot import (
    binary_logit,
    calibrate_and_label,
    class_embeddings,
    fit_scale,
    sigmoid,
)
from tests import tiny
from tests.conftest import assert_resume_gives_the_same_weights, write_npz

PROMPTS = {
    "normal": ["a normal chest x-ray", "clear lungs"],
    "pneumonia": ["pneumonia"],
}  # seen in training


def test_label_aware_loss_is_the_clip_loss_when_labels_differ():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.T
    target = torch.arange(6)
    clip = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert label_aware_clip_loss(img, txt, torch.arange(6), scale) == pytest.approx(
        clip.item(), rel=1e-5
    )


def test_label_aware_loss_rewards_same_class_alignment():
    base = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    img = base[labels]
    aligned = label_aware_clip_loss(img, base[labels], labels, torch.tensor(20.0))
    swapped = label_aware_clip_loss(img, base[1 - labels], labels, torch.tensor(20.0))
    assert aligned < 0.75 < swapped  # aligned reaches log(2): two equal positives per row


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CLIP trained a few epochs on the synthetic blob task."""

    path = write_npz(tmp_path_factory.mktemp("clip") / "d.npz", sizes=(128, 48, 48))
    splits = load_pneumoniamnist(path)
    seed_everything(0)
    bundle = build_clip(tiny.CLIP)
    cfg = ClipTrainConfig(
        epochs=6,
        batch_size=32,
        optim=tiny.optim(ClipTrainConfig, lr=3e-3),
        captions=tiny.CLIP_CAPTIONS,
        augment=AugmentConfig(shift=0.05),
    )
    result = train_clip(
        bundle,
        bundle.images_to_tensor(splits["train"].images),
        splits["train"].labels,
        list(CLASS_NAMES),
        cfg,
    )
    return bundle, splits, result.history


def test_interrupted_clip_training_resumes_to_the_same_weights(tmp_path):
    split = load_pneumoniamnist(write_npz(tmp_path / "d.npz"))["train"]
    cfg = ClipTrainConfig(epochs=3, batch_size=16, optim=tiny.optim(ClipTrainConfig, lr=3e-3),
                          captions=tiny.CLIP_CAPTIONS,
                          augment=AugmentConfig(shift=0.05))  # fmt: skip

    def fresh():
        torch.manual_seed(0)
        return build_clip(tiny.CLIP)

    def train(bundle, ckpt, on_epoch):
        x = bundle.images_to_tensor(split.images)
        train_clip(bundle, x, split.labels, list(CLASS_NAMES), cfg, ckpt, on_epoch)

    assert_resume_gives_the_same_weights(
        train, fresh, tmp_path / "clip.pt", weights=lambda bundle: bundle.model.state_dict()
    )


def test_training_learns_the_synthetic_task_and_labels_it(trained):
    bundle, splits, history = trained
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [row["epoch"] for row in history] == list(range(1, 7))
    assert all(row["train_logit_scale"] > 0 for row in history)
    text = class_embeddings(bundle, PROMPTS, list(CLASS_NAMES))
    margins = {
        s: binary_logit(bundle.encode_images(bundle.images_to_tensor(d.images)), text)
        for s, d in splits.items()
    }
    prob, scale, threshold = calibrate_and_label(margins, splits["val"].labels, True, "youden")
    assert scale > 0 and 0 <= threshold <= 1
    test = binary_metrics(splits["test"].labels, prob["test"], threshold)
    assert test["auc"] > 0.9 and test["tn"] > 0 and test["tp"] > 0


def test_local_dir_round_trip_through_open_clip(trained, tmp_path):
    bundle, splits, _ = trained
    save_clip(bundle, tmp_path / "clip")
    assert sorted(p.name for p in (tmp_path / "clip").iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    loaded = load_clip(f"local-dir:{tmp_path / 'clip'}")  # the same call that loads a hub id
    images = splits["test"].images[:5]
    x_orig, x_loaded = bundle.images_to_tensor(images), loaded.images_to_tensor(images)
    assert torch.allclose(x_orig, x_loaded)
    assert torch.allclose(bundle.encode_images(x_orig), loaded.encode_images(x_loaded), atol=1e-6)
    assert torch.allclose(
        bundle.encode_texts(["pneumonia"]), loaded.encode_texts(["pneumonia"]), atol=1e-6
    )


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="open_clip_config.json not found"):
        load_clip(f"local-dir:{tmp_path}")


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ({}, "prompts is empty"),
        ({"normal": [], "pneumonia": []}, "prompts is empty"),
        ({"normal": ["x"]}, "no prompt for class 'pneumonia'"),
    ],
)
def test_bad_prompt_lists(trained, prompts, message):
    with pytest.raises(ConfigError, match=message):
        class_embeddings(trained[0], prompts, list(CLASS_NAMES))


def test_training_needs_captions_for_every_class():
    bundle = build_clip(tiny.CLIP)
    cfg = ClipTrainConfig(epochs=1, captions={"normal": ["x"]})
    with pytest.raises(ConfigError, match="no caption for class 'pneumonia'"):
        train_clip(bundle, torch.zeros(2, 3, 28, 28), np.array([0, 1]), list(CLASS_NAMES), cfg)


def test_fit_scale_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    margin = rng.normal(0, 0.5, 20_000)
    labels = (rng.random(20_000) < sigmoid(6.0 * margin)).astype(int)
    assert fit_scale(margin, labels) == pytest.approx(6.0, rel=0.08)


def test_expected_calibration_error_hand_made():
    # All predicted positive with confidence 0.9, three of four right: |0.75 - 0.9| = 0.15.
    assert expected_calibration_error(np.array([1, 1, 1, 0]), np.full(4, 0.9)) == pytest.approx(
        0.15
    )
    # Two bins: conf 0.6 (1 of 2 right -> 0.1 gap) and conf 0.95 (2 of 2 right -> 0.05 gap).
    y, p = np.array([1, 0, 1, 0]), np.array([0.6, 0.6, 0.95, 0.05])
    assert expected_calibration_error(y, p, n_bins=5) == pytest.approx(0.5 * 0.1 + 0.5 * 0.05)


def labels_table(tmp_path):
    y = {"train": np.array([0, 1, 0, 1, 1, 0]), "val": np.array([0, 1])}
    p = {"train": np.array([0.1, 0.8, 0.6, 0.95, 0.99, 0.2]), "val": np.array([0.3, 0.7])}
    path = tmp_path / "labels.csv"
    assert write_labels(path, y, p, 0.5, CLASS_NAMES) == 8
    return path


def test_label_table_schema_and_values(tmp_path):
    rows = read_labels(labels_table(tmp_path))
    assert list(rows[0]) == list(COLUMNS)
    assert rows[2] == {
        "image_id": "train-00002",
        "split": "train",
        "auto_label": "pneumonia",
        "ground_truth": "normal",
        "confidence_score": pytest.approx(0.6),
    }
    assert rows[0]["confidence_score"] == pytest.approx(0.9)  # confidence of the predicted class


def test_label_table_missing_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("image_id,split\nx,train\n")
    with pytest.raises(DataError, match="lacks the columns auto_label"):
        read_labels(path)


def test_balanced_selection(tmp_path):
    rows = read_labels(labels_table(tmp_path))
    picked = select_balanced(rows, "train", 2, CLASS_NAMES, "ground_truth", seed=0)
    assert (
        sorted(picked) == sorted([(0, "normal"), (2, "normal"), (1, "pneumonia"), (3, "pneumonia")])
        or len(picked) == 4
    )
    assert [name for _, name in picked].count("normal") == 2
    assert all(rows[i]["ground_truth"] == name for i, name in picked)
    auto = select_balanced(rows, "train", 1, CLASS_NAMES, "auto", min_confidence=0.9, seed=0)
    assert {name for _, name in auto} == {"normal", "pneumonia"}
    assert all(rows[i]["confidence_score"] >= 0.9 and rows[i]["auto_label"] == n for i, n in auto)
    with pytest.raises(
        DataError, match="only 1 train images are labelled 'normal' by auto_label with confidence"
    ):
        select_balanced(rows, "train", 2, CLASS_NAMES, "auto", min_confidence=0.9)
    with pytest.raises(ConfigError, match="unknown label source 'llm'"):
        select_balanced(rows, "train", 2, CLASS_NAMES, "llm")


def test_imagefolder_layout(tmp_path):
    images = [np.full((28, 28), v, np.uint8) for v in (0, 128)]
    out = write_imagefolder(tmp_path / "subset", images, ["a", "b"], ["x0", "x1"])
    rows = [json.loads(line) for line in (out / METADATA_FILE).read_text().splitlines()]
    assert rows == [{"file_name": "x0.png", "text": "a"}, {"file_name": "x1.png", "text": "b"}]
    from PIL import Image

    assert np.asarray(Image.open(out / "x1.png")).tolist() == images[1].tolist()


def test_biomedclip_shaped_model_loads_through_the_same_path(tmp_path):
    """The gpu profile's BiomedCLIP is a timm ViT plus a Hugging Face BERT with its own
    tokenizer. A tiny model of that shape, saved in open_clip's local-dir layout, must load
    through load_clip and label images exactly like the in-memory model."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "tiny-biomedclip"
    folder.mkdir()
    words = ["a", "chest", "x", "-", "ray", "with", "pneumonia", "normal", "lungs"]
    (folder / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n"
    )
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    bert = BertConfig(
        vocab_size=len(words) + 5,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(bert).save_pretrained(folder)
    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "timm_model_name": "vit_tiny_patch16_224",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": str(folder),
            "hf_tokenizer_name": str(folder),
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 16,
        },
    }
    torch.manual_seed(0)
    model = open_clip.model.CustomTextCLIP(
        **model_cfg
    ).eval()  # what open_clip builds for HF text towers
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))

    bundle = load_clip(f"local-dir:{folder}")
    assert type(bundle.tokenizer).__name__ == "HFTokenizer"
    images = np.random.default_rng(0).integers(
        0, 255, (2, 28, 28), dtype=np.uint8
    )  # PneumoniaMNIST-sized
    x = bundle.images_to_tensor(images)
    assert x.shape == (2, 3, 224, 224)
    with torch.no_grad():
        expected = F.normalize(model.encode_image(x), dim=-1)
    assert torch.allclose(bundle.encode_images(x), expected, atol=1e-5)
    text = class_embeddings(
        bundle,
        {"normal": ["normal lungs"], "pneumonia": ["a chest x-ray with pneumonia"]},
        list(CLASS_NAMES),
    )
    assert text.shape == (2, 16)
    assert binary_logit(bundle.encode_images(x), text).shape == (2,)


def test_caption_classes_make_images_with_one_caption_positives():
    labels, names, captions = caption_classes(["b", "a", "b"])
    assert names == ["a", "b"] and labels.tolist() == [1, 0, 1]
    assert captions == {"a": ["a"], "b": ["b"]}


@pytest.fixture(scope="module")
def lit_weights(tmp_path_factory):
    """A random tf_efficientnet_lite0 state dict standing in for the fetched ImageNet file."""
    import timm

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("lit") / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), path)
    return path


def test_lit_trains_only_its_heads_and_round_trips_through_local_dir(lit_weights, tmp_path):
    """The LiT recipe: both pretrained towers stay as loaded (batch-norm statistics too),
    only the two heads and the temperature learn; the folder it saves loads through the same
    load_clip as BiomedCLIP, with the text tower's tokenizer read from the folder."""
    from cxrlab.captioning.model import minilm_dir
    from cxrlab.core.pretrained import timm_state

    cfg = LitConfig(embed_dim=16, image_weights=str(lit_weights), image_size=32,
                    context_length=16, train=ClipTrainConfig(epochs=2, batch_size=4))  # fmt: skip
    torch.manual_seed(0)
    bundle = build_lit(cfg, minilm_dir())
    trunk, text = bundle.model.visual.trunk, bundle.model.text.transformer
    loaded = timm_state("tf_efficientnet_lite0", lit_weights)
    assert all(torch.equal(v, loaded[k]) for k, v in trunk.state_dict().items())
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    images = np.random.default_rng(0).integers(0, 255, (8, 28, 28), dtype=np.uint8)
    labels, names, captions = caption_classes(
        ["PA chest radiograph. Cardiomegaly."] * 4 + ["AP chest radiograph. No abnormality."] * 4
    )
    x = bundle.images_to_tensor(images)
    train_clip(bundle, x, labels, names, cfg.train, captions=captions)

    after = bundle.model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"visual.head.proj.weight", "text.proj.weight", "logit_scale"}
    assert text.embeddings.word_embeddings.weight.requires_grad is False

    save_clip(bundle, tmp_path / "lit")
    files = {p.name for p in (tmp_path / "lit").iterdir()}
    assert {"open_clip_config.json", "open_clip_model.safetensors", "config.json",
            "tokenizer.json", "vocab.txt"} <= files  # fmt: skip
    config = json.loads((tmp_path / "lit" / "open_clip_config.json").read_text())
    text_cfg = config["model_cfg"]["text_cfg"]
    assert text_cfg["hf_model_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    reloaded = load_clip(f"local-dir:{tmp_path / 'lit'}")
    assert type(reloaded.tokenizer).__name__ == "HFTokenizer"
    x_reloaded = reloaded.images_to_tensor(images)
    assert torch.allclose(x, x_reloaded)
    assert torch.allclose(bundle.encode_images(x), reloaded.encode_images(x_reloaded), atol=1e-5)
    texts = ["a chest x-ray with pneumonia", "a normal chest x-ray"]
    assert torch.allclose(bundle.encode_texts(texts), reloaded.encode_texts(texts), atol=1e-5)


def test_lit_needs_a_text_tower_folder_and_weights_of_its_arch(lit_weights, tmp_path):
    with pytest.raises(DataError, match="is not a text tower folder: model.safetensors"):
        build_lit(LitConfig(image_size=32), tmp_path)
    from cxrlab.captioning.model import minilm_dir

    with pytest.raises(DataError, match="does not hold tf_efficientnet_lite1 weights"):
        build_lit(LitConfig(image_arch="tf_efficientnet_lite1", image_weights=str(lit_weights),
                            image_size=32), minilm_dir())  # fmt: skip
