"""Rulebooks: tables that map PyTorch state-dict keys to Flax param paths, read in both directions.

A ``Rule`` pairs a PyTorch key pattern with a Flax path pattern (``/``-separated) and a ``Layout`` that owns the
array transform each way. Patterns hold ``{name}`` placeholders that match layer indices. Per-layer Flax keys
(``transformer_blocks_3/...``) are stacked into a scanned layout (``transformer_blocks/...`` with a leading
layer axis) by ``stack_layers`` and back by ``unstack_layers``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable, Iterable, Mapping

import numpy as np

from sana_jax._io import LazyArray, empty_aligned


@dataclasses.dataclass(frozen=True)
class Layout:
    """An array transform PyTorch -> Flax and its inverse."""

    name: str
    to_flax: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]


IDENTITY = Layout("identity", lambda w: w, lambda w: w)
# nn.Linear (out, in) <-> Dense (in, out).
LINEAR = Layout("linear", lambda w: w.T, lambda w: w.T)
# 1x1 Conv2d (out, in, 1, 1) <-> Dense (in, out).
CONV1X1 = Layout("conv1x1", lambda w: w[:, :, 0, 0].T, lambda w: w.T[:, :, None, None])
# Depthwise Conv2d (C, 1, kh, kw) <-> (kh, kw, C).
DEPTHWISE2D = Layout("depthwise2d", lambda w: w[:, 0].transpose(1, 2, 0), lambda w: w.transpose(2, 0, 1)[:, None])
# Temporal Conv2d over (frames, tokens), kernel (k, 1): (out, in, k, 1) <-> (k, in, out).
TEMPORAL = Layout("temporal", lambda w: w[..., 0].transpose(2, 1, 0), lambda w: w.transpose(2, 1, 0)[..., None])
# Conv3d (out, in, kt, kh, kw) <-> (kt, kh, kw, in, out).
CONV3D = Layout("conv3d", lambda w: w.transpose(2, 3, 4, 1, 0), lambda w: w.transpose(4, 3, 0, 1, 2))


@dataclasses.dataclass(frozen=True)
class Rule:
    torch: str
    flax: str
    layout: Layout = IDENTITY

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _regex(pattern: str) -> re.Pattern:
        parts = re.split(r"(\{\w+\})", pattern)
        body = "".join(f"(?P<{p[1:-1]}>\\d+)" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{body}$")

    def match(self, key: str, direction: str) -> str | None:
        """The other side's key for ``key`` (direction 'to_flax' or 'to_torch'), or None."""
        src, dst = (self.torch, self.flax) if direction == "to_flax" else (self.flax, self.torch)
        m = self._regex(src).match(key)
        return dst.format(**m.groupdict()) if m else None


def linear(torch: str, flax: str, *, bias: bool = True, layout: Layout = LINEAR) -> list[Rule]:
    """Rules for a Linear-like layer: ``{torch}.weight`` -> ``{flax}/kernel`` (+ bias)."""
    rules = [Rule(f"{torch}.weight", f"{flax}/kernel", layout)]
    if bias:
        rules.append(Rule(f"{torch}.bias", f"{flax}/bias"))
    return rules


class WeightMappingError(ValueError):
    """A state dict that does not match the model: missing, unexpected or mis-shaped keys."""


def _convert(tensors: Mapping[str, np.ndarray], rules: Iterable[Rule], direction: str, source: str):
    rules = list(rules)
    out, unexpected = {}, []
    for key, value in tensors.items():
        for rule in rules:
            target = rule.match(key, direction)
            if target is not None:
                out[target] = getattr(rule.layout, direction)(np.asarray(value))
                break
        else:
            unexpected.append(key)
    if unexpected:
        raise WeightMappingError(f"{source}: unexpected key(s) no rule maps: {sorted(unexpected)[:20]}"
                                 + (f" (+{len(unexpected) - 20} more)" if len(unexpected) > 20 else ""))
    return out


def torch_to_flax(state_dict: Mapping[str, np.ndarray], rules: Iterable[Rule], *, source: str = "state dict"):
    """PyTorch-named arrays -> flat Flax dict {'a/b/kernel': array}. Unmapped keys are an error."""
    return _convert(state_dict, rules, "to_flax", source)


