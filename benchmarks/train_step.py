"""One training step: time against PyTorch, memory per device against fsdp, collective traffic against sequence.

    python benchmarks/train_step.py [--quick] [--repeats 15]

1. Step time. The full step (flow-matching loss, grads, clip at global norm 0.1, AdamW lr 5e-5 eps 1e-10 wd 0) of a
   small Linear DiT (4 layers, D 256 = 4 heads x 64, latents 2 x (8, 16, 16, 16) -> 1,024 video tokens, 32 text
   tokens, fp32): ``jax.jit(train_step)`` on one device (VARIANTS: the training defaults, layers scanned with remat
   dots_no_batch, then unrolled and without remat) against diffusers' SanaVideoTransformer3DModel +
   ``torch.optim.AdamW`` + ``clip_grad_norm_``, same weights, and the same x_t / timestep / text / target (the ones
   the JAX step draws at its first step, moved channels-first). The JAX step also draws its noise, timesteps and
   caption dropout each step; torch reuses the drawn inputs. Median of ``--repeats`` after warm-up, the steps taking
   turns so that a change in machine load touches all alike; run in a child process with one CPU device (the 8
   simulated devices below slow a one-device step by ~10-15%), with the page faults per step (getrusage). The child
   runs under the host-memory setting train.py runs under (``sana_jax._host``: glibc's malloc asks for 2 MB pages),
   torch and JAX alike; then again in a child with the plain environment.
2. Memory per device vs fsdp, on 8 simulated CPU devices (mesh {fsdp: n, data: 8/n}, batch 8): params and AdamW
   moments read from the live sharded state; argument / output / temp bytes from XLA's memory analysis of the
   compiled step. MB = 1e6 bytes.
3. Collective traffic vs sequence (mesh {sequence: n, data: 8/n}, batch 8, 8 latent frames): every collective in
   the compiled step's HLO, and apart in the forward loss alone, with the bytes of its per-device result. The layers
   are unrolled (scan_layers=False) so each layer's collectives appear once per layer in the text.

Ends with a markdown summary to paste into the README.
"""

from __future__ import annotations

import argparse
import functools
import os
import json
import re
import subprocess
import sys
import tempfile
import time

from _timing import interleaved_median_times, minor_faults_per_call

from sana_jax._host import tuned_environ

DEVICES = 8
REMAT_POLICIES = ("none", "dots", "dots_no_batch", "full")
# The JAX steps timed against torch: (row, config overrides on top of the `model` section's defaults). The first is
# what a training config gets unless it says otherwise.
VARIANTS = (("layers scanned, remat dots_no_batch: the training defaults", {}),
            ("layers unrolled, remat dots_no_batch", {"model.scan_layers": False}),
            ("layers scanned, remat none", {"model.remat_policy": "none"}),
            ("layers unrolled, remat none", {"model.scan_layers": False, "model.remat_policy": "none"}))
ARCH = dict(  # diffusers SanaVideoTransformer3DModel config.json keys
    in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=64, num_layers=4,
    num_cross_attention_heads=4, cross_attention_head_dim=64, cross_attention_dim=256, caption_channels=64,
    mlp_ratio=2.5, sample_size=16, patch_size=[1, 2, 2], norm_elementwise_affine=False, norm_eps=1e-6,
    qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)
LATENTS = (8, 16, 16, 16)     # latent frames, height, width, channels (channels-last)
TEXT = (32, 64)               # text tokens, caption channels
TIMING_BATCH, MESH_BATCH = 2, 8
SIZES = (1, 2, 4, 8)
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
MB = 1e6
TOP_SOURCES = 5


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def dit_task(**overrides):
    """(config, DiTTask) of the small DiT with the published optimiser numbers."""
    from sana_jax.testing.training import load_config, null_text

    from sana_jax.training import recipes
    from sana_jax.training.config import DiTModelConfig
    from sana_jax.training.tasks import make_task

    # the `model` section's default layer layout (tiny_smoke's own is for fast tests), the published optimiser
    # without warm-up so every timed step runs at the recipe's lr
    defaults = {f"model.{k}": getattr(DiTModelConfig(), k) for k in ("scan_layers", "remat_policy")}
    config = load_config("tiny_smoke", **{**defaults, "model.architecture": ARCH,
                                          "optim": recipes.adamw(warmup_steps=0), **overrides})
    return config, make_task(config, null_text(*TEXT))


