"""Float64 reference for the block-causal (chunk-causal) SANA-Video transformer, written from the spec.

`block_causal_reference(model, ...)` reads the weights of a diffusers `SanaVideoTransformer3DModel` (never modifying
it), casts them to float64 and runs the forward pass with

* self-attention restricted by an explicit (N, N) block-causal mask M[n, m] = [block(m) <= block(n)]: the quadratic
  ("attention matrix") form of ReLU linear attention, not the running-sum form;
* the FFN temporal conv (kernel 3 over frames) cut at block ends: the last frame of a block sees zero on its right,
  the first frame of a block still sees the previous block's last frame on its left.

Everything else (patch embed, timestep / caption embeddings, RoPE at absolute frame positions 0..F-1,
cross-attention with the -10000 text-mask bias, modulation, final layer, unpatchify) follows diffusers'
bidirectional model, so `block_sizes == [F]` reproduces `model(...)`.

Run `python -m sana_jax.testing.block_causal_reference` for the self-check (test extras: torch, diffusers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sana_jax.testing.numerics import randomize_

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# small float64 helpers
# ----------------------------------------------------------------------------------------------------------------
def _linear(x, P, name):
    y = x @ P[name + ".weight"].T
    b = P.get(name + ".bias")
    return y if b is None else y + b


def _rms_norm(x, weight, eps):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if weight is None else y * weight


def _layer_norm(x, eps, weight=None, bias=None):
    mu = x.mean(-1, keepdim=True)
    var = (x - mu).pow(2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _sinusoid(t, dim=256, max_period=10000.0):
    """[cos(t f), sin(t f)] with f_i = exp(-ln(max_period) i / (dim/2)), i = 0..dim/2-1 (cos first)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=F64) / half)
    ang = t.to(F64)[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=-1)


