"""How the parity tests compare and randomise: relative error, and PyTorch modules with every parameter random."""

from __future__ import annotations

import numpy as np


def rel_err(a, b) -> float:
    """||a - b|| / ||b|| in float64 (Frobenius norm over all elements)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def randomize_(module, seed: int = 0, scale: float = 0.5):
    """Every parameter random (norm weights and zero-initialised convs too), so no term hides behind a 0 or 1.
    ``module``: a torch.nn.Module, changed in place and returned."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if name.endswith(("norm_q.weight", "norm_k.weight", "caption_norm.weight")):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.shape[0]
                p.copy_(scale * torch.randn(p.shape, generator=gen) / max(fan_in, 1) ** 0.5)
    return module
