"""Grad-CAM (Selvaraju et al., 2017) for the classifier's last convolutional block."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlab.classification.model import Classifier


def grad_cam(
    model: Classifier, x: torch.Tensor, target: torch.Tensor | int = 1, batch_size: int = 64
) -> torch.Tensor:
    """Class activation maps for ``target``, upsampled to the input size.

    Args:
        model: The classifier; its ``last_conv_block`` is explained.
        x: Inputs (N, 1, H, W), preprocessed as for training.
        target: The class to explain, one for all images or one per image.
        batch_size: Images per forward/backward pass.

    Returns:
        Maps (N, H, W) in [0, 1], each scaled by its own maximum (all zeros when
        nothing in the image supports the target class).
    """
    model.eval()
    targets = (
        torch.as_tensor(target).expand(len(x)) if torch.as_tensor(target).ndim == 0 else target
    )
    captured: dict[str, torch.Tensor] = {}
    hook = model.last_conv_block.register_forward_hook(lambda _m, _i, out: captured.update(a=out))
    maps = []
    try:
        for i in range(0, len(x), batch_size):
            with torch.enable_grad():
                logits = model(x[i : i + batch_size])
                acts = captured["a"]
                score = logits.gather(1, targets[i : i + batch_size].view(-1, 1).long()).sum()
                (grads,) = torch.autograd.grad(score, acts)
            weights = grads.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * acts).sum(1, keepdim=True)).detach()
            cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
            peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
            maps.append(cam / peak)
    finally:
        hook.remove()
    return torch.cat(maps)
