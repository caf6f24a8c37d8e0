"""Captioning: caption data, tiny BLIP and LLaVA, decoding, resume, metrics, concepts."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab.captioning.concepts import ConceptMapper, tune_mapper, write_concept_csvs
from cxrlab.captioning.config import (
    CaptionDataConfig,
    CaptionerConfig,
    CaptionTrainConfig,
    MapperConfig,
)
from cxrlab.captioning.data import (
    build_caption_pairs,
    check_captions,
    load_pair_images,
    nih_findings,
    note_sentence,
)
from cxrlab.captioning.evaluate import (
    CaptionScorer,
    concept_f1,
    most_frequent_caption,
    nearest_train_captions,
    normalize_caption,
)
from cxrlab.captioning.model import (
    DEFAULT_LORA_TARGETS,
    add_lora,
    build_captioner,
    caption_forward,
    encode_captions,
    generate_captions,
    load_captioner,
    load_kwargs,
    load_minilm_decoder,
    minilm_dir,
    pixel_values,
    quantization_config,
    save_captioner,
)
from cxrlab.captioning.train import train_captioner
from cxrlab.core.augment import AugmentConfig
from cxrlab.core.config import from_dict
from cxrlab.core.errors import ConfigError, DataError
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.utils import resumable_map
from tests import tiny

# --- caption data -----------------------------------------------------------------------


def test_note_sentence_keeps_the_first_radiograph_sentence_and_cuts_it():
    notes = (
        "Fever for 3 days. CT showed ground-glass opacities. CRP 40 mg/l with 90% saturation "
        "and lung opacity. Bilateral patchy opacities in the lower zones of both lungs."
    )
    assert (
        note_sentence(notes, 30) == "Bilateral patchy opacities in the lower zones of both lungs."
    )
    assert note_sentence(notes, 3) == "Bilateral patchy opacities."
    assert note_sentence(float("nan"), 30) == ""


def test_nih_findings_become_one_sentence():
    assert nih_findings("No Finding") == "No acute cardiopulmonary abnormality."
    assert nih_findings("Cardiomegaly") == "Cardiomegaly."
    assert nih_findings("Atelectasis|Cardiomegaly|Effusion") == (
        "Atelectasis, cardiomegaly and pleural effusion."
    )
    with pytest.raises(DataError, match="Foo"):
        nih_findings("Foo")


@pytest.fixture
def caption_sources(tmp_path):
    from tests.lungseg_fixtures import write_covid, write_nih

    covid = write_covid(tmp_path / "raw/covid_lungseg", n=12)
    meta = pd.read_csv(covid / "metadata.csv")
    meta["clinical_notes"] = "Cough. Patchy opacity in the right lower zone."
    meta.to_csv(covid / "metadata.csv", index=False)
    write_nih(tmp_path / "raw/nih_cxr14_sample", n=4)
    return tmp_path / "raw"


def test_caption_pairs_from_sources_split_by_patient(caption_sources):
    pairs = build_caption_pairs(caption_sources, CaptionDataConfig(image_size=32))
    assert len(pairs) == 16 and set(pairs["split"]) <= {"train", "val", "test"}
    assert pairs.groupby("patient")["split"].nunique().max() == 1
    covid = pairs[pairs["source"] == "covid_lungseg"]["caption"]
    assert covid.str.endswith("Patchy opacity in the right lower zone.").all()
    assert covid.str.contains("COVID-19 pneumonia").all()
    nih = pairs[pairs["source"] == "nih_cxr14_sample"]["caption"].tolist()
    assert "PA chest radiograph. Cardiomegaly and pleural effusion." in nih
    images = load_pair_images(pairs, caption_sources, 32)
    assert images.shape == (16, 32, 32) and images.dtype == np.uint8


def test_max_per_split_draws_a_seeded_subset_of_each_split(caption_sources):
    full = build_caption_pairs(caption_sources, CaptionDataConfig())
    few = build_caption_pairs(caption_sources, CaptionDataConfig(max_per_split=2))
    counts = few["split"].value_counts()
    assert (counts == full["split"].value_counts().clip(upper=2)).all(), counts
    assert set(few["image"]) <= set(full["image"])
    again = build_caption_pairs(caption_sources, CaptionDataConfig(max_per_split=2))
    assert few.equals(again)  # the same draw every run
    other = build_caption_pairs(caption_sources, CaptionDataConfig(max_per_split=2, seed=1))
    assert not few["image"].equals(other["image"])


def test_empty_caption_and_image_without_text_are_rejected():
    pairs = pd.DataFrame({"image": ["a.png", "b.png"], "caption": ["PA.", "  "], "split": "train"})
    with pytest.raises(DataError, match="b.png has an empty caption"):
        check_captions(pairs, "captions.csv")
    pairs.loc[1, "caption"] = None
    with pytest.raises(DataError, match="b.png"):
        check_captions(pairs, "captions.csv")
    with pytest.raises(DataError, match="lacks the column 'caption'"):
        check_captions(pairs.drop(columns="caption"), "captions.csv")


def test_corrupt_image_is_named(caption_sources):
    pairs = build_caption_pairs(caption_sources, CaptionDataConfig())
    bad = caption_sources / pairs["image"].iloc[3]
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match=bad.name):
        load_pair_images(pairs, caption_sources, 32)


def test_unknown_model_family_is_a_config_error():
    with pytest.raises(ConfigError, match="family is 'gpt'; expected one of blip, llava"):
        from_dict(CaptionerConfig, {"family": "gpt"}, "captioning.model")


def test_selecting_by_a_caption_score_needs_val_captions_every_epoch():
    with pytest.raises(ConfigError, match="val_captions_every must be 1, not 3"):
        CaptionTrainConfig(select="val_cider", val_captions_every=3)
    assert CaptionTrainConfig(select="val_loss", val_captions_every=3).val_captions_every == 3


# --- models -------------------------------------------------------------------------


def test_blip_decoder_starts_from_minilm_weights():
    from safetensors.torch import load_file

    cfg = CaptionerConfig(image_size=32, vision=tiny.CAPTION_VISION)  # text.init defaults to minilm
    model = build_captioner(cfg).model
    mini = load_file(minilm_dir() / "model.safetensors")
    dec = model.state_dict()
    for key in ("encoder.layer.5.attention.self.query.weight", "embeddings.word_embeddings.weight"):
        assert torch.equal(dec[f"text_decoder.bert.{key}"], mini[key])
    # token type 0 is folded into the positions; the output layer is tied to the words
    pos = (
        mini["embeddings.position_embeddings.weight"]
        + mini["embeddings.token_type_embeddings.weight"][0]
    )
    assert torch.allclose(dec["text_decoder.bert.embeddings.position_embeddings.weight"], pos)
    assert load_minilm_decoder(model) == 100  # every MiniLM tensor but the pooler and token types


@pytest.mark.parametrize("family", ["blip", "llava"])
def test_tiny_captioner_learns_saves_and_reloads_to_identical_logits(family, tmp_path):
    torch.manual_seed(0)
    captioner = build_captioner(tiny.captioner(family))
    images, texts = tiny.caption_images(), [tiny.CAPTIONS[i % 2] for i in range(8)]
    cfg = CaptionTrainConfig(
        epochs=60,
        batch_size=8,
        optim=tiny.optim(CaptionTrainConfig, lr=3e-2),
        augment=AugmentConfig(),
        align_weight=0.5,
        val_captions_every=25,
    )
    history = train_captioner(captioner, (images, texts), (images, texts), cfg).history
    assert history[-1]["val_loss"] < 0.1 * history[0]["val_loss"]
    # greedy val captions at epochs 25, 50 and the last only; the loss every epoch
    assert [row["epoch"] for row in history if "val_cider" in row] == [25, 50, 60]
    assert plot_training_curves(history, tmp_path / "curves.png").stat().st_size > 0
    assert not hasattr(captioner.model, "align_head")  # a training-only head
    save_captioner(captioner, tmp_path / "cap")
    reloaded = load_captioner(tmp_path / "cap")
    x = pixel_values(captioner, images[:2])
    batch = encode_captions(captioner, tiny.CAPTIONS)
    captioner.model.eval()
    with torch.no_grad():
        a = captioner.model(pixel_values=x, **batch).logits
        b = reloaded.model(pixel_values=x, **batch).logits
    assert torch.equal(a, b)
    out = generate_captions(reloaded, x, num_beams=3, max_new_tokens=12, no_repeat_ngram_size=3)
    assert out == generate_captions(captioner, x, 3, 12, 3)
    # the caption language is learned: no word from outside the two captions
    vocabulary = set(normalize_caption(" ".join(tiny.CAPTIONS)).split())
    for caption in out:
        assert len(caption.split()) >= 4 and set(normalize_caption(caption).split()) <= vocabulary


@pytest.mark.parametrize("family", ["blip", "llava"])
def test_caption_forward_returns_one_feature_vector_per_image(family):
    """BLIP: the ViT's tokens pooled; LLaVA: the projected patch tokens the LM reads, pooled."""
    torch.manual_seed(0)
    captioner = build_captioner(tiny.captioner(family))
    x = pixel_values(captioner, tiny.caption_images(3))
    captioner.model.eval()
    with torch.no_grad():
        loss, features = caption_forward(captioner, x, [tiny.CAPTIONS[0]] * 3)
        if family == "blip":
            tokens = captioner.model.vision_model(pixel_values=x).last_hidden_state
        else:  # LLaVA's default strategy drops the CLS token, then projects into the LM
            llava = captioner.model.model
            hidden = llava.vision_tower(pixel_values=x, output_hidden_states=True)
            tokens = llava.multi_modal_projector(hidden.hidden_states[-1][:, 1:])
    width = tiny.CAPTION_VISION.hidden_size if family == "blip" else tiny.CAPTION_TEXT.hidden_size
    assert loss.ndim == 0 and features.shape == (3, width)
    assert torch.allclose(features, tokens.mean(dim=1), atol=1e-6)


