"""Run the classifier stage scripts' main() on tiny synthetic data in a temp dir."""

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests import tiny
from tests.conftest import REPO, offline_mirrors, stage_metrics


def stage_main(name):
    return runpy.run_path(str(REPO / "stages" / f"{name}.py"), run_name="stage")["main"]


def test_classifier_stages_chain_on_tiny_data(workdir):
    root, params = workdir
    paths = params["classifier"]["paths"]
    # The real pneumoniamnist checksums reject the synthetic file: use a toy checksum set.
    with pytest.raises(SystemExit) as exit_info:
        sys.argv = ["fetch_data.py", "pneumoniamnist"]
        from cxrlab.stage import run_stage

        run_stage(stage_main("fetch_data"))
    assert exit_info.value.code == 1
    assert not (root / "data/raw/pneumoniamnist").exists()

    target = root / paths["data"]
    target.parent.mkdir(parents=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", target)
    for stage in ("train_classifier", "evaluate_classifier", "classifier_retrieval"):
        stage_main(stage)()

    assert (root / paths["model"] / "model.safetensors").is_file()
    train = stage_metrics(root, paths["train_live"])
    assert train["best_epoch"] in (1, 2) and "best_val_auc" in train
    assert 0.1 < train["peak_rss_gb"] < 24  # what the run cost, in its metrics
    assert (root / paths["train_live"] / "plots/metrics/val/auc.tsv").is_file()
    ev = stage_metrics(root, paths["eval_live"])
    for block in ("test", "test_at_val_threshold"):
        assert ev[block]["tn"] + ev[block]["fp"] + ev[block]["fn"] + ev[block]["tp"] == 24
        assert 0 <= ev[block]["accuracy"] <= 1
    for plot in ("confusion_matrix", "roc", "precision_recall"):
        assert (root / paths["eval_live"] / f"plots/sklearn/test/{plot}.json").is_file()
    ret = stage_metrics(root, paths["retrieval_live"])
    assert set(ret["test"]) == {"precision_at_1", "precision_at_5", "precision_at_10"}
    for fig in paths["figures"].values():
        assert (root / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig


def test_unknown_param_stops_the_stage_with_one_line(workdir, capsys):
    root, params = workdir
    params["classifier"]["train"]["epochz"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from cxrlab.stage import run_stage

    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage_main("train_classifier"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: unknown param 'classifier.train.epochz'")
    assert "Traceback" not in "\n".join(err)


def test_an_unknown_smp_encoder_stops_the_stage_with_one_line_and_writes_nothing(workdir, capsys):
    root, params = workdir
    params["segmentation"]["model"]["encoder"] = "resnet1800"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from cxrlab.stage import run_stage

    with pytest.raises(SystemExit) as exit_info:
        run_stage(stage_main("train_segmenter"))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 1 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: segmentation.model.encoder 'resnet1800' is not an encoder")
    paths = params["segmentation"]["paths"]
    assert not (root / paths["model"]).exists() and not (root / paths["train_live"]).exists()


def test_clip_stages_chain_on_tiny_data(workdir):
    root, params = workdir
    paths = params["clip"]["paths"]
    target = root / paths["data"]
    target.parent.mkdir(parents=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", target)
    for stage in ("train_clip", "clip_label", "export_clip_subset"):
        stage_main(stage)()

    assert (root / paths["model"] / "open_clip_config.json").is_file()
    lines = (root / paths["labels"]).read_text().splitlines()
    assert lines[0] == "image_id,split,auto_label,ground_truth,confidence_score"
    assert len(lines) == 1 + 64 + 24 + 24
    metrics = stage_metrics(root, paths["label_live"])
    for split in ("train", "val", "test", "overall"):
        m = metrics[split]
        assert {"accuracy", "balanced_accuracy", "f1", "auc", "ece", "tn", "fp", "fn", "tp"} <= set(
            m
        )
        assert (
            root / paths["label_live"] / f"plots/sklearn/{split}/confusion_matrix.json"
        ).is_file()
    assert (
        metrics["overall"]["tn"]
        + metrics["overall"]["fp"]
        + metrics["overall"]["fn"]
        + metrics["overall"]["tp"]
        == 112
    )
    subset = root / paths["subset"]
    rows = [json.loads(line) for line in (subset / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all((subset / r["file_name"]).is_file() for r in rows)
    assert sorted({r["text"] for r in rows}) == sorted(params["clip"]["subset"]["text"].values())
    assert (root / paths["figures"]["confusion"]).read_bytes()[:4] == b"\x89PNG"


def random_lite0(root: Path) -> Path:
    """A weight file laid out as the fetched EfficientNet-Lite0's, random values."""
    import timm

    weights = root / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), weights)
    return weights


def test_lit_recipe_trains_on_the_caption_pairs_and_labels_zero_shot(workdir):
    """clip.recipe lit: train_clip reads the caption pairs, not PneumoniaMNIST's train
    split, and clip_label scores the result with and without val's labels."""
    from tests.lungseg_fixtures import write_covid, write_nih

    root, params = workdir
    cap, clip = params["captioning"], params["clip"]
    cap["paths"].update(covid=str(write_covid(root / "raw/covid_lungseg", n=8)),
                        nih=str(write_nih(root / "raw/nih_cxr14_sample", n=4)))  # fmt: skip
    cap["prepare"]["image_size"] = 32
    weights = random_lite0(root)
    clip["recipe"] = "lit"
    clip["lit"].update(embed_dim=16, image_weights=str(weights), image_size=32,
                       context_length=16)  # fmt: skip
    clip["lit"]["train"].update(epochs=1, batch_size=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    target = root / clip["paths"]["data"]
    target.parent.mkdir(parents=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", target)
    for stage in ("prepare_captions", "train_clip", "clip_label"):
        stage_main(stage)()

    model = root / clip["paths"]["model"]
    config = json.loads((model / "open_clip_config.json").read_text())["model_cfg"]
    assert config["vision_cfg"]["timm_model_name"] == "tf_efficientnet_lite0"
    assert (model / "tokenizer.json").is_file()
    pairs = (root / cap["paths"]["data"] / "captions.csv").read_text().count(",train\n")
    train = stage_metrics(root, clip["paths"]["train_live"])
    assert train["train"]["loss"] > 0 and pairs > 0
    metrics = stage_metrics(root, clip["paths"]["label_live"])
    for split, n in (("train", 64), ("val", 24), ("test", 24)):
        m = metrics[split]
        assert m["tn"] + m["fp"] + m["fn"] + m["tp"] == n
        assert 0 <= m["argmax_accuracy"] <= 1 and 0 <= m["argmax_tn"] <= n, split


def test_unknown_label_source_is_rejected_by_the_schema(workdir, capsys):
    root, params = workdir
    params["clip"]["subset"]["label_source"] = "llm"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    from cxrlab.stage import run_stage

    with pytest.raises(SystemExit):
        run_stage(stage_main("export_clip_subset"))
    assert (
        "param 'clip.subset.label_source' = 'llm' must be one of 'ground_truth', 'auto'"
        in capsys.readouterr().err
    )


def test_segmentation_and_cohort_stages_chain_on_tiny_data(workdir):
    from tests.lungseg_fixtures import write_covid, write_iu, write_landmarks, write_nih

    root, params = workdir
    src = {
        "covid_lungseg": write_covid(root / "raw/covid_lungseg", n=20),
        "nih_cxr14_sample": write_nih(root / "raw/nih"),
        "iu_xray_reports": write_iu(root / "raw/iu"),
        "cxr_landmarks": write_landmarks(root / "raw/landmarks"),
    }
    seg = params["segmentation"]
    seg["paths"].update(raw=str(src["covid_lungseg"]), nih=str(src["nih_cxr14_sample"]))
    seg["prepare"]["image_size"] = 32
    # the default encoder, its weights read from a file as from the fetched one
    seg["model"].update(encoder_depth=3, decoder_channels=[16, 8, 8],
                        encoder_weights=str(random_lite0(root)))  # fmt: skip
    seg["train"].update(epochs=2, batch_size=4)
    seg["eval"]["overlay_cases"] = 1
    params["cohort"]["paths"]["sources"] = {k: str(v) for k, v in src.items()}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in (
        "prepare_lungseg",
        "train_segmenter",
        "evaluate_segmenter",
        "measure_nih_lungs",
        "build_cohort_db",
        "analyze_cohort",
    ):
        stage_main(stage)()

    prep = stage_metrics(root, seg["paths"]["prepare_live"])
    assert prep["kept"] == 20 and prep["train"]["images"] + prep["test"]["images"] < 20
    ev = stage_metrics(root, seg["paths"]["eval_live"])
    assert 0 <= ev["test"]["dice"] <= 1 and ev["test"]["n"] == prep["test"]["images"]
    assert "dice" in ev["test"]["without_postprocess"] and "test_by_view" in ev
    per_image = (root / seg["paths"]["per_image"]).read_text().splitlines()
    assert len(per_image) == 21
    for fig in ("overlays", "dice_by_group", "nih_overlays", "training_curves"):
        assert (root / seg["paths"]["figures"][fig]).stat().st_size > 5_000
    cohort = params["cohort"]["paths"]
    built = stage_metrics(root, cohort["build_live"])
    assert built["rows"]["segmentation_scores"] == 20
    analysis = stage_metrics(root, cohort["analysis_live"])
    assert analysis["ctr_cardiomegaly_vs_others"]["n_a"] == 1  # the one Padchest image
    assert analysis["nih_lung_area_cm2_female_vs_male"]["n_a"] == 2
    summary = (root / cohort["summary"]).read_text()
    assert "Mann-Whitney" in summary and "| sex |" in summary
    for fig in cohort["figures"].values():
        assert (root / fig).read_bytes()[:4] == b"\x89PNG", fig


def diffusion_workdir(root, params):
    """Tiny diffusion params, the npz in place, a trained tiny classifier and a subset."""
    from cxrlab.classification.data import load_pneumoniamnist
    from cxrlab.generation.imagefolder import write_imagefolder

    d = params["diffusion"]
    d["model"].update(tiny.DIFFUSION_PARAMS)
    d["vae_train"].update(epochs=1, batch_size=16)
    d["base_train"].update(epochs=2, batch_size=16)
    d["lcm"].update(steps=3, eval_every=2, batch_size=8, rank=2)
    d["generate"].update(per_prompt=3, batch_size=3, grid_columns=3)
    d["generate"]["samplers"] = {"lcm": {"steps": 2}, "ddim": {"steps": 3, "guidance_scale": 2.0}}
    offline_mirrors()  # skips unless `make weights` fetched the FID Inception
    d["evaluate"]["inception"] = str(REPO / d["evaluate"]["inception"])
    params["lora"].update(steps=3, eval_every=2, batch_size=4, rank=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    target = root / d["paths"]["data"]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "mirror/pneumoniamnist/pneumoniamnist.npz", target)
    train = load_pneumoniamnist(target)["train"]
    text = params["clip"]["subset"]["text"]
    labels = ["normal", "pneumonia"] * 3
    write_imagefolder(
        root / d["paths"]["subset"], train.images[:6], [text[c] for c in labels],
        [f"{c}_{i}" for i, c in enumerate(labels)],
    )  # fmt: skip
    stage_main("train_classifier")()
    return d["paths"]


def test_diffusion_stages_chain_on_tiny_data(workdir, monkeypatch):
    root, params = workdir
    paths = diffusion_workdir(root, params)
    for stage in ("train_vae", "train_diffusion_base", "train_lcm_lora", "train_lora"):
        stage_main(stage)()
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(root / paths["base"])
    assert pipe.vae.config.scaling_factor != 1.0  # set from the latents' spread
    for lora in ("lcm_lora", "lora"):
        pipe.load_lora_weights(root / paths[lora], adapter_name=lora)
    generate = stage_main("generate_images")
    for variant in ("base", "lora"):
        monkeypatch.setattr(sys, "argv", ["generate_images.py", variant])
        generate()
    stage_main("evaluate_generation")()

    import numpy as np

    for variant in ("base", "lora"):
        speed = json.loads((root / paths["generated"] / variant / "speed.json").read_text())
        assert set(speed) == {"lcm", "ddim"} and speed["lcm"]["images_per_s"] > 0
    with np.load(root / paths["generated"] / "lora" / "lcm.npz") as npz:
        assert npz["images"].shape == (6, 16, 16) and npz["labels"].tolist() == [0] * 3 + [1] * 3
    with np.load(root / paths["generated"] / "base" / "lcm.npz") as npz:
        base = npz["images"]
    assert base.shape == (6, 16, 16)  # same seeds, and the LoRA changed the images:
    with np.load(root / paths["generated"] / "lora" / "lcm.npz") as npz:
        assert not np.array_equal(base, npz["images"])
    metrics = stage_metrics(root, paths["eval_live"])
    for sampler in ("lcm", "ddim"):
        for variant in ("base", "lora"):
            row = metrics[sampler][variant]
            assert row["domain_fid"] > 0 and row["inception_fid"] > 0, row
            assert {"domain_fid_matched", "domain_fid_normal", "domain_fid_pneumonia"} <= set(row)
            assert row["images_per_s"] > 0 and row["diversity"] > 0
    assert set(metrics["lcm_vs_ddim"]) >= {
        "speedup_base",
        "fid_ratio_lora",
        "inception_fid_ratio_lora",
    }
    assert metrics["reference"]["val_vs_test_inception_fid"] > 0
    assert metrics["reference"]["val_vs_test_fid"] >= 0
    kept = stage_metrics(root, paths["lora_live"])["kept"]
    assert kept["steps"] == params["lora"]["steps"] and kept["diverged"] == 0, kept
    for fig in paths["figures"].values():
        assert (root / fig).read_bytes()[:4] == b"\x89PNG", fig


def test_gpu_profile_path_loads_pretrained_pipeline_and_lcm_lora_by_path(workdir, tmp_path):
    """pretrained = a pipeline saved in hub layout: the stages pin it instead of training,
    copy the published LCM-LoRA, and train the LoRA on the pinned pipeline."""
    import torch
    from diffusers import StableDiffusionPipeline

    from cxrlab.core.config import from_dict
    from cxrlab.generation.config import DiffusionConfig
    from cxrlab.generation.model import add_lora, build_pipeline, load_pipeline, save_lora

    root, params = workdir
    paths = diffusion_workdir(root, params)
    hub = tmp_path / "hub"
    pretrained = build_pipeline(from_dict(DiffusionConfig, params["diffusion"]["model"]), seed=3)
    pretrained.save_pretrained(hub / "sd")
    add_lora(pretrained.unet, rank=2)
    with torch.no_grad():
        for name, p in pretrained.unet.named_parameters():
            if "lora_B" in name:
                p.normal_()
    save_lora(pretrained.unet, hub / "lcm")
    params["diffusion"]["pretrained"] = str(hub / "sd")
    params["diffusion"]["lcm"]["pretrained"] = str(hub / "lcm")
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("train_vae", "train_diffusion_base", "train_lcm_lora", "train_lora"):
        stage_main(stage)()

    for out in ("vae", "base"):  # a pin, not a copy: a local folder has no revision
        pin = json.loads((root / paths[out] / "pretrained.json").read_text())
        assert pin == {"source": str(hub / "sd"), "revision": None}
        assert len(list((root / paths[out]).iterdir())) == 1
    base = load_pipeline(root / paths["base"])
    original = StableDiffusionPipeline.from_pretrained(hub / "sd")
    for a, b in zip(base.unet.parameters(), original.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    lcm = root / paths["lcm_lora"] / "pytorch_lora_weights.safetensors"
    assert lcm.read_bytes() == (hub / "lcm" / "pytorch_lora_weights.safetensors").read_bytes()
    live = stage_metrics(root, paths["lcm_live"])
    assert live["trained_here"] == 0
    base.load_lora_weights(root / paths["lora"], adapter_name="lora")  # trained on the pin


def write_roco(root):
    """A ROCO-like folder: captions.txt and cuis.txt for validation and test."""
    rows = [
        ("chest radiograph shows cardiomegaly", ["C_CXR", "C_CARDIO"]),
        ("pleural effusion on chest radiograph", ["C_CXR", "C_EFF"]),
        ("ct of the abdomen", ["C_CT", "C_ABD"]),
    ] * 4
    for split in ("validation", "test"):
        folder = root / split / "radiology"
        folder.mkdir(parents=True)
        ids = [f"ROCO_{i:05d}" for i in range(len(rows))]
        (folder / "captions.txt").write_text(
            "".join(f"{i}\t {text}\n" for i, (text, _) in zip(ids, rows, strict=True))
        )
        (folder / "cuis.txt").write_text(
            "".join(f"{i}\t\t" + "\t".join(c) + "\n" for i, (_, c) in zip(ids, rows, strict=True))
        )
    return root


def test_captioning_stages_chain_on_tiny_data(workdir):
    import pandas as pd

    from tests.lungseg_fixtures import write_covid, write_nih

    root, params = workdir
    cap = params["captioning"]
    cap["paths"].update(
        roco=str(write_roco(root / "raw/roco")),
        covid=str(write_covid(root / "raw/covid_lungseg", n=16)),
        nih=str(write_nih(root / "raw/nih_cxr14_sample", n=6)),
    )
    cap["prepare"]["image_size"] = 32
    cap["model"].update(image_size=32, max_length=24)
    cap["model"]["vision"] = {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                              "intermediate_size": 64, "patch_size": 8}  # fmt: skip
    cap["model"]["text"] = {"init": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                            "intermediate_size": 64}  # fmt: skip
    cap["train"].update(epochs=2, batch_size=8)
    cap["decode"].update(max_new_tokens=8, batch_size=2)
    cap["concepts"].update(thresholds=[0.8], min_counts=[2])
    cap["evaluate"].update(meteor=False, examples=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("build_concept_mapper", "prepare_captions", "train_captioner",
                  "caption_images", "evaluate_captions"):  # fmt: skip
        stage_main(stage)()

    paths = cap["paths"]
    mapper = stage_metrics(root, paths["mapper_live"])
    assert mapper["roco_test_concept_f1"] == 1.0  # the test captions repeat the fitted ones
    pairs = pd.read_csv(root / paths["data"] / "captions.csv")
    pred = pd.read_csv(root / paths["predictions"], keep_default_na=False)
    assert list(pred["image"]) == list(pairs.loc[pairs["split"] == "test", "image"])
    metrics = stage_metrics(root, paths["eval_live"])
    for system in ("model", "baseline_most_frequent", "baseline_nearest_image"):
        row = metrics[system]
        assert {"bleu_4", "rouge_l", "cider", "concept_f1", "rouge2_f"} <= set(row)
        assert 0 <= row["bleu_4"] <= 1 and 0 <= row["concept_f1"] <= 1
    assert metrics["test_images"] == len(pred)
    concepts = root / paths["concepts"]
    for name in ("generated_names", "generated_cuis", "reference_names", "reference_cuis"):
        lines = (concepts / f"{name}.csv").read_text().splitlines()
        assert lines[0] == "ID,CUIs" and len(lines) == len(pred) + 1
    assert "Cardiomegaly" not in (concepts / "reference_cuis.csv").read_text()
    for fig in paths["figures"].values():
        assert (root / fig).read_bytes()[:4] == b"\x89PNG", fig
    # the partial file is gone once the table is written; a rerun writes the same table
    assert not list((root / paths["checkpoints"]).glob("caption_images*"))
    before = (root / paths["predictions"]).read_text()
    stage_main("caption_images")()
    assert (root / paths["predictions"]).read_text() == before