def tokens_per_step(batch: int) -> int:
    f, h, w, _ = LATENTS
    pt, ph, pw = ARCH["patch_size"]
    return batch * (f // pt) * (h // ph) * (w // pw)


# --- 1. step time -------------------------------------------------------------------------------------------------

def jax_step(config, task, batch):
    """(run one step -> its loss, compile seconds, the compiled step, the step's first noised inputs) of the jitted
    JAX train step from a fresh state; the state is carried (and donated) from call to call."""
    import flax.linen as nn
    import jax

    from sana_jax import _compile
    from sana_jax.training.state import init_state, learning_rate, make_optimizer
    from sana_jax.training.step import train_step

    optimizer = make_optimizer(config.optim)
    state = jax.jit(lambda: nn.meta.unbox(init_state(task, optimizer, batch, config.seed, False)))()
    inputs = task.model_inputs(batch, jax.random.fold_in(state.rng, state.step))  # what step 0 draws
    # compiled with the options the trainer's step uses (sana_jax.training.step.ShardedStep)
    step = _compile.jit(functools.partial(train_step, task=task, optimizer=optimizer,
                                          schedule=learning_rate(config.optim)), donate_argnums=0)
    start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    carry = {"state": state}

    def run():
        carry["state"], metrics = compiled(carry["state"], batch)
        return float(jax.block_until_ready(metrics)["loss"])

    return run, compile_s, compiled, inputs


def step_time(warmup: int, repeats: int) -> dict:
    """Median seconds per step of torch and of the jitted JAX step in each of VARIANTS, their step-0 losses, page
    faults per step and the JAX compile times."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from diffusers import SanaVideoTransformer3DModel
    from sana_jax.testing.training import random_batch

    torch.manual_seed(0)
    ref = SanaVideoTransformer3DModel(**{**ARCH, "patch_size": tuple(ARCH["patch_size"])}).train()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)  # every JAX task starts from ``ref``'s weights
        tasks = [dit_task(**{"model.init_from": tmp, **overrides}) for _, overrides in VARIANTS]
    batch = {k: jnp.asarray(v) for k, v in random_batch(TIMING_BATCH, LATENTS, *TEXT).items()}
    steps = [jax_step(*task, batch) for task in tasks]
    inputs = steps[0][3]

    def channels_first(a):
        return torch.from_numpy(np.ascontiguousarray(np.asarray(a).transpose(0, 4, 1, 2, 3)))

    x_t, target = channels_first(inputs["x_t"]), channels_first(inputs["target"])
    timestep, embeds, mask = (torch.from_numpy(np.array(inputs[k])) for k in ("timestep", "text_embeds", "text_mask"))
    adamw = torch.optim.AdamW(ref.parameters(), lr=5e-5, betas=(0.9, 0.999), eps=1e-10, weight_decay=0.0)

    def run_torch():
        adamw.zero_grad(set_to_none=True)
        v = ref(x_t, embeds, timestep, encoder_attention_mask=mask).sample
        loss = torch.nn.functional.mse_loss(v, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.1)
        adamw.step()
        return loss.item()

    fns = (run_torch, *(run for run, *_ in steps))
    losses = [fn() for fn in fns]  # step 0: same weights, same inputs
    for _ in range(warmup - 1):
        for fn in fns:
            fn()
    times = interleaved_median_times(fns, repeats)
    faults = [minor_faults_per_call(fn) for fn in fns]
    return dict(times=times, losses=losses, compile_s=[c for _, c, *_ in steps], faults=faults,
                params=sum(p.numel() for p in ref.parameters()), threads=torch.get_num_threads(),
                versions=f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({len(jax.devices())} device); "
                         f"torch {torch.__version__} with {torch.get_num_threads()} threads")


def remat_policies(warmup: int, repeats: int) -> dict:
    """Per ``model.remat_policy`` (layers scanned): median seconds per JAX step, taking turns, and XLA's temp bytes
    of the compiled step (activations kept for the backward and the gradients)."""
    import jax.numpy as jnp
    from sana_jax.testing.training import random_batch

    batch = {k: jnp.asarray(v) for k, v in random_batch(TIMING_BATCH, LATENTS, *TEXT).items()}
    runs, temp = [], {}
    for policy in REMAT_POLICIES:
        run, _, compiled, _ = jax_step(*dit_task(**{"model.remat_policy": policy}), batch)
        temp[policy] = compiled.memory_analysis().temp_size_in_bytes
        runs.append(run)
    for _ in range(warmup):
        for run in runs:
            run()
    return dict(times=dict(zip(REMAT_POLICIES, interleaved_median_times(runs, repeats))), temp=temp)


# --- 2. memory per device vs fsdp ---------------------------------------------------------------------------------

def example_batch(batch: int) -> dict:
    import jax
    import jax.numpy as jnp

    return {"latents": jax.ShapeDtypeStruct((batch, *LATENTS), jnp.float32),
            "text_embeds": jax.ShapeDtypeStruct((batch, *TEXT), jnp.float32),
            "text_mask": jax.ShapeDtypeStruct((batch, TEXT[0]), jnp.int32)}


def bytes_per_device(tree) -> int:
    import jax

    return sum(leaf.addressable_shards[0].data.nbytes for leaf in jax.tree_util.tree_leaves(tree))


def memory_vs_fsdp(progress) -> tuple[list, list]:
    """Per fsdp size: params / optimiser bytes per device and XLA's memory analysis; and the params that the
    largest fsdp leaves whole (path, shape, logical axes, bytes)."""
    import flax.linen as nn
    import jax
    from jax.sharding import PartitionSpec

    from sana_jax.training import mesh as mesh_lib
    from sana_jax.training.state import abstract_state, learning_rate, make_optimizer
    from sana_jax.training.step import ShardedStep

    config, task = dit_task(**{"model.remat_policy": "none"})
    optimizer, schedule = make_optimizer(config.optim), learning_rate(config.optim)
    example = example_batch(MESH_BATCH)
    rows, whole = [], []
    for n in progress(SIZES, desc="fsdp"):
        mesh = mesh_lib.make_mesh({"fsdp": n, "data": DEVICES // n})
        program = ShardedStep(task, optimizer, schedule, mesh, mesh_lib.DEFAULT_RULES, example, seed=config.seed)
        state = program.init()
        mem = program.lower(state, example).compile().memory_analysis()
        rows.append(dict(n=n, params=bytes_per_device(state.params), opt=bytes_per_device(state.opt_state),
                         arg=getattr(mem, "argument_size_in_bytes", None),
                         out=getattr(mem, "output_size_in_bytes", None),
                         temp=getattr(mem, "temp_size_in_bytes", None)))
        if n == SIZES[-1]:
            boxed, _ = abstract_state(task, optimizer, example, config.seed, False)
            logical = jax.tree_util.tree_leaves(nn.get_partition_spec(boxed.params),
                                                is_leaf=lambda x: isinstance(x, PartitionSpec))
            for (path, leaf), names in zip(jax.tree_util.tree_leaves_with_path(state.params), logical):
                if leaf.size > 1 and leaf.addressable_shards[0].data.nbytes == leaf.nbytes:
                    whole.append((jax.tree_util.keystr(path), leaf.shape, tuple(names), leaf.nbytes))
        del state
    return rows, whole


# --- 3. collective traffic vs sequence ----------------------------------------------------------------------------

_COLLECTIVE = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start|-done)?\(")
_SHAPE = re.compile(r"\b(pred|bf16|f8\w*|[fsuc]\d+)\[([\d,]*)\]")
_DTYPE_BYTES = {"pred": 1, "c64": 8, "c128": 16}
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def _shape_bytes(dtype: str, dims: str) -> int:
    size = 1
    for d in filter(None, dims.split(",")):
        size *= int(d)
    per = _DTYPE_BYTES.get(dtype) or (1 if dtype.startswith("f8") else int(re.sub(r"\D", "", dtype)) // 8)
    return size * per


def _source(op_name: str) -> str:
    """A short, layer-independent name for the JAX op a collective came from: ``bwd blocks/ff/reshape``; ops
    XLA merged from many places (the gradient reduction) become ``bwd (N ops merged)``."""
    backward = "transpose(" in op_name
    name = re.sub(r"jit\([^()]*\)/", "", op_name)
    name = re.sub(r"(transpose\()?jvp\(([^()]*)\)\)?", r"\2", name).replace("SanaVideoTransformer/", "")
    name = re.sub(r"transformer_blocks_\d+", "blocks", name)
    if ":" in name:
        head = name.split("(")[0] if "(" in name else ""
        name = f"{head}({name.count(':') + 1} ops merged)"
    return ("bwd " if backward else "fwd ") + name


def collectives(hlo: str) -> tuple[list, int]:
    """The collectives of compiled HLO text as (kind, source, bytes of the per-device result, tuples summed); async
    pairs once, at their ``-done``. Also how many of them sit in a while loop's body (they run more often than
    they are counted here)."""
    found, computation, in_loop = [], None, 0
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    for line in hlo.splitlines():
        if line and not line[0].isspace():
            m = _COMPUTATION.match(line)
            computation = m.group(1) if m else computation
            continue
        m = _COLLECTIVE.search(line)
        if not m or m.group(3) == "-start":
            continue
        op = _OP_NAME.search(line)
        nbytes = sum(_shape_bytes(t, d) for t, d in _SHAPE.findall(m.group(1)))
        found.append((m.group(2), _source(op.group(1) if op else "?"), nbytes))
        in_loop += computation in bodies
    return found, in_loop


def by_kind(found) -> dict:
    """{kind: [count, bytes]} in ``COLLECTIVES`` order."""
    out = {kind: [0, 0] for kind in COLLECTIVES}
    for kind, _, nbytes in found:
        out[kind][0] += 1
        out[kind][1] += nbytes
    return out


def by_source(found) -> list:
    """[(bytes, kind, source, count)], largest first."""
    acc = {}
    for kind, source, nbytes in found:
        c, b = acc.get((kind, source), (0, 0))
        acc[kind, source] = (c + 1, b + nbytes)
    return sorted(((b, k, s, c) for (k, s), (c, b) in acc.items()), reverse=True)


def largest(found) -> str:
    if not found:
        return "none"
    b, kind, source, _ = by_source(found)[0]
    return f"{kind} '{source}' {b / MB:.2f} MB"


def traffic_vs_sequence(progress) -> dict:
    """Per sequence size: the collectives of the compiled step and of the compiled forward loss."""
    import jax

    from sana_jax.training import mesh as mesh_lib
    from sana_jax.training.state import learning_rate, make_optimizer
    from sana_jax.training.step import ShardedStep

    config, task = dit_task(**{"model.scan_layers": False, "model.remat_policy": "none"})
    optimizer, schedule = make_optimizer(config.optim), learning_rate(config.optim)
    example = example_batch(MESH_BATCH)
    key = jax.random.PRNGKey(0)
    out = {"step": {}, "forward": {}, "in_loop": 0}
    for n in progress(SIZES, desc="sequence"):
        mesh = mesh_lib.make_mesh({"sequence": n, "data": DEVICES // n})
        program = ShardedStep(task, optimizer, schedule, mesh, mesh_lib.DEFAULT_RULES, example, seed=config.seed)
        abstract = program.abstract_sharded()
        hlo = {"step": program.lower(abstract, example).compile().as_text()}
        with program.context():
            forward = jax.jit(lambda p, b: task.loss(p, b, key)[0],
                              in_shardings=(program.state_shardings.params, program.batch_shardings))
            hlo["forward"] = forward.lower(abstract.params, example).compile().as_text()
        for name, text in hlo.items():
            out[name][n], in_loop = collectives(text)
            out["in_loop"] += in_loop
    out["param_bytes"] = sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(abstract.params))
    return out


def per_layer_sizes(n: int) -> dict:
    """Per device on mesh {sequence: n, data: 8/n}, in bytes: one layer's token activations (B' x N' x D), its
    linear-attention state S + z (B' x heads x d x (d + 1)) and one frame of tokens (the temporal conv's halo)."""
    f, h, w, _ = LATENTS
    pt, ph, pw = ARCH["patch_size"]
    b = MESH_BATCH // (DEVICES // n)
    frame = (h // ph) * (w // pw)
    d, heads = ARCH["attention_head_dim"], ARCH["num_attention_heads"]
    dim = heads * d
    return {"activations": b * (f // pt // n) * frame * dim * 4, "state": b * heads * d * (d + 1) * 4,
            "frame": b * frame * dim * 4}


# --- report -------------------------------------------------------------------------------------------------------

def _mb(x) -> str:
    return "n/a" if x is None else f"{x / MB:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 warm-up, 3 timed steps")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per implementation (default 15)")
    parser.add_argument("--timing-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--remat-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warmup, repeats = (1, 3) if args.quick else (3, 15)
    repeats = args.repeats or repeats
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.timing_child:
        print(json.dumps(step_time(warmup, repeats)))
        return
    if args.remat_child:
        print(json.dumps(remat_policies(warmup, repeats)))
        return

    # 1. in a child process with one CPU device: 8 simulated devices slow a one-device step by ~10-15% here
    total_start = time.perf_counter()
    print(f"timing the train step ({warmup} warm-up + {repeats} steps each)...", file=sys.stderr)
    def child(flag, env=None):
        """The JSON a ``flag`` child process prints last."""
        proc = subprocess.run([sys.executable, __file__, flag, "--repeats", str(repeats)]
                              + (["--quick"] if args.quick else []), capture_output=True, text=True, env=env)
        if proc.returncode:
            sys.exit(f"the {flag} process failed:\n{proc.stderr}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    tuned = tuned_environ(os.environ)  # what train.py runs under (None: the same as this environment)
    r = child("--timing-child", tuned)
    r_plain = None
    if tuned is not None:
        print("timing the train step again, in the plain environment...", file=sys.stderr)
        r_plain = child("--timing-child")
    print("timing the remat policies...", file=sys.stderr)
    remat = child("--remat-child", tuned)

    import jax

    jax.config.update("jax_num_cpu_devices", DEVICES)  # before anything asks for devices
    from tqdm import tqdm

    progress = functools.partial(tqdm, leave=False, file=sys.stderr)
    summary = []
    tokens = tokens_per_step(TIMING_BATCH)
    t_torch = r["times"][0]
    setting = (f"GLIBC_TUNABLES={tuned['GLIBC_TUNABLES']}" if tuned else
               f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r} (no tunable added here)")
    print(f"{r['versions']}; median of {repeats} after {warmup} warm-up, the {len(VARIANTS) + 1} taking turns\n")
    print(f"## 1. Train step, 4 layers D 256, {r['params'] / 1e6:.2f} M params, batch {TIMING_BATCH} x "
          f"{'x'.join(map(str, LATENTS))} latents -> {tokens:,} tokens, {TEXT[0]} text tokens, fp32\n")
    names = ("diffusers + torch.optim.AdamW (eager)", *(f"sana-jax train_step (jit, {v})" for v, _ in VARIANTS))
    compile_s = ("", *(f"{c:.1f}" for c in r["compile_s"]))
    rows = [(name, f"{t:.3f}", f"{tokens / t:,.0f}", f"{t_torch / t:.2f}x", f"{faults:,.0f}", c, f"{loss:.6f}")
            for name, t, faults, c, loss in zip(names, r["times"], r["faults"], compile_s, r["losses"])]
    header = ("implementation", "median step s", "tokens/s", "ratio torch / this", "page faults / step")
    step_table = table(header + ("compile s", "step-0 loss"), rows)
    print(f"One process under the host-memory setting of train.py and sample.py ({setting}), torch and JAX alike:\n")
    print(step_table)
    plain_table = ""
    if r_plain is not None:
        plain_table = table(header, [(name, f"{t:.3f}", f"{tokens / t:,.0f}", f"{r_plain['times'][0] / t:.2f}x",
                                      f"{faults:,.0f}")
                                     for name, t, faults in zip(names, r_plain["times"], r_plain["faults"])])
        print(f"\nThe same, another process in the plain environment "
              f"(GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}):\n")
        print(plain_table)
    loss_err = max(abs(x - r["losses"][0]) for x in r["losses"]) / abs(r["losses"][0])
    print(f"\nstep-0 loss: largest relative difference to torch {loss_err:.1e} (same weights, same noised inputs); "
          "compile = lower + XLA compile\n")
    summary += [f"Train step (4 layers, D 256, {tokens:,} tokens/step, fp32, 2-core CPU, median of {repeats}; "
                f"{setting}, as train.py runs):", "", step_table, ""]
    if plain_table:
        summary += ["In the plain environment:", "", plain_table, ""]
    base_s, base_temp = remat["times"]["none"], remat["temp"]["none"]
    remat_table = table(("model.remat_policy (layers scanned)", "median step s", "vs none", "XLA temp MB",
                         "vs none"),
                        [(p, f"{remat['times'][p]:.3f}", f"{remat['times'][p] / base_s:.2f}x",
                          _mb(remat["temp"][p]), f"{remat['temp'][p] / base_temp:.2f}x") for p in REMAT_POLICIES])
    print(f"### Remat policies (the same step, one process, taking turns, median of {repeats})\n")
    print(remat_table + "\n")
    summary += ["Remat policies, the same step (layers scanned):", "", remat_table, ""]

    # 2.
    mem_rows, whole = memory_vs_fsdp(progress)
    base = mem_rows[0]["params"] + mem_rows[0]["opt"]
    print(f"## 2. Memory per device vs fsdp (mesh fsdp x data = {DEVICES}, batch {MESH_BATCH}, MB = 1e6 bytes)\n")
    rows = [(m["n"], f"fsdp {m['n']} x data {DEVICES // m['n']}", _mb(m["params"]), _mb(m["opt"]),
             f"{(m['params'] + m['opt']) / base:.3f}", f"{1 / m['n']:.3f}", _mb(m["arg"]), _mb(m["out"]),
             _mb(m["temp"])) for m in mem_rows]
    mem_table = table(("fsdp", "mesh", "params MB", "opt state MB", "params+opt vs fsdp 1", "ideal 1/n",
                       "XLA argument MB", "XLA output MB", "XLA temp MB"), rows)
    print(mem_table)
    print(f"\nThe batch is split over data x fsdp = {DEVICES} devices in every row, so XLA's temp (activations and "
          "gradients of one example, no remat) stays put: fsdp divides params and AdamW moments only.")
    if whole:
        nbytes = sum(b for *_, b in whole)
        print(f"\nParams fsdp {SIZES[-1]} leaves whole: DEFAULT_RULES shard only the logical axis 'embed' over fsdp, "
              f"and these have none ('mlp' and 'heads' go to the tensor axis). With their AdamW mu and nu they hold "
              f"{3 * nbytes / MB:.3f} MB on every device:")
        for path, shape, names, b in whole:
            print(f"  {path} {shape} logical {names} {b / 1e3:.1f} kB")
    print()
    summary += [f"Memory per device, 8 simulated devices, mesh fsdp x data, batch {MESH_BATCH} (MB):", "",
                table(("fsdp", "params+opt MB", "vs fsdp 1", "ideal", "XLA temp MB"),
                      [(m["n"], _mb(m["params"] + m["opt"]), f"{(m['params'] + m['opt']) / base:.3f}",
                        f"{1 / m['n']:.3f}", _mb(m["temp"])) for m in mem_rows]), ""]

    # 3.
    t = traffic_vs_sequence(progress)
    layers, last = ARCH["num_layers"], SIZES[-1]
    print(f"## 3. Collectives vs sequence (mesh sequence x data = {DEVICES}, batch {MESH_BATCH}, {LATENTS[0]} latent "
          f"frames, {layers} layers unrolled; count / MB of per-device results in the compiled HLO)\n")
    rows, totals = [], {}
    for program in ("step", "forward"):
        for n in SIZES:
            kinds, size = by_kind(t[program][n]), per_layer_sizes(n)
            totals[program, n] = sum(b for _, b in kinds.values())
            rows.append((program, n, *(f"{c} / {b / MB:.2f}" for c, b in kinds.values()),
                         f"{totals[program, n] / MB:.2f}", _mb(size["activations"]), _mb(size["state"])))
    print(table(("program", "sequence", *COLLECTIVES, "total MB", "activations / layer MB",
                 "attn state / layer MB"), rows))
    print("\n(per device: activations = B' x N' x D x 4 bytes, attn state = B' x heads x d x (d + 1) x 4, with "
          "B' = batch / data, N' = tokens / sequence)")
    if t["in_loop"]:
        print(f"WARNING: {t['in_loop']} collectives sit in while-loop bodies and run more often than counted here")

    print(f"\nWhere the bytes come from (the JAX op each collective was made for, summed over layers; 'bwd' = in the "
          f"gradient), largest {TOP_SOURCES} per program:\n")
    rows = []
    for program in ("forward", "step"):
        for n in (SIZES[1], last):
            for b, kind, source, count in by_source(t[program][n])[:TOP_SOURCES]:
                rows.append((program, n, kind, source, count, f"{b / MB:.2f}", f"{b / totals[program, n]:.0%}"))
    print(table(("program", "sequence", "collective", "from", "count", "MB", "share"), rows))

    def total(found, keep):
        return sum(b for kind, source, b in found if keep(kind, source))

    def is_attention_state(kind, source):
        return kind == "all-reduce" and "attn1" in source

    def is_gradient(kind, source):
        return kind == "all-reduce" and source.startswith("bwd") and "attn1" not in source

    size = per_layer_sizes(last)
    fwd = t["forward"][last]
    top_b, top_kind, top_source, _ = by_source(fwd)[0]
    grads = {n: total(t["step"][n], is_gradient) for n in SIZES}
    lines = [f"Note. Forward at sequence {last}: {totals['forward', last] / MB:.2f} MB per device. The "
             f"linear-attention state all-reduce is {total(fwd, is_attention_state) / MB:.2f} MB ({layers} layers x "
             f"{size['state'] / MB:.3f} MB, whatever the video length). The largest part is {top_kind} at "
             f"'{top_source}', {top_b / MB:.2f} MB ({top_b / totals['forward', last]:.0%})."]
    def temporal(n):
        return total(t["forward"][n], lambda k, s: k in ("all-to-all", "collective-permute") and "/ff/" in s)

    lines.append("The FFN's collectives (the temporal conv's halo exchange) move "
                 + ", ".join(f"{temporal(n) / MB:.2f} MB at sequence {n} (one frame to each neighbour: "
                             f"{2 * layers * per_layer_sizes(n)['frame'] / MB:.2f})" for n in SIZES[1:]) + ".")
    lines.append(f"Step: the gradient all-reduce is {', '.join(f'{grads[n] / MB:.2f}' for n in SIZES)} MB at "
                 f"sequence {', '.join(map(str, SIZES))} against {t['param_bytes'] / MB:.2f} MB of params (above 1x "
                 "where the sequence and data axes are reduced in separate all-reduces). Largest in the step: "
                 + "; ".join(f"sequence {n}: {largest(t['step'][n])} of {totals['step', n] / MB:.2f}" for n in SIZES)
                 + ".")
    note = "\n".join(lines)
    print("\n" + note + "\n")
    summary += [f"Collectives per device, mesh sequence x data = {DEVICES}, batch {MESH_BATCH}, {layers} layers (MB of "
                "per-device results in the compiled HLO):", "",
                table(("sequence", "step total MB", "step gradient all-reduce MB", "forward total MB",
                       "forward attention-state all-reduce MB", "forward largest"),
                      [(n, f"{totals['step', n] / MB:.2f}", f"{grads[n] / MB:.2f}",
                        f"{totals['forward', n] / MB:.2f}",
                        f"{total(t['forward'][n], is_attention_state) / MB:.2f}",
                        largest(t["forward"][n]))
                       for n in SIZES]), "", note, ""]

    print("## Summary (markdown for the README)\n")
    print("\n".join(summary))
    print(f"(whole script {time.perf_counter() - total_start:.0f} s)")


if __name__ == "__main__":
    main()