def test_llava_loss_from_the_caption_logits_only_equals_the_full_loss():
    """caption_forward keeps the logits of the caption positions: same loss, same gradients
    as the model's own loss over every position, for captions of different lengths."""
    from cxrlab.captioning.model import encode_captions

    torch.manual_seed(0)
    captioner = build_captioner(tiny.captioner("llava"))
    captioner.model.eval()  # no dropout: the two passes see the same network
    x = pixel_values(captioner, tiny.caption_images(2))
    texts = [tiny.CAPTIONS[0], tiny.CAPTIONS[1] + " and more words at the end"]
    results = []
    for trimmed in (True, False):
        captioner.model.zero_grad()
        if trimmed:
            loss = caption_forward(captioner, x, texts)[0]
        else:
            loss = captioner.model(pixel_values=x, **encode_captions(captioner, texts)).loss
        loss.backward()
        grads = [p.grad for p in captioner.model.parameters() if p.grad is not None]
        results.append((loss.detach(), [g.clone() for g in grads]))
    (trimmed, trimmed_grads), (full, full_grads) = results
    torch.testing.assert_close(trimmed, full)
    assert len(trimmed_grads) > 10
    for a, b in zip(trimmed_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_llava_default_lora_targets_adapt_the_language_model_only():
    """LLaMA's q/k/v/o and MLP projections get adapters; the CLIP tower's q/k/v_proj not."""
    torch.manual_seed(0)
    captioner = build_captioner(tiny.captioner("llava"))
    add_lora(captioner, rank=2, alpha=4)  # targets: the family's default
    trainable = [n for n, p in captioner.model.named_parameters() if p.requires_grad]
    assert trainable and all("language_model" in n and "lora_" in n for n in trainable)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f".{proj}.lora_A" in n for n in trainable), proj
    assert DEFAULT_LORA_TARGETS["blip"] == ["query", "value"]


