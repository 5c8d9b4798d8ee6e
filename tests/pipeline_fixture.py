"""A tiny random SANA-Video pipeline in the real diffusers folder layout, built offline (no hub).

The tokenizer is a Gemma-layout BPE (byte fallback, '▁' for spaces, <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4,
then the 256 byte tokens) trained on a few sentences, so any text encodes.
"""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from conftest import randomize_

CHI = [
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for video "
    "generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, motion, and temporal "
    "relationships to create vivid and dynamic scenes.",
    "User Prompt: ",
]
SENTENCES = [
    "a red circle moving left on a white background", "a small fluffy cat sleeping on a warm windowsill",
    "a busy city street at dusk with glowing lamps", "blue square moving up, green triangle moving down",
    "the quick brown fox jumps over the lazy dog", "motion score: 30. high motion, low motion",
    "a chaotic sequence with misshapen, deformed limbs in heavy motion blur",
] + CHI


def gemma_style_tokenizer():
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials + byte_tokens, show_progress=False)
    tok.train_from_iterator(SENTENCES * 4, trainer)
    vocab = tok.get_vocab()
    merges = [tuple(m) if isinstance(m, (list, tuple)) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
    return GemmaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


def build_tiny_pipeline(folder, seed: int = 0, vae: str = "wan"):
    """Saves a random SanaVideoPipeline (tiny transformer, Gemma2, Wan VAE, flow DPM scheduler) to ``folder``."""
    from diffusers import AutoencoderKLWan, DPMSolverMultistepScheduler, SanaVideoPipeline, SanaVideoTransformer3DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tokenizer = gemma_style_tokenizer()
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
        num_key_value_heads=1, vocab_size=len(tokenizer), sliding_window=4, max_position_embeddings=8192,
        attn_implementation="eager"))
    transformer = SanaVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=32,
        mlp_ratio=2.5, sample_size=30, patch_size=(1, 2, 2), norm_elementwise_affine=False, norm_eps=1e-6,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    vae_model = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    for i, module in enumerate((text_encoder, transformer, vae_model)):
        randomize_(module, seed=seed + i)
    scheduler = DPMSolverMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    pipe = SanaVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), transformer=transformer.eval(),
                             vae=vae_model.eval(), scheduler=scheduler)
    pipe.save_pretrained(folder)
    return pipe


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python tests/pipeline_fixture.py OUT_DIR   # a tiny random-weight pipeline folder")
    build_tiny_pipeline(sys.argv[1])
    print(f"wrote a tiny random-weight SanaVideoPipeline folder to {sys.argv[1]}")
