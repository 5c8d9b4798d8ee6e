"""A tiny random SANA-Video pipeline in the real diffusers folder layout, built offline (no hub). Needs the test
extras (torch, diffusers).

    python -m sana_jax.testing.pipelines OUT_DIR [wan|ltx2]     # a tiny random-weight pipeline folder

The tokenizer is a Gemma-layout BPE (byte fallback, '▁' for spaces, <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4,
then the 256 byte tokens) trained on a few sentences, so any text encodes.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from sana_jax.testing.numerics import randomize_

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
    """Saves a random SanaVideoPipeline (tiny transformer, Gemma2, flow DPM scheduler) to ``folder``.

    ``vae="wan"``: the 480p layout (Wan VAE, 8x spatial / 4x temporal, 16 channels, patch (1, 2, 2), sample_size
    30). ``vae="ltx2"``: the 720p layout (LTX-2 VAE, 32x spatial / 8x temporal, 8 channels, patch (1, 1, 1),
    sample_size 22), with random ``latents_mean`` / ``latents_std`` buffers so normalisation is exercised.
    """
    import torch
    from diffusers import DPMSolverMultistepScheduler, SanaVideoPipeline, SanaVideoTransformer3DModel
    from transformers import Gemma2Config, Gemma2Model

    if vae not in ("wan", "ltx2"):
        raise ValueError(f"vae={vae!r}; expected 'wan' or 'ltx2'")
    torch.manual_seed(seed)
    tokenizer = gemma_style_tokenizer()
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
        num_key_value_heads=1, vocab_size=len(tokenizer), sliding_window=4, max_position_embeddings=8192,
        attn_implementation="eager"))
    # The 720p layout has a latent pixel per token: rope positions reach 42 (1344 / 32) on the widest bin. The 480p
    # layout's table reaches a minute of streamed video (961 frames = 241 latent frames); past its table RoPE has no
    # position, and the sizes are refused.
    channels, layout = ((16, dict(sample_size=30, patch_size=(1, 2, 2), rope_max_seq_len=256)) if vae == "wan" else
                        (8, dict(sample_size=22, patch_size=(1, 1, 1), rope_max_seq_len=64)))
    transformer = SanaVideoTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=32,
        mlp_ratio=2.5, norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads",
        **layout)
    vae_model = _tiny_wan_vae() if vae == "wan" else _tiny_ltx2_vae(seed)
    for i, module in enumerate((text_encoder, transformer, vae_model)):
        randomize_(module, seed=seed + i)
    scheduler = DPMSolverMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True, prediction_type="flow_prediction")
    pipe = SanaVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), transformer=transformer.eval(),
                             vae=vae_model.eval(), scheduler=scheduler)
    pipe.save_pretrained(folder)
    return pipe


def _tiny_wan_vae():
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


# The LTX-2 layout at toy width: 32x spatial, 8x temporal, 8 latent channels, non-causal reflect-padded decoder.
TINY_LTX2 = dict(latent_channels=8, block_out_channels=(8, 16, 16, 32), decoder_block_out_channels=(16, 32, 64),
                 layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1), decoder_causal=False,
                 spatial_compression_ratio=32, temporal_compression_ratio=8)


def randomize_ltx2_buffers_(model, seed: int):
    """randomize_ sets parameters only; the LTX-2 normalisation buffers get their own values (std positive)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    c = model.config.latent_channels
    with torch.no_grad():
        model.latents_mean.copy_(0.3 * torch.randn(c, generator=gen))
        model.latents_std.copy_(0.5 + torch.rand(c, generator=gen))
    return model


def _tiny_ltx2_vae(seed: int):
    from diffusers import AutoencoderKLLTX2Video

    return randomize_ltx2_buffers_(AutoencoderKLLTX2Video(**TINY_LTX2), seed + 100)


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m sana_jax.testing.pipelines OUT_DIR [wan|ltx2]   # a tiny random-weight pipeline "
                 "folder")
    build_tiny_pipeline(sys.argv[1], vae=sys.argv[2] if len(sys.argv) == 3 else "wan")
    print(f"wrote a tiny random-weight SanaVideoPipeline folder to {sys.argv[1]}")