def test_llava_prompt_follows_the_tokenizers_chat_template():
    """LLaMA-3 style: header tokens from the template, the image tokens where <image> was,
    the caption after the assistant header, ended by the tokenizer's eos token."""
    captioner = build_captioner(tiny.captioner("llava"))
    tok = captioner.tokenizer
    plain = encode_captions(captioner, tiny.CAPTIONS[:1])["input_ids"][0].tolist()
    n = captioner.num_image_tokens
    image_id = tok.convert_tokens_to_ids("<image>")
    assert plain[: n + 1] == [image_id] * n + [tok.cls_token_id] and plain[-1] == tok.sep_token_id
    heads = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok.add_special_tokens({"additional_special_tokens": ["<image>", *heads]})
    tok.eos_token = "<|eot_id|>"
    tok.chat_template = (
        "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}"
    )
    enc = encode_captions(captioner, tiny.CAPTIONS[:1])
    ids, labels = enc["input_ids"][0].tolist(), enc["labels"][0].tolist()
    text = tok.decode(ids)
    assert text.startswith("<|begin_of_text|> <|start_header_id|> user <|end_header_id|>")
    first = ids.index(image_id)
    assert ids[first : first + n] == [image_id] * n and ids.count(image_id) == n
    assert "assistant <|end_header_id|> pa chest radiograph" in text
    assert ids[-1] == tok.convert_tokens_to_ids("<|eot_id|>")
    caption = len(tok(tiny.CAPTIONS[0], add_special_tokens=False)["input_ids"]) + 1
    assert all(v == -100 for v in labels[:-caption]) and labels[-caption:] == ids[-caption:]


