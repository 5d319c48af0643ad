"""Mixed precision for the trainer (``amp=True``): ``torch.autocast`` and, for fp16, a gradient scaler.

Which precision runs where:

==========================  =====================================================================
device                      ``amp=True``
==========================  =====================================================================
CPU                         ``torch.autocast("cpu", dtype=torch.bfloat16)``, no scaler
CUDA with bf16 support      ``torch.autocast("cuda", dtype=torch.bfloat16)``, no scaler
other CUDA devices          ``torch.autocast("cuda", dtype=torch.float16)`` and a ``GradScaler``
anything else               refused (``ValueError`` naming the device)
==========================  =====================================================================

The model's parameters stay float32 (autocast runs matmuls and convolutions in the low precision);
a float64 model is refused, since autocast would silently drop it to 16 bits. The CSKD losses compute
in float32 whatever their input, and the logits reach the run log's diagnostics as float32.
The scaler's state is part of a training checkpoint (:mod:`cskd_viz.training.resume`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Precision"]


class Precision:
    """Autocast and loss scaling of one run; with ``enabled=False`` every method is a plain pass-through.

    Example:
        >>> p = Precision(torch.device("cpu"), enabled=True, model=nn.Linear(3, 2))
        >>> p.dtype, p.scaler is None
        (torch.bfloat16, True)
        >>> Precision(torch.device("cpu"), enabled=True, model=nn.Linear(3, 2).double())
        Traceback (most recent call last):
        ...
        ValueError: amp=True needs a float32 model, but its parameters are torch.float64: ...
    """

    def __init__(self, device: torch.device, enabled: bool, model: nn.Module | None = None) -> None:
        self.enabled, self.device_type = enabled, device.type
        self.dtype: torch.dtype | None = None
        self.scaler: Any = None
        if not enabled:
            return
        if model is not None:
            dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
            if dtypes - {torch.float32}:
                found = ", ".join(sorted(str(d) for d in dtypes))
                raise ValueError(
                    f"amp=True needs a float32 model, but its parameters are {found}: autocast would run it "
                    "in 16 bits; train in float64 without --amp, or convert the model to float32"
                )
        if device.type == "cpu":
            self.dtype = torch.bfloat16
        elif device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            with torch.cuda.device(index):
                bf16 = torch.cuda.is_bf16_supported()
            self.dtype = torch.bfloat16 if bf16 else torch.float16
            if not bf16:
                self.scaler = torch.amp.GradScaler("cuda")
        else:
            raise ValueError(
                f"amp=True (--amp) is supported on cpu and cuda devices, not on {device.type!r}: drop --amp"
            )

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context to run forward passes (and the loss) in."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, scaled when a scaler is in use."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step (through the scaler, which skips steps with non-finite gradients)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    @staticmethod
    def full(logits: Tensor | None) -> Tensor | None:
        """``logits`` as float32 when autocast made them 16-bit (for the diagnostics); else as they are."""
        if logits is None or logits.dtype not in (torch.float16, torch.bfloat16):
            return logits
        return logits.float()

    def state_dict(self) -> dict[str, Any] | None:
        """The scaler's state (``None`` without one)."""
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`'s value."""
        if self.scaler is not None and state is not None:
            self.scaler.load_state_dict(state)
