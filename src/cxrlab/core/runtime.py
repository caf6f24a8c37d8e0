"""Where training runs: one process or several with DDP, on CPU or a GPU.

The ``device`` param picks the device: ``cpu`` (the cpu profile: results reproduce bit
for bit), ``cuda`` (fail unless torch sees a GPU) or ``auto`` (a GPU when there is one;
the gpu profile). :func:`cxrlab.stage.run_stage` applies it before a stage starts.
Trainers keep their data and every random draw on the CPU, and move each batch to
:func:`device`, so a GPU run sees the same batches, noise and augmentations as a CPU run;
they hand the model back on the CPU.

`dvc repro` runs a stage as one process. Launched as several, e.g.

    accelerate launch --multi_gpu --num_processes 2 stages/train_classifier.py

(on a machine without a GPU the processes talk over gloo), each process trains on its
share of every batch and DDP averages the gradients, so one optimiser step still sees the
whole batch. Only the main process writes files. The classifier wraps its model in DDP;
the other trainers average their gradients with :func:`sync_gradients`.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from cxrlab.core.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
_chosen = "cpu"
# The ``precision`` param: the autocast dtype of training and the weights' of inference.
# ``auto`` (:func:`use_precision`) resolves to bf16 or fp32 by what the device runs natively.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_precision = "fp32"


def use_device(name: str) -> None:
    """Run on ``name`` (one of :data:`DEVICES`) from here on.

    Raises:
        ConfigError: For an unknown name (and, at first use, ``cuda`` without a GPU).
    """
    global _chosen
    if name not in DEVICES:
        raise ConfigError(f"device is '{name}'; expected one of {', '.join(DEVICES)}.")
    if name != _chosen:
        _chosen = name
        if accelerator.cache_info().currsize:
            from accelerate.state import AcceleratorState

            # accelerate keeps one state per process; a switch (tests do it) starts anew.
            AcceleratorState._reset_state(reset_partial_state=True)
            accelerator.cache_clear()


@functools.cache
def accelerator():
    """The process's :class:`accelerate.Accelerator`, on the device :func:`use_device` chose."""
    from accelerate import Accelerator

    if _chosen == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device is 'cuda' but torch sees no CUDA GPU; use device: auto (a GPU when "
            "there is one) or cpu."
        )
    acc = Accelerator(cpu=_chosen == "cpu")
    log.info(
        "device %s, process %d of %d (%s)",
        acc.device, acc.process_index + 1, acc.num_processes, acc.distributed_type,
    )  # fmt: skip
    return acc


def use_precision(name: str) -> str:
    """Train under autocast to ``name`` (``bf16``, ``fp16``) or in full ``fp32`` from here on.

    ``auto`` is bf16 where the device has bf16 arithmetic (:func:`native_bf16`), else fp32.
    Returns the precision now in use.

    Raises:
        ConfigError: For a name neither ``auto`` nor in :data:`PRECISIONS`.
    """
    global _precision
    if name == "auto":
        name = "bf16" if native_bf16() else "fp32"
        log.info("precision auto: %s on %s", name, device())
    if name not in PRECISIONS:
        raise ConfigError(
            f"precision is '{name}'; expected auto or one of {', '.join(PRECISIONS)}."
        )
    _precision = name
    grad_scaler.cache_clear()
    return name


def native_bf16() -> bool:
    """Whether :func:`device` does bf16 arithmetic in hardware, not by emulation.

    A GPU that supports bf16, or a CPU with AVX-512-BF16 or AMX-BF16 that oneDNN may use
    (``ONEDNN_MAX_CPU_ISA`` can hold it back). On a CPU without them, bf16 autocast is
    emulated: a LoRA captioner step measured 25-30x slower than fp32 (BENCHMARKS.md).
    """
    if device().type == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    has_bf16 = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    return has_bf16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def autocast() -> contextlib.AbstractContextManager:
    """Mixed precision for a forward pass at the ``precision`` param (fp32: none).

    The weights and the optimiser state stay fp32; matrix products run in the lower dtype.
    """
    if _precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device().type, dtype=PRECISIONS[_precision])


def inference_dtype() -> torch.dtype:
    """The dtype of weights that only predict: the ``precision`` param's on a GPU.

    On the CPU it stays fp32, where half-precision kernels are slow or missing.
    """
    return PRECISIONS[_precision] if device().type == "cuda" else torch.float32


@functools.cache
def grad_scaler() -> torch.amp.GradScaler | None:
    """fp16 training's loss scaler; None for fp32 and bf16, which keep fp32's range."""
    return torch.amp.GradScaler(device().type) if _precision == "fp16" else None


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout a ``channels_last`` param asks for (channels-last is faster for convs on CPU)."""
    return torch.channels_last if channels_last else torch.contiguous_format


def device() -> torch.device:
    """The device models train and predict on."""
    return accelerator().device


def device_of(module: torch.nn.Module) -> torch.device:
    """The device a module's weights are on (CPU for a module without weights)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


@torch.no_grad()
def run_batched(fn, x: torch.Tensor, batch_size: int, on: torch.device | None = None):
    """``fn`` over ``x`` in batches moved to ``on``, without gradients, joined on the CPU."""
    return torch.cat([fn(x[i : i + batch_size].to(on)).cpu() for i in range(0, len(x), batch_size)])


def is_main_process() -> bool:
    """Whether this process writes outputs (always true for a single process)."""
    return accelerator().is_main_process


def shard(n: int) -> slice:
    """This process's rows of a batch of ``n``: every ``num_processes``-th from its rank."""
    acc = accelerator()
    return slice(acc.process_index, n, acc.num_processes)


def sync_gradients(params) -> None:
    """Average the gradients of ``params`` over the processes, as DDP does after backward.

    Trainers that shard their batches call it between ``backward()`` and the optimiser
    step, so the replicas stay identical without wrapping the model (which would hide
    peft's and diffusers' methods). A no-op for a single process.
    """
    acc = accelerator()
    if acc.num_processes == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = acc.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
    for grad, mean in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(mean.view_as(grad))


def mean_over_processes(value: float, weight: float) -> float:
    """The ``weight``-weighted mean of a per-process number over all processes."""
    acc = accelerator()
    if acc.num_processes == 1:
        return value
    pair = torch.tensor([value * weight, weight], dtype=torch.float64, device=acc.device)
    totals = acc.reduce(pair, "sum")
    return float(totals[0] / totals[1])