def test_llava_system_turn_replaces_the_templates_default():
    """SmolLM2's template adds its own system turn when none is given; ``system`` sets it."""
    captioner = build_captioner(tiny.captioner("llava"))
    tok = captioner.tokenizer
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<|im_start|>", "<|im_end|>"]})
    tok.chat_template = (
        "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}"
        "<|im_start|>system\nyou are a helpful assistant<|im_end|>\n{% endif %}"
        "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    prefixes = {}
    for system in (None, "", "you read chest films"):
        captioner.cfg = dataclasses.replace(captioner.cfg, system=system)
        ids = encode_captions(captioner, tiny.CAPTIONS[:1])["input_ids"][0]
        prefixes[system] = tok.decode(ids)
    assert "helpful assistant" in prefixes[None]
    assert "helpful" not in prefixes[""]
    assert prefixes[""].startswith("<|im_start|> system <|im_end|>")
    assert "you read chest films" in prefixes["you read chest films"]
    assert all(p.count("<|im_start|> system") == 1 for p in prefixes.values())


def test_4bit_loading_is_qlora_nf4_on_the_gpu_only():
    q = quantization_config()
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    # unquantised: the files' dtype, then fp32 (see ..._loads_a_pretrained_blip_by_path)
    assert load_kwargs(tiny.captioner("llava")) == {"dtype": "auto"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="load_in_4bit needs a CUDA GPU"):
            load_kwargs(tiny.captioner("llava", load_in_4bit=True))


@pytest.mark.parametrize("family", ["blip", "llava"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(family):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        captioner = build_captioner(tiny.captioner(family))
        model = captioner.model
        if checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model.train()
        torch.manual_seed(1)  # the same dropout masks in both runs
        loss = caption_forward(
            captioner, pixel_values(captioner, tiny.caption_images(2)), tiny.CAPTIONS
        )[0]
        loss.backward()
        grads.append(
            (loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
        )
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    assert len(grads[0][1]) == len(grads[1][1])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_llava_lora_trains_only_the_adapter_and_reloads_identically(tmp_path):
    torch.manual_seed(0)
    captioner = build_captioner(tiny.captioner("llava"))
    before = {k: v.clone() for k, v in captioner.model.state_dict().items()}
    cfg = CaptionTrainConfig(finetune="lora", lora_rank=4, lora_targets=["q_proj", "v_proj"],
                             epochs=2, batch_size=4, optim=tiny.optim(CaptionTrainConfig, lr=1e-2),
                             augment=AugmentConfig())  # fmt: skip
    images, texts = tiny.caption_images(), [tiny.CAPTIONS[i % 2] for i in range(8)]
    train_captioner(captioner, (images, texts), (images, texts), cfg)
    model = captioner.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base = model.get_base_model().state_dict()
    for key, value in before.items():  # frozen weights did not move
        assert torch.equal(base[key.replace("q_proj.", "q_proj.base_layer.")
                                .replace("v_proj.", "v_proj.base_layer.")], value)  # fmt: skip
    save_captioner(captioner, tmp_path / "cap")
    assert (tmp_path / "cap/adapter/adapter_config.json").is_file()
    _assert_reload_gives_the_same_logits(captioner, tmp_path / "cap", images)


def _assert_reload_gives_the_same_logits(captioner, directory, images):
    """The captioner saved in ``directory`` reloads to the same logits on ``images``."""
    reloaded = load_captioner(directory)
    x, batch = pixel_values(captioner, images[:2]), encode_captions(captioner, tiny.CAPTIONS)
    captioner.model.eval()
    with torch.no_grad():
        assert torch.equal(captioner.model(pixel_values=x, **batch).logits,
                           reloaded.model(pixel_values=x, **batch).logits)  # fmt: skip


def test_beam_search_is_deterministic_and_bounded():
    torch.manual_seed(0)
    captioner = build_captioner(tiny.captioner("blip"))
    x = pixel_values(captioner, tiny.caption_images(3))
    a = generate_captions(captioner, x, num_beams=3, max_new_tokens=5)
    b = generate_captions(captioner, x, num_beams=3, max_new_tokens=5)
    assert a == b and len(a) == 3
    assert all(len(t.split()) <= 5 for t in a)  # a word is at least one token


def test_gpu_profile_loads_a_pretrained_blip_by_path(tmp_path):
    """pretrained = a BLIP saved in hub layout with its processor, as the hub serves it.

    In fp16, as LLaVA-LLaMA-3 is published: it loads as fp32 weights (the same values), and
    a fine-tune saved from it reloads as fp32 too.
    """
    from transformers import BlipImageProcessor, BlipProcessor

    torch.manual_seed(0)
    built = build_captioner(dataclasses.replace(tiny.captioner("blip"), image_size=48))
    built.model.half().save_pretrained(tmp_path / "hub")
    published = {k: v.float() for k, v in built.model.state_dict().items()}
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 48, "width": 48}),
        tokenizer=built.tokenizer,
    )
    processor.save_pretrained(tmp_path / "hub")
    loaded = build_captioner(tiny.captioner("blip", pretrained=str(tmp_path / "hub")))  # says 32 px
    assert loaded.cfg.image_size == 48 and loaded.image_mean == list(
        processor.image_processor.image_mean
    )
    x = pixel_values(loaded, tiny.caption_images(2))
    assert x.shape == (2, 3, 48, 48)
    assert len(generate_captions(loaded, x, num_beams=2, max_new_tokens=4)) == 2
    save_captioner(loaded, tmp_path / "finetuned")
    for model in (loaded.model, load_captioner(tmp_path / "finetuned").model):
        state = model.state_dict()
        assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
        assert all(torch.equal(state[k], v) for k, v in published.items())


def test_a_pretrained_llava_keeps_its_token_table_as_published(tmp_path):
    """fp16 files, as LLaVA-LLaMA-3's: every weight loads as fp32 but the token table,
    which stays fp16 (half its memory). Loss and gradients equal the model made fp32 whole."""
    from transformers import LlavaForConditionalGeneration

    from cxrlab.captioning.model import _from_pretrained

    torch.manual_seed(0)
    built = build_captioner(tiny.captioner("llava"))
    built.model.half().save_pretrained(tmp_path)
    cfg = tiny.captioner("llava", pretrained=str(tmp_path))
    lean = _from_pretrained(LlavaForConditionalGeneration, tmp_path, cfg)
    whole = LlavaForConditionalGeneration.from_pretrained(tmp_path, dtype="auto").float()
    table = lean.get_input_embeddings().weight
    assert table.dtype == torch.float16
    assert {p.dtype for p in lean.parameters() if p is not table} == {torch.float32}
    x = pixel_values(built, tiny.caption_images(2)).float()
    batch = encode_captions(built, tiny.CAPTIONS)
    runs = []
    for model in (lean, whole):
        model.get_input_embeddings().requires_grad_(False)  # frozen, as under LoRA
        loss = model(pixel_values=x, **batch).loss
        loss.backward()
        runs.append((loss, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_lean, grads_lean), (loss_whole, grads_whole) = runs
    assert torch.equal(loss_lean, loss_whole)
    assert len(grads_lean) > 10 and grads_lean.keys() == grads_whole.keys()
    assert all(torch.equal(grads_lean[n], grads_whole[n]) for n in grads_lean)


def _composed(tmp_path, **kw):
    """The cpu LLaVA's shape: a pretrained CNN tower and a pretrained LM (both tiny here)."""
    weights = tmp_path / "lite0.pth"
    if not weights.is_file():
        import timm

        torch.manual_seed(1)
        torch.save(timm.create_model("tf_efficientnet_lite0").state_dict(), weights)
    lm = tmp_path / "lm"
    if not lm.is_dir():
        tiny.pretrained_lm(lm)
    return dataclasses.replace(
        tiny.captioner("llava", **kw), image_size=64,
        vision=dataclasses.replace(tiny.CAPTION_VISION, arch="tf_efficientnet_lite0",
                                   weights=str(weights)),
        text=dataclasses.replace(tiny.CAPTION_TEXT, init="pretrained", weights=str(lm)),
    )  # fmt: skip


def test_a_llava_composed_from_pretrained_parts_starts_from_their_weights(tmp_path):
    """The LM's weights and tokenizer (with its chat template), the CNN's last feature map as
    image tokens (64 px / stride 32 = 4), a new projector: the cpu profile's LLaVA."""
    from transformers import AutoModelForCausalLM

    from cxrlab.core.pretrained import timm_encoder

    torch.manual_seed(0)
    captioner = build_captioner(_composed(tmp_path))
    llava = captioner.model.eval().model
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    assert captioner.num_image_tokens == 4 and captioner.cfg.vision.patch_size == 32
    assert torch.equal(llava.language_model.layers[0].self_attn.q_proj.weight,
                       lm.model.layers[0].self_attn.q_proj.weight)  # fmt: skip
    rows = lm.get_input_embeddings().weight  # one row more: <image>
    assert torch.equal(llava.language_model.embed_tokens.weight[: len(rows)], rows)
    cnn = timm_encoder("tf_efficientnet_lite0", tmp_path / "lite0.pth").eval()
    x = pixel_values(captioner, tiny.caption_images(2))
    with torch.no_grad():
        tokens = llava.vision_tower(pixel_values=x).last_hidden_state
        assert torch.equal(tokens, cnn.forward_features(x).flatten(2).transpose(1, 2))
    ids = encode_captions(captioner, tiny.CAPTIONS[:1])["input_ids"][0].tolist()
    assert captioner.tokenizer.decode(ids).startswith("<|begin_of_text|><|start_header_id|>user")


def test_a_composed_llava_lora_trains_adapter_and_projector_and_reloads_from_its_sources(
    tmp_path,
):
    """q/v LoRA plus the projector in full; the CNN keeps its batch-norm statistics; the
    saved folder holds no base weights, and reloading rebuilds the base from the files."""
    torch.manual_seed(0)
    captioner = build_captioner(_composed(tmp_path))
    before = {k: v.clone() for k, v in captioner.model.state_dict().items()}
    cfg = CaptionTrainConfig(finetune="lora", lora_rank=4, epochs=2, batch_size=4,
                             optim=tiny.optim(CaptionTrainConfig, lr=1e-2),
                             lora_targets=r".*language_model.*\.(q_proj|v_proj)",
                             lora_modules_to_save=["multi_modal_projector"],
                             augment=AugmentConfig())  # fmt: skip
    images, texts = tiny.caption_images(), [tiny.CAPTIONS[i % 2] for i in range(8)]
    train_captioner(captioner, (images, texts), (images, texts), cfg)
    model = captioner.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("projector" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    base = model.get_base_model().state_dict()
    for key, value in before.items():
        if "vision_tower" in key:  # weights and running statistics alike
            assert torch.equal(base[key], value), key
    save_captioner(captioner, tmp_path / "cap")
    assert not (tmp_path / "cap/model.safetensors").exists()
    _assert_reload_gives_the_same_logits(captioner, tmp_path / "cap", images)


def test_the_saved_captioner_is_the_same_offline_and_online(tmp_path):
    """HF_HUB_OFFLINE=1 (make sets it) adds local_files_only to the tokenizer's init
    arguments; the saved tokenizer files must not depend on it."""
    captioner = build_captioner(_composed(tmp_path))
    saved = []
    for offline in (True, False):
        captioner.tokenizer.init_kwargs["local_files_only"] = offline
        save_captioner(captioner, tmp_path / f"cap-{offline}")
        saved.append((tmp_path / f"cap-{offline}/tokenizer_config.json").read_text())
    assert saved[0] == saved[1] and "local_files_only" not in saved[0]


def test_a_composed_llava_with_bad_parts_fails_in_one_sentence(tmp_path):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF but not really")
    broken = str(tmp_path / "broken.gguf")
    for weights, match in [(None, "text.weights is None: no such file"),
                           (broken, "does not load as a causal LM")]:  # fmt: skip
        text = dataclasses.replace(tiny.CAPTION_TEXT, init="pretrained", weights=weights)
        cfg = dataclasses.replace(tiny.captioner("llava"), text=text)
        with pytest.raises(DataError, match=match):
            build_captioner(cfg)
    captioner = build_captioner(tiny.captioner("llava"))
    with pytest.raises(ConfigError, match="lora_targets 'nothing_here' match no module"):
        add_lora(captioner, 2, 4, "nothing_here")


# --- resumable batch inference --------------------------------------------------------------


def test_interrupted_batch_inference_resumes_without_duplicates_or_gaps(tmp_path):
    keys = [f"img{i}" for i in range(10)]
    calls = []

    def fn(batch, fail_after=None):
        calls.extend(batch)
        if fail_after is not None and len(calls) > fail_after:
            raise KeyboardInterrupt
        return [k.upper() for k in batch]

    path = tmp_path / "partial.jsonl"
    with pytest.raises(KeyboardInterrupt):
        resumable_map(keys, lambda b: fn(b, fail_after=5), path, "run1", batch_size=3)
    with path.open("a") as f:
        f.write('{"key": "img9", "val')  # a torn line from the kill
    calls.clear()
    out = resumable_map(keys, fn, path, "run1", batch_size=3)
    assert calls == keys[3:]  # the first batch was done, the second was lost with the kill
    assert out == {k: k.upper() for k in keys}
    rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]
    assert [r["key"] for r in rows] == keys
    calls.clear()
    resumable_map(keys, fn, path, "run2", batch_size=4)  # another model: start over
    assert calls == keys


# --- metrics --------------------------------------------------------------------------


def test_caption_metrics_on_hand_made_pairs():
    scorer = CaptionScorer(meteor=False)
    same = scorer.score(
        ["PA chest radiograph. Cardiomegaly."] * 2, ["pa chest radiograph cardiomegaly"] * 2
    )
    assert same["bleu_4"] == pytest.approx(1.0, abs=1e-6) and same["rouge_l"] == pytest.approx(1.0)
    assert same["rouge1_f"] == pytest.approx(1.0)
    disjoint = scorer.score(["a b c d"], ["w x y z"])
    assert disjoint["bleu_1"] == pytest.approx(0.0, abs=1e-6) and disjoint["cider"] == 0
    assert disjoint["rougeL_f"] == 0
    half = scorer.score(["left lower lobe opacity"], ["left lower zone effusion"])
    assert half["bleu_1"] == pytest.approx(0.5, abs=1e-6) and half["rouge1_f"] == pytest.approx(0.5)
    assert half["rouge_l"] == pytest.approx(0.5)
    empty = scorer.score(["left lower lobe"], [""])
    assert empty["bleu_1"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(DataError, match="reference caption 0 is empty"):
        scorer.score([" . "], ["x"])
    with pytest.raises(DataError, match="1 generated captions for 2 references"):
        scorer.score(["a", "b"], ["a"])


@pytest.mark.slow
def test_meteor_runs_offline_and_orders_captions():
    scorer = CaptionScorer(meteor=True)
    refs = ["bilateral opacities in the lower zones", "cardiomegaly and pleural effusion"]
    good = scorer.score(refs, refs)["meteor"]
    bad = scorer.score(refs, ["normal heart size", "clear lungs"])["meteor"]
    assert good > 0.9 and bad < 0.2


def test_baselines():
    assert most_frequent_caption(["a", "b", "b", "c"]) == "b"
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    query = np.array([[0.1, 0.9], [0.9, 0.2]])
    assert nearest_train_captions(train, ["x", "y"], query) == ["y", "x"]


# --- concepts --------------------------------------------------------------------------

ROCO_LIKE = [
    ("chest x-ray shows cardiomegaly", {"C_CXR", "C_CARDIO"}),
    ("cardiomegaly on chest x-ray", {"C_CXR", "C_CARDIO"}),
    ("chest x-ray with pleural effusion", {"C_CXR", "C_EFF"}),
    ("pleural effusion on the left", {"C_EFF", "C_LEFT"}),
    ("ct of the left kidney", {"C_CT", "C_LEFT", "C_KID"}),
    ("ct shows a kidney cyst", {"C_CT", "C_KID"}),
    ("cardiomegaly seen on ct", {"C_CARDIO", "C_CT"}),
]


def test_mapper_learns_terms_from_a_hand_made_table(tmp_path):
    mapper = ConceptMapper.fit(ROCO_LIKE, threshold=0.9, min_count=2)
    assert mapper("Cardiomegaly and pleural effusion.") == ["C_CARDIO", "C_EFF"]
    assert mapper("Chest X-ray.") == ["C_CXR"]
    assert mapper.name("C_CARDIO") == "cardiomegaly" and mapper.name("C_EFF") == "pleural effusion"
    assert mapper("on") == []  # seen with many CUIs, none often enough
    assert mapper("COVID-19 pneumonia") == ["C5203670"]  # the hand-written finding table
    mapper.save(tmp_path / "m.json")
    assert ConceptMapper.load(tmp_path / "m.json")("left kidney") == mapper("left kidney")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a concept mapper"):
        ConceptMapper.load(tmp_path / "bad.json")


def test_concept_f1_follows_imageclef():
    assert concept_f1([["A", "B"]], [["A", "B"]]) == 1.0
    assert concept_f1([["A", "B"]], [["A", "C", "D"]]) == pytest.approx(0.4)
    assert concept_f1([[]], [[]]) == 1.0 and concept_f1([["A"]], [[]]) == 0.0
    assert concept_f1([["A"], []], [["A"], ["B"]]) == pytest.approx(0.5)


def test_tune_mapper_picks_the_best_threshold_on_the_dev_part():
    pairs = ROCO_LIKE * 5
    mapper, chosen = tune_mapper(pairs, MapperConfig(thresholds=[0.3, 0.95], min_counts=[2]))
    assert chosen["threshold"] == 0.95 and chosen["dev_f1"] == 1.0
    assert mapper("ct kidney") == ["C_CT", "C_KID"]


def test_concept_csvs_have_both_imageclef_formats(tmp_path):
    mapper = ConceptMapper.fit(ROCO_LIKE, threshold=0.9, min_count=2)
    names, cuis = write_concept_csvs(["img1", "img2"], [["C_CARDIO", "C_EFF"], []], mapper,
                                     tmp_path / "gen")  # fmt: skip
    assert names.read_text().splitlines() == [
        "ID,CUIs",
        "img1,cardiomegaly;pleural effusion",
        "img2,",
    ]
    assert cuis.read_text().splitlines() == ["ID,CUIs", "img1,C_CARDIO;C_EFF", "img2,"]


def test_meteor_without_java_says_how_to_fix_it(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="METEOR needs Java"):
        CaptionScorer(meteor=True).score(["a b"], ["a b"])


def test_grounding_reads_the_view_and_the_finding_labels_not_the_notes():
    from cxrlab.captioning.evaluate import caption_view_and_findings, grounding

    assert caption_view_and_findings(
        "AP supine chest radiograph. Cardiomegaly and pleural effusion. Small effusion."
    ) == ("ap supine", frozenset({"cardiomegaly", "pleural effusion"}))
    covid = "PA chest radiograph. Findings consistent with COVID-19 pneumonia and ARDS."
    assert caption_view_and_findings(covid) == (
        "pa",
        frozenset({"findings consistent with covid 19 pneumonia and ards"}),
    )
    assert caption_view_and_findings("a chest film") == (None, frozenset())
    refs = ["PA chest radiograph. Pneumonia.", "AP chest radiograph. Mass.",
            "AP supine chest radiograph. Mass. Left lower lobe opacity."]  # fmt: skip
    scores = grounding(refs, ["PA chest radiograph. Pneumonia.", "PA chest radiograph. Mass.",
                              "AP supine chest radiograph. Mass."])  # fmt: skip
    assert scores == {"view_accuracy": 2 / 3, "findings_accuracy": 1.0, "distinct_captions": 3}
    with pytest.raises(DataError, match="2 captions for 3 references"):
        grounding(refs, refs[:2])
