"""A pretrained CNN as a LLaVA vision tower: one image token per cell of its last map.

``LlavaForConditionalGeneration`` builds its tower with ``AutoModel.from_config`` and
reads ``hidden_states[vision_feature_layer]`` of shape (N, tokens, width). This module
registers a small transformers model type, ``cxrlab_conv_tower``, that gives a timm CNN
that interface, so a LLaVA composed here saves and reloads like any other (importing
:mod:`cxrlab.captioning.model` registers it).

With its weights frozen (the LoRA fine-tune), the tower stays in eval mode: its batch
norms keep their pretrained statistics instead of learning the small training set's.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from cxrlab.core.pretrained import timm_encoder


class ConvTowerConfig(PretrainedConfig):
    """A timm CNN: its name, feature width and stride (pixels per image token)."""

    model_type = "cxrlab_conv_tower"

    def __init__(self, architecture: str = "tf_efficientnet_lite0", hidden_size: int = 1280,
                 patch_size: int = 32, image_size: int = 128, **kwargs) -> None:  # fmt: skip
        self.architecture = architecture
        self.hidden_size = hidden_size
        self.patch_size = patch_size
        self.image_size = image_size
        super().__init__(**kwargs)


class ConvTower(PreTrainedModel):
    """The CNN's last feature map as tokens (N, h * w, C): ``hidden_states=(tokens,)``."""

    config_class = ConvTowerConfig
    main_input_name = "pixel_values"
    base_model_prefix = "cnn"

    def __init__(self, config: ConvTowerConfig) -> None:
        super().__init__(config)
        self.cnn = timm_encoder(config.architecture)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        """Keep timm's own initialisation (pretrained weights are loaded over it)."""

    def train(self, mode: bool = True) -> ConvTower:
        """Train mode only while some weight of the tower learns."""
        return super().train(mode and any(p.requires_grad for p in self.parameters()))

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """Tokens of the last feature map; ``kwargs`` (LLaVA's ``return_dict``...) ignored."""
        tokens = self.cnn.forward_features(pixel_values).flatten(2).transpose(1, 2)
        return BaseModelOutputWithPooling(
            last_hidden_state=tokens, pooler_output=tokens.mean(1), hidden_states=(tokens,)
        )


def conv_tower(architecture: str, weights: str | None, image_size: int) -> ConvTower:
    """A tower of ``architecture`` with the fetched ``weights`` (None: random)."""
    cnn = timm_encoder(architecture, weights)
    stride = int(cnn.feature_info[-1]["reduction"])
    config = ConvTowerConfig(architecture, int(cnn.num_features), stride, image_size)
    tower = ConvTower(config)
    tower.cnn = cnn
    return tower


AutoConfig.register(ConvTowerConfig.model_type, ConvTowerConfig, exist_ok=True)
AutoModel.register(ConvTowerConfig, ConvTower, exist_ok=True)
