"""The device mesh (``data``, ``fsdp``, ``tensor``, ``sequence``) and the logical-axis rules that map params and
activations onto it.

Params and activations carry logical names (``batch``, ``frames``, ``embed``, ``mlp``, ``heads``, ``layers``, ...);
``DEFAULT_RULES`` says which mesh axes each may use. A logical axis takes the first of its rules whose mesh axes
are still free in that array, so activations' ``embed`` stays whole when ``batch`` already uses ``fsdp``, while
params' ``embed`` is sharded over ``fsdp`` (ZeRO-3: params and optimiser state divided, gathered per layer).

The ``sequence`` axis shards video tokens along latent frames. Linear attention then needs only the (d x d) and
(d,) sums reduced across it — a few MB per layer, whatever the video length — where softmax attention would need
all keys and values; the FFN's 3-tap temporal conv exchanges one frame with each neighbour.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "sequence")

DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("frames", "sequence"),
    ("embed", "fsdp"),
    # A param with no `embed` axis (the FFN's depthwise kernel, q/k norm scales) divides its `mlp` / `heads` axis
    # over tensor x fsdp, so fsdp divides every matrix; one that has `embed` keeps fsdp there.
    ("mlp", ("tensor", "fsdp")),
    ("mlp", "tensor"),
    ("heads", ("tensor", "fsdp")),
    ("heads", "tensor"),
    ("height", None),
    ("width", None),
    ("layers", None),
)


def make_mesh(shape: dict, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over ``devices`` (all by default) with ``MESH_AXES`` sized by ``shape`` ({axis: size}; one size may be
    -1: whatever the devices leave; missing axes are 1). Axis types are Auto (sharding by constraints)."""
    devices = list(jax.devices() if devices is None else devices)
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh axes {unknown} are unknown; expected some of {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: sizes must be >= 1, with at most one -1")
    if -1 in sizes:
        rest = int(np.prod([s for s in sizes if s != -1]))
        if len(devices) % rest:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {len(devices)} devices are not divisible by {rest}")
        sizes[sizes.index(-1)] = len(devices) // rest
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices; "
                         f"{len(devices)} are available")
    return Mesh(np.asarray(devices, dtype=object).reshape(sizes), MESH_AXES)


def rules_from(config_rules) -> tuple:
    """Rules as given in a config (a sequence of (logical, mesh axis | tuple | None)), or the defaults."""
    if not config_rules:
        return DEFAULT_RULES
    return tuple((str(name), tuple(axes) if isinstance(axes, (list, tuple)) else axes) for name, axes in config_rules)


def logical_shardings(mesh: Mesh, rules, tree):
    """NamedShardings for a pytree of logical PartitionSpecs (or of boxed params: their names are read)."""
    specs = nn.get_partition_spec(tree) if not _is_spec_tree(tree) else tree
    return nn.logical_to_mesh_sharding(specs, mesh, list(rules))


def _is_spec_tree(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, PartitionSpec))
    return bool(leaves) and all(isinstance(x, PartitionSpec) for x in leaves)


def batch_shardings(mesh: Mesh, rules, axes: dict) -> dict:
    """{key: NamedSharding} for a batch whose arrays have logical ``axes`` ({key: tuple of names})."""
    return {k: NamedSharding(mesh, nn.logical_to_mesh_axes(v, list(rules))) for k, v in axes.items()}


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
