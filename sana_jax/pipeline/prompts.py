"""Prompt processing exactly as the SANA-Video pipeline does it, up to token ids and masks.

positive: lower-case + strip, the complex human instruction (CHI) prepended, padded/truncated to
len(tokens(CHI)) + max_sequence_length - 2, encoded whole, then BOS + the last (max_sequence_length - 1)
positions kept. negative: lower-case + strip, no CHI, padded/truncated to max_sequence_length, all kept.
"""

from __future__ import annotations

import warnings

import numpy as np


class PromptTruncatedWarning(UserWarning):
    """A prompt longer than the text encoder's window: its end is cut, as the reference pipeline cuts it."""

# The pipeline's default complex human instruction (NVlabs `chi_prompt`), one string per line.
COMPLEX_HUMAN_INSTRUCTION = (
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for "
    "video generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, motion, and "
    "temporal relationships to create vivid and dynamic scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat slowly settling into a curled position, "
    "peacefully falling asleep on a warm sunny windowsill, with gentle sunlight filtering through surrounding pots "
    "of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps gradually lighting up, a diverse crowd of people in colorful clothing walking past, and a double-decker "
    "bus smoothly passing by towering glass skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
)


def with_motion_score(prompt: str, motion_score: int | None) -> str:
    """Appends the recommended ``" motion score: N."`` suffix (None: unchanged)."""
    return prompt if motion_score is None else f"{prompt} motion score: {int(motion_score)}."


def tokenize(tokenizer, prompts: list[str], *, instruction=COMPLEX_HUMAN_INSTRUCTION, max_sequence_length=300):
    """Token ids and mask for the text encoder, and the positions to keep after encoding.

    Returns (input_ids (B, L_all) int32, mask (B, L_all) int32, keep (max_sequence_length,) int) where ``keep``
    selects BOS + the last max_sequence_length - 1 positions (all positions when there is no instruction).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    texts = [p.lower().strip() for p in prompts]
    tokenizer.padding_side = "right"
    if instruction:
        chi = "\n".join(instruction)
        texts = [chi + t for t in texts]
        length = len(tokenizer.encode(chi)) + max_sequence_length - 2
    else:
        length = max_sequence_length
    enc = tokenizer(texts, padding="max_length", max_length=length, truncation=True, add_special_tokens=True,
                    return_tensors="np")
    full = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
    cut = [(i, n) for i, n in enumerate(full) if n > length]
    if cut:
        listed = ", ".join(f"{prompts[i][:40]!r}... ({n - length} tokens cut)" for i, n in cut[:3])
        warnings.warn(f"{len(cut)} prompt(s) longer than max_sequence_length={max_sequence_length} tokens; their "
                      f"ends are not seen by the model: {listed}", PromptTruncatedWarning, stacklevel=2)
    ids = np.asarray(enc["input_ids"], np.int32)
    mask = np.asarray(enc["attention_mask"], np.int32)
    keep = np.concatenate([[0], np.arange(length - max_sequence_length + 1, length)]) if instruction \
        else np.arange(length)
    return ids, mask, keep


def drop_padding(embeds, mask, multiple: int = 32):
    """(embeds (B, L, D), mask (B, L)) without the trailing caption positions that every row masks out, kept to a
    multiple of ``multiple`` (so prompts of similar length share one compiled program).

    The DiT's cross-attention gives a masked position the bias -1e4, whose softmax weight underflows to exactly 0
    in float32 and bfloat16: the dropped positions change nothing but the cost. A demo prompt holds ~10 of the 300
    positions, and its text keys and values were over half of each DiT pass.
    """
    valid = np.flatnonzero(np.asarray(mask).any(axis=0))
    length = mask.shape[1]
    keep = min(length, -(-(int(valid[-1]) + 1 if valid.size else 1) // multiple) * multiple)
    return embeds[:, :keep], mask[:, :keep]