def _rope_angles(head_dim, fpp, hpp, wpp, theta=10000.0):
    """(N, head_dim/2) rotation angles; tokens in (f, h, w) row-major order, axis widths t/h/w as in Wan RoPE."""
    h_dim = w_dim = 2 * (head_dim // 6)
    t_dim = head_dim - h_dim - w_dim

    def axis(dim, n):
        freqs = theta ** (-torch.arange(0, dim, 2, dtype=F64)[: dim // 2] / dim)
        return torch.arange(n, dtype=F64)[:, None] * freqs[None]  # (n, dim/2)

    at, ah, aw = axis(t_dim, fpp), axis(h_dim, hpp), axis(w_dim, wpp)
    grid = torch.cat([
        at[:, None, None, :].expand(fpp, hpp, wpp, -1),
        ah[None, :, None, :].expand(fpp, hpp, wpp, -1),
        aw[None, None, :, :].expand(fpp, hpp, wpp, -1),
    ], dim=-1)
    return grid.reshape(fpp * hpp * wpp, head_dim // 2)


def _rotate(x, ang):
    """x (B, N, H, d); adjacent channels (2j, 2j+1) form pair j, rotated by ang[n, j]."""
    cos, sin = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)


# ----------------------------------------------------------------------------------------------------------------
# the three block-specific pieces
# ----------------------------------------------------------------------------------------------------------------
def block_causal_mask(block_sizes, tokens_per_frame):
    """(N, N) float64 matrix, M[n, m] = 1 if block(m) <= block(n) else 0."""
    frame_block = torch.cat([torch.full((s,), i) for i, s in enumerate(block_sizes)])
    token_block = frame_block.repeat_interleave(tokens_per_frame)
    return (token_block[None, :] <= token_block[:, None]).to(F64)


def _self_attention(x, P, pre, heads, eps_norm, ang, mask, eps=1e-15):
    B, N, D = x.shape
    q = _rms_norm(_linear(x, P, pre + "to_q"), P.get(pre + "norm_q.weight"), eps_norm)
    k = _rms_norm(_linear(x, P, pre + "to_k"), P.get(pre + "norm_k.weight"), eps_norm)
    v = _linear(x, P, pre + "to_v")
    q, k, v = (t.reshape(B, N, heads, D // heads) for t in (q, k, v))
    phi_q, phi_k = torch.relu(q), torch.relu(k)                       # kernel first
    rq, rk = _rotate(phi_q, ang), _rotate(phi_k, ang)                 # RoPE second, numerator only
    num_w = torch.einsum("bnhc,bmhc->bhnm", rq, rk) * mask           # (B, H, N, N), masked
    den_w = torch.einsum("bnhc,bmhc->bhnm", phi_q, phi_k) * mask     # un-rotated features in the denominator
    out = torch.einsum("bhnm,bmhc->bnhc", num_w, v) / (den_w.sum(-1).permute(0, 2, 1)[..., None] + eps)
    return _linear(out.reshape(B, N, D), P, pre + "to_out.0")


def _cross_attention(x, ctx, bias, P, pre, heads, eps_norm):
    B, N, D = x.shape
    L = ctx.shape[1]
    q = _rms_norm(_linear(x, P, pre + "to_q"), P.get(pre + "norm_q.weight"), eps_norm)
    k = _rms_norm(_linear(ctx, P, pre + "to_k"), P.get(pre + "norm_k.weight"), eps_norm)
    v = _linear(ctx, P, pre + "to_v")
    d = q.shape[-1] // heads
    q, k, v = q.reshape(B, N, heads, d), k.reshape(B, L, heads, d), v.reshape(B, L, heads, d)
    s = torch.einsum("bnhc,blhc->bhnl", q, k) / math.sqrt(d)
    if bias is not None:
        s = s + bias[:, None, None, :]
    out = torch.einsum("bhnl,blhc->bnhc", torch.softmax(s, dim=-1), v)
    return _linear(out.reshape(B, N, heads * d), P, pre + "to_out.0")


def _ffn(x, P, pre, frames, hpp, wpp, block_sizes):
    """GLUMBConv per frame, then the block-cut temporal conv on the point_conv output: y + conv_temp(y)."""
    B, N, D = x.shape
    h = x.reshape(B * frames, hpp, wpp, D).permute(0, 3, 1, 2)
    h = F.silu(F.conv2d(h, P[pre + "conv_inverted.weight"], P[pre + "conv_inverted.bias"]))
    h = F.conv2d(h, P[pre + "conv_depth.weight"], P[pre + "conv_depth.bias"], padding=1, groups=h.shape[1])
    val, gate = h.chunk(2, dim=1)
    y = F.conv2d(val * F.silu(gate), P[pre + "conv_point.weight"])    # (B*F, D, H', W'), no bias
    y = y.reshape(B, frames, D, hpp * wpp)

    w = P[pre + "conv_temp.weight"][..., 0]                         # (D_out, D_in, 3): taps for f-1, f, f+1
    block_end = torch.zeros(frames, dtype=torch.bool)
    block_end[torch.cumsum(torch.tensor(block_sizes), 0) - 1] = True
    zero = torch.zeros_like(y[:, :1])
    left = torch.cat([zero, y[:, :-1]], dim=1)                       # previous frame, across block starts too
    right = torch.cat([y[:, 1:], zero], dim=1)
    right = right * (~block_end).to(F64)[None, :, None, None]         # a block's last frame never sees the next block
    conv = (torch.einsum("oi,bfip->bfop", w[..., 0], left) + torch.einsum("oi,bfip->bfop", w[..., 1], y)
            + torch.einsum("oi,bfip->bfop", w[..., 2], right))
    y = y + conv
    return y.reshape(B, frames, D, hpp, wpp).permute(0, 1, 3, 4, 2).reshape(B, N, D)


# ----------------------------------------------------------------------------------------------------------------
# the forward pass
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def block_causal_reference(model, hidden_states, encoder_hidden_states, timestep, encoder_attention_mask,
                           block_sizes) -> torch.Tensor:
    """Float64 block-causal SANA-Video forward with `model`'s weights (diffusers layout in and out).

    hidden_states (B, C, F, H, W); encoder_hidden_states (B, L, caption); timestep (B,) or per latent frame (B, F);
    encoder_attention_mask (B, L) of 1/0 or None; block_sizes: latent-frame counts summing to F.
    Returns (B, C_out, F, H, W) float64.
    """
    cfg = model.config
    p_t, p_h, p_w = cfg.patch_size
    assert p_t == 1, "block_causal_reference assumes patch_t == 1"
    assert not cfg.guidance_embeds, "guidance embeddings are not supported"
    assert cfg.qk_norm == "rms_norm_across_heads", cfg.qk_norm
    assert cfg.cross_attention_dim is not None

    P = {n: p.detach().to(F64) for n, p in model.named_parameters()}
    x = hidden_states.detach().to(F64)
    B, C, frames, height, width = x.shape
    block_sizes = [int(s) for s in block_sizes]
    assert all(s > 0 for s in block_sizes) and sum(block_sizes) == frames, (block_sizes, frames)
    hpp, wpp = height // p_h, width // p_w
    tpf = hpp * wpp                                                   # tokens per frame
    N = frames * tpf

    # 1. patch embed: kernel = stride = patch, tokens in (f, h, w) row-major order
    x = F.conv3d(x, P["patch_embedding.weight"], P["patch_embedding.bias"], stride=(p_t, p_h, p_w))
    x = x.flatten(2).transpose(1, 2)                                  # (B, N, D)
    D = x.shape[-1]

    # 2. timestep: (B,) -> one value per sample; (B, F) -> one per frame, broadcast over that frame's tokens
    t = timestep.detach().to(F64)
    if t.ndim == 1:
        assert t.shape[0] == B, t.shape
        t_tok = t[:, None].expand(B, N)
    else:
        assert t.shape == (B, frames), f"timestep must be (B,) or (B, F), got {tuple(t.shape)}"
        t_tok = t.repeat_interleave(tpf, dim=1)
    t_flat = t_tok.reshape(-1)
    pre = "time_embed.emb.timestep_embedder."
    emb = _linear(F.silu(_linear(_sinusoid(t_flat), P, pre + "linear_1")), P, pre + "linear_2")  # raw t
    t0 = _linear(F.silu(emb), P, "time_embed.linear")                 # (B*N, 6D)
    emb, t0 = emb.reshape(B, N, D), t0.reshape(B, N, 6, D)

    # 3. caption: Linear, GELU(tanh), Linear, RMSNorm (weighted)
    y = encoder_hidden_states.detach().to(F64)
    y = _linear(F.gelu(_linear(y, P, "caption_projection.linear_1"), approximate="tanh"), P,
                "caption_projection.linear_2")
    y = _rms_norm(y, P["caption_norm.weight"], model.caption_norm.eps)
    bias = None
    if encoder_attention_mask is not None:
        bias = (1.0 - encoder_attention_mask.detach().to(F64)) * -10000.0   # (B, L)

    # 4. RoPE at absolute frame positions 0..F-1; explicit block-causal mask
    ang = _rope_angles(cfg.attention_head_dim, frames, hpp, wpp)
    mask = block_causal_mask(block_sizes, tpf)

    # 5. blocks
    for i, blk in enumerate(model.transformer_blocks):
        pre = f"transformer_blocks.{i}."
        mod = P[pre + "scale_shift_table"][None, None] + t0            # (B, N, 6, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(dim=2)

        h = _layer_norm(x, blk.norm1.eps, P.get(pre + "norm1.weight"), P.get(pre + "norm1.bias"))
        h = h * (1 + scale_msa) + shift_msa
        x = x + gate_msa * _self_attention(h, P, pre + "attn1.", blk.attn1.heads, blk.attn1.norm_q.eps, ang, mask)

        x = x + _cross_attention(x, y, bias, P, pre + "attn2.", blk.attn2.heads, blk.attn2.norm_q.eps)

        h = _layer_norm(x, blk.norm2.eps, P.get(pre + "norm2.weight"), P.get(pre + "norm2.bias"))
        h = h * (1 + scale_mlp) + shift_mlp
        x = x + gate_mlp * _ffn(h, P, pre + "ff.", frames, hpp, wpp, block_sizes)

    # 6. final layer: LN (no affine), (shift, scale) = table + raw t, Linear
    shift, scale = (P["scale_shift_table"][None, None] + emb[:, :, None]).unbind(dim=2)
    x = _layer_norm(x, model.norm_out.norm.eps) * (1 + scale) + shift
    x = _linear(x, P, "proj_out")

    # 7. unpatchify: channel index fastest inside each token's vector
    x = x.reshape(B, frames, hpp, wpp, p_t, p_h, p_w, -1)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, x.shape[1], frames * p_t, hpp * p_h, wpp * p_w)


# ----------------------------------------------------------------------------------------------------------------
# self-check
# ----------------------------------------------------------------------------------------------------------------
TINY = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
            num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=32,
            mlp_ratio=2.5, sample_size=30, patch_size=(1, 2, 2), norm_elementwise_affine=False, norm_eps=1e-6,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


def _rel(a, b):
    a, b = a.to(F64), b.to(F64)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _running_sum_attention_check():
    """The masked-matrix form against a chunk running sum (the 'other' formulation) on random features."""
    gen = torch.Generator().manual_seed(1)
    B, H, d, tpf, sizes = 2, 3, 8, 5, [2, 1, 3]
    N = sum(sizes) * tpf
    phi_q, phi_k = torch.rand(B, N, H, d, generator=gen, dtype=F64), torch.rand(B, N, H, d, generator=gen, dtype=F64)
    v = torch.randn(B, N, H, d, generator=gen, dtype=F64)
    ang = torch.rand(N, d // 2, generator=gen, dtype=F64) * 6
    rq, rk = _rotate(phi_q, ang), _rotate(phi_k, ang)
    mask = block_causal_mask(sizes, tpf)
    num_w = torch.einsum("bnhc,bmhc->bhnm", rq, rk) * mask
    den_w = torch.einsum("bnhc,bmhc->bhnm", phi_q, phi_k) * mask
    a = torch.einsum("bhnm,bmhc->bnhc", num_w, v) / (den_w.sum(-1).permute(0, 2, 1)[..., None] + 1e-15)
    S = torch.zeros(B, H, d, d, dtype=F64)
    z = torch.zeros(B, H, d, dtype=F64)
    outs, start = [], 0
    for s in sizes:
        sl = slice(start * tpf, (start + s) * tpf)
        S = S + torch.einsum("bmhi,bmhj->bhij", v[:, sl], rk[:, sl])
        z = z + phi_k[:, sl].sum(1)
        num = torch.einsum("bhij,bnhj->bnhi", S, rq[:, sl])
        den = torch.einsum("bhj,bnhj->bnh", z, phi_q[:, sl])[..., None] + 1e-15
        outs.append(num / den)
        start += s
    return _rel(a, torch.cat(outs, dim=1))


def _ffn_cached_form_check(model64, sizes, frames=7, hpp=3, wpp=4):
    """_ffn against the §2.2 cached form built from the (float64 copy of the) diffusers FFN modules."""
    ff = model64.transformer_blocks[0].ff
    P = {n: p.detach() for n, p in ff.named_parameters(prefix="ff")}
    gen = torch.Generator().manual_seed(2)
    D = ff.conv_temp.weight.shape[0]
    h = torch.randn(2, frames * hpp * wpp, D, generator=gen, dtype=F64)
    ours = _ffn(h, {k: v.to(F64) for k, v in P.items()}, "ff.", frames, hpp, wpp, sizes)
    with torch.no_grad():
        z = h.reshape(2 * frames, hpp, wpp, D).permute(0, 3, 1, 2)
        z = ff.conv_depth(ff.nonlinearity(ff.conv_inverted(z)))
        val, gate = z.chunk(2, dim=1)
        y = ff.conv_point(val * ff.nonlinearity(gate)).reshape(2, frames, D, hpp * wpp).permute(0, 2, 1, 3)
        outs, start = [], 0
        for s in sizes:
            chunk = y[:, :, start:start + s]
            if start > 0:
                inp = torch.cat([y[:, :, start - 1:start], chunk], dim=2)
                conv = ff.conv_temp(inp)[:, :, 1:]
            else:
                conv = ff.conv_temp(chunk)
            outs.append(chunk + conv)
            start += s
        ref = torch.cat(outs, dim=2).permute(0, 2, 3, 1).reshape(2, frames * hpp * wpp, D)
    return _rel(ours, ref)


def _main():
    import copy
    import time

    from diffusers import SanaVideoTransformer3DModel

    t_start = time.time()
    torch.manual_seed(0)
    model = randomize_(SanaVideoTransformer3DModel(**TINY), seed=0).eval()
    model64 = copy.deepcopy(model).double()                            # a float64 copy; `model` stays float32

    gen = torch.Generator().manual_seed(0)
    B, C, Fr, H, W, L = 2, 16, 7, 8, 6, 9
    hpp, wpp = H // 2, W // 2
    x = torch.randn(B, C, Fr, H, W, generator=gen)
    ctx = torch.randn(B, L, 32, generator=gen)
    mask = torch.ones(B, L)
    mask[0, 6:] = 0
    mask[1, 3:] = 0
    t_scalar = torch.tensor([640.3, 31.7])
    t_frames = torch.tensor([[0.0, 700.0, 700.0, 655.5, 610.0, 20.0, 999.0],
                             [35.5, 35.5, 300.0, 300.0, 300.0, 812.25, 812.25]])

    def diffusers_forward(m, xx, tt, dtype=torch.float32):
        if tt.ndim == 2:                      # diffusers takes per-token timesteps: (B, F, H', W') flattened
            tt = tt[:, :, None, None].expand(-1, -1, hpp, wpp).reshape(tt.shape[0], -1)
        with torch.no_grad():
            return m(xx.to(dtype), ctx.to(dtype), tt.to(dtype), encoder_attention_mask=mask.to(dtype)).sample

    ok = True

    def report(name, value, passed):
        nonlocal ok
        ok &= passed
        print(f"  [{'ok' if passed else 'FAIL'}] {name}: {value:.3e}")

    print("attention: explicit-mask form vs chunk running sum")
    report("rel err", _running_sum_attention_check(), _running_sum_attention_check() <= 1e-13)

    print("(i) one block == diffusers forward")
    for label, tt in (("scalar timestep", t_scalar), ("per-frame timestep", t_frames)):
        ref = block_causal_reference(model, x, ctx, tt, mask, [Fr])
        report(f"{label}: vs model float32", _rel(ref, diffusers_forward(model, x, tt)),
               _rel(ref, diffusers_forward(model, x, tt)) <= 1e-5)
        r64 = _rel(ref, diffusers_forward(model64, x, tt, torch.float64))
        report(f"{label}: vs model.double() copy", r64, r64 <= 1e-6)
    ref_nomask = block_causal_reference(model, x, ctx, t_scalar, None, [Fr])
    with torch.no_grad():
        d_nomask = model(x, ctx, t_scalar).sample
    report("no text mask: vs model float32", _rel(ref_nomask, d_nomask), _rel(ref_nomask, d_nomask) <= 1e-5)
    report("the text mask matters (should be large)", _rel(ref_nomask, block_causal_reference(
        model, x, ctx, t_scalar, mask, [Fr])), _rel(ref_nomask, block_causal_reference(
            model, x, ctx, t_scalar, mask, [Fr])) > 1e-3)

    print("(ii) several blocks: [3, 2, 2]")
    sizes = [3, 2, 2]
    for label, tt in (("scalar timestep", t_scalar), ("per-frame timestep", t_frames)):
        out = block_causal_reference(model, x, ctx, tt, mask, sizes)
        bidir = block_causal_reference(model, x, ctx, tt, mask, [Fr])
        sl = (lambda n: tt[:, :n]) if tt.ndim == 2 else (lambda n: tt)
        first = block_causal_reference(model, x[:, :, :3], ctx, sl(3), mask, [3])
        e = _rel(out[:, :, :3], first)
        report(f"{label}: block 0 == one-block run on frames 0-2 only", e, e <= 1e-12)
        e = _rel(out[:, :, :3], diffusers_forward(model, x[:, :, :3], sl(3)))
        report(f"{label}: block 0 == diffusers on frames 0-2 only (fp32)", e, e <= 1e-5)
        prefix = block_causal_reference(model, x[:, :, :5], ctx, sl(5), mask, [3, 2])
        e = _rel(out[:, :, :5], prefix)
        report(f"{label}: blocks 0-1 == [3, 2] run on frames 0-4 only", e, e <= 1e-12)
        x_pert = x.clone()
        x_pert[:, :, 5:] += torch.randn(x[:, :, 5:].shape, generator=gen)
        pert = block_causal_reference(model, x_pert, ctx, tt, mask, sizes)
        e = _rel(pert[:, :, :5], out[:, :, :5])
        report(f"{label}: changing frames 5-6 leaves frames 0-4 unchanged", e, e <= 1e-14)
        e = _rel(pert[:, :, 5:], out[:, :, 5:])
        report(f"{label}: ...but changes frames 5-6 (should be large)", e, e > 1e-2)
        # Differences from the bidirectional model. Block 0 loses attention to frames 3-6 in every layer (and
        # its last frame loses conv_temp's right neighbour): first-order change. Block 2 is the last block: in
        # layer 1 its attention and conv are exactly bidirectional, so it only differs through the changed
        # keys/values of blocks 0-1 seen in layer 2 (second order, hence much smaller, but far above roundoff).
        for b, (lo, hi) in enumerate(((0, 3), (3, 5), (5, 7))):
            e = _rel(out[:, :, lo:hi], bidir[:, :, lo:hi])
            report(f"{label}: block {b} (frames {lo}-{hi - 1}) differs from bidirectional (should be >> 1e-12)",
                   e, e > 1e-6)
        x_pert = x.clone()
        x_pert[:, :, :3] += torch.randn(x[:, :, :3].shape, generator=gen)
        e = _rel(block_causal_reference(model, x_pert, ctx, tt, mask, sizes)[:, :, 3:], out[:, :, 3:])
        report(f"{label}: changing frames 0-2 changes blocks 1-2 (should be >> 1e-12)", e, e > 1e-3)

    print("FFN temporal conv vs the cached form (prepend previous block's last point_conv frame, diffusers'"
          " conv_temp with padding 1, drop first output)")
    e = _ffn_cached_form_check(model64, sizes)
    report("rel err", e, e <= 1e-13)

    print(f"done in {time.time() - t_start:.1f}s: {'ALL OK' if ok else 'SOME CHECKS FAILED'}")
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if _main() else 1)