def flax_to_torch(flat: Mapping[str, np.ndarray], rules: Iterable[Rule], *, source: str = "params"):
    """Flat Flax dict -> PyTorch-named arrays (contiguous copies, ready to save)."""
    return {k: np.ascontiguousarray(v) for k, v in _convert(flat, rules, "to_torch", source).items()}


def check_against(flat: Mapping[str, np.ndarray], expected: Mapping[str, tuple], rules: Iterable[Rule], *,
                  source: str) -> None:
    """Stops on any missing, unexpected or mis-shaped key, naming the PyTorch key and both shapes (PyTorch layout)."""
    rules = list(rules)

    def torch_view(path, shape):
        """(PyTorch key, shape in PyTorch layout) for a Flax path and Flax shape."""
        for rule in rules:
            name = rule.match(path, "to_torch")
            if name is not None:
                return name, tuple(rule.layout.to_torch(np.broadcast_to(np.zeros((), np.float32), shape)).shape)
        return path, tuple(shape)

    problems = []
    missing = sorted(set(expected) - set(flat))
    if missing:
        problems.append("missing key(s): " + ", ".join("%s (expected shape %s)" % torch_view(k, expected[k])
                                                       for k in missing[:20]))
    unexpected = sorted(set(flat) - set(expected))
    if unexpected:
        problems.append("unexpected key(s): " + ", ".join(torch_view(k, flat[k].shape)[0] for k in unexpected[:20]))
    for k in sorted(set(flat) & set(expected)):
        if tuple(flat[k].shape) != tuple(expected[k]):
            name, got = torch_view(k, flat[k].shape)
            problems.append(f"{name} has shape {got}, the config expects {torch_view(k, expected[k])[1]}")
    if problems:
        raise WeightMappingError(f"{source} does not match the config: " + "; ".join(problems))


def stack_layers(flat: Mapping[str, np.ndarray], prefix: str, num_layers: int) -> dict[str, np.ndarray]:
    """``{prefix}_{i}/rest`` for i < num_layers -> ``{prefix}/rest`` stacked on a new leading axis."""
    out, groups = {}, {}
    pat = re.compile(rf"^{re.escape(prefix)}_(\d+)/(.*)$")
    for key, value in flat.items():
        m = pat.match(key)
        if m:
            groups.setdefault(m.group(2), {})[int(m.group(1))] = value
        else:
            out[key] = value
    for rest, layers in groups.items():
        if sorted(layers) != list(range(num_layers)):
            missing = sorted(set(range(num_layers)) - set(layers))
            raise WeightMappingError(f"{prefix}: layer(s) {missing} missing for '{rest}'")
        out[f"{prefix}/{rest}"] = _stack([layers[i] for i in range(num_layers)])
    return out


def _stack(values: list) -> np.ndarray | LazyArray:
    """``np.stack``; of `LazyArray`s, a `LazyArray` filling one preallocated array layer by layer when read."""
    if not any(isinstance(v, LazyArray) for v in values):
        return np.stack(values)
    first = values[0]
    if any(tuple(v.shape) != tuple(first.shape) or np.dtype(v.dtype) != np.dtype(first.dtype) for v in values):
        return np.stack([np.asarray(v) for v in values])  # np.stack's own error names the mismatch

    def read() -> np.ndarray:
        out = empty_aligned((len(values), *first.shape), first.dtype)
        for i, v in enumerate(values):
            out[i] = np.asarray(v)
        return out

    return LazyArray((len(values), *first.shape), first.dtype, read)


def unstack_layers(flat: Mapping[str, np.ndarray], prefix: str, *, shapes: bool = False) -> dict[str, np.ndarray]:
    """Inverse of ``stack_layers``; ``shapes=True``: of a map key -> shape tuple."""
    out = {}
    for key, value in flat.items():
        if key.startswith(prefix + "/"):
            rest = key[len(prefix) + 1:]
            for i in range(value[0] if shapes else value.shape[0]):
                out[f"{prefix}_{i}/{rest}"] = tuple(value[1:]) if shapes else value[i]
        else:
            out[key] = value
    return out


def flatten(tree: Mapping, prefix: str = "") -> dict:
    """Nested dict -> {'a/b/c': leaf}."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, path))
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping) -> dict:
    """{'a/b/c': leaf} -> nested dict."""
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out
