"""Generated latents with matching text conditioning: a data set that needs no files and that a model can learn.

Each example belongs to one of ``NUM_CLASSES`` classes. A class is a smooth pattern (per channel, a plane wave of
low integer frequency over latent frames, height and width) and a prototype text embedding. Example i is a
function of (seed, i) alone: its class, an amplitude, a little noise on the latents and on the embedding, and a
number of valid text tokens in [1, L]. The caption embedding tells the class, so conditioning lowers the loss.
"""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 8
_CLASSES, _EXAMPLES, _NULL = 0, 1, 2    # independent random streams under one seed


class SyntheticExamples:
    """Record index -> {"latents" (F', H', W', C), "text_embeds" (L, D), "text_mask" (L,)}; picklable."""

    def __init__(self, *, seed: int, num_examples: int, latent_shape: tuple[int, int, int, int], text_length: int,
                 text_dim: int):
        self.seed, self.num_examples, self.latent_shape = seed, num_examples, tuple(latent_shape)
        self.text_length, self.text_dim = text_length, text_dim
        f, h, w, c = self.latent_shape
        rng = np.random.default_rng([seed, _CLASSES])
        freqs = rng.integers(0, 3, size=(NUM_CLASSES, c, 3))           # cycles over (F', H', W')
        phases = rng.uniform(0, 2 * np.pi, size=(NUM_CLASSES, 1, 1, 1, c))
        grid = np.stack(np.meshgrid(np.arange(f) / f, np.arange(h) / h, np.arange(w) / w, indexing="ij"), -1)
        angle = 2 * np.pi * np.einsum("fhwx,kcx->kfhwc", grid, freqs) + phases
        self._patterns = (np.sqrt(2.0) * np.cos(angle)).astype(np.float32)   # (K, F', H', W', C), unit RMS
        self._prototypes = rng.normal(size=(NUM_CLASSES, text_dim)).astype(np.float32)

    def __len__(self) -> int:
        return self.num_examples

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, _EXAMPLES, int(index)])
        k = rng.integers(NUM_CLASSES)
        amplitude = rng.uniform(0.5, 1.5)
        latents = amplitude * self._patterns[k] + 0.1 * rng.normal(size=self.latent_shape)
        valid = int(rng.integers(1, self.text_length + 1))
        embeds = np.zeros((self.text_length, self.text_dim), np.float32)
        embeds[:valid] = self._prototypes[k] + 0.1 * rng.normal(size=(valid, self.text_dim))
        mask = (np.arange(self.text_length) < valid).astype(np.int32)
        return {"latents": latents.astype(np.float32), "text_embeds": embeds, "text_mask": mask}

    @staticmethod
    def collate(examples: list[dict]) -> dict[str, np.ndarray]:
        return {key: np.stack([e[key] for e in examples]) for key in ("latents", "text_embeds", "text_mask")}


def synthetic_null_text(*, seed: int, text_length: int, text_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The empty caption: one valid token with a fixed embedding from ``seed``; (L, D) float32, (L,) int32."""
    rng = np.random.default_rng([seed, _NULL])
    embeds = np.zeros((text_length, text_dim), np.float32)
    embeds[0] = rng.normal(size=text_dim)
    mask = np.zeros(text_length, np.int32)
    mask[0] = 1
    return embeds, mask
