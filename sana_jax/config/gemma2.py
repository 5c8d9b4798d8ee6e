"""transformers ``Gemma2Model`` config (the text encoder), with the translation of legacy config.json keys."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from sana_jax.config.base import ComponentConfig, ConfigError, _to_json

TRANSFORMERS_VERSION = "5.23.0"
GEMMA2_LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclasses.dataclass(frozen=True)
class Gemma2Config(ComponentConfig):
    """transformers ``Gemma2Config`` for the text encoder ``Gemma2Model``; keys and defaults are transformers 5.23's.

    A transformers ``config.json`` has no ``_class_name``: ``model_type`` ("gemma2") names the class. Its
    bookkeeping keys ``architectures``, ``model_type`` and ``transformers_version`` are checked on reading and
    written anew (``["Gemma2Model"]``, since the folder this project writes holds a bare ``Gemma2Model``).
    transformers 4.x spellings are read and written in the 5.x form: top-level ``rope_theta`` (and a null or
    default ``rope_scaling``) -> ``rope_parameters``, ``torch_dtype`` -> ``dtype``; ``hidden_act``,
    ``cache_implementation`` and ``sliding_window_size`` (equal to ``sliding_window``), which ``Gemma2Model``
    ignores, are dropped. ``rope_theta`` is a field here and
    ``rope_parameters: {rope_theta, rope_type: "default"}`` in the file; other RoPE types are an error.
    Fields the model does not use (``use_cache``, ``initializer_range``, token ids, ``final_logit_softcapping``
    of the LM head, ``tie_word_embeddings``, ``dtype`` = the stored weights' dtype) are kept for the round trip.
    """

    class_name: ClassVar[str] = "Gemma2Model"
    library: ClassVar[str] = "transformers"
    model_type: ClassVar[str] = "gemma2"

    vocab_size: int = 256000
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 8192
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 1
    bos_token_id: int | None = 2
    tie_word_embeddings: bool = True
    rope_theta: float = 10000.0
    attention_bias: bool = False
    attention_dropout: float | None = 0.0
    query_pre_attn_scalar: int = 256
    sliding_window: int | None = 4096
    layer_types: tuple[str, ...] | None = None
    final_logit_softcapping: float | None = 30.0
    attn_logit_softcapping: float | None = 50.0
    use_bidirectional_attention: bool | None = None
    dtype: str | None = None

    def __post_init__(self):
        if self.hidden_activation != "gelu_pytorch_tanh":
            raise ConfigError(f"hidden_activation {self.hidden_activation!r} is not supported; "
                              "expected 'gelu_pytorch_tanh'")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.layer_types is not None:
            bad = sorted(set(self.layer_types) - set(GEMMA2_LAYER_TYPES))
            if bad or len(self.layer_types) != self.num_hidden_layers:
                raise ConfigError(f"layer_types must list {self.num_hidden_layers} (num_hidden_layers) entries of "
                                  f"{GEMMA2_LAYER_TYPES}; got {list(self.layer_types)}")
        if "sliding_attention" in self.layer_type_list and (self.sliding_window is None or self.sliding_window < 1):
            raise ConfigError(f"sliding_window is {self.sliding_window!r} but there are sliding_attention layers")
        if self.use_bidirectional_attention:
            raise ConfigError("use_bidirectional_attention=true is not supported; Gemma2Model here is causal")
        if self.attention_dropout not in (0.0, None):
            raise ConfigError(f"attention_dropout {self.attention_dropout} is not supported; expected 0.0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "Gemma2Config":
        data = dict(data)
        model_type = data.pop("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected {cls.model_type!r}")
        architectures = data.pop("architectures", None)
        if architectures is not None and not (isinstance(architectures, list)
                                              and all(isinstance(a, str) for a in architectures)):
            raise ConfigError(f"{source}: key 'architectures': expected a list of class names, got {architectures!r}")
        if not isinstance(data.pop("transformers_version", ""), str):
            raise ConfigError(f"{source}: key 'transformers_version': expected a string")
        data.pop("hidden_act", None)             # transformers 4.x duplicate; Gemma2 reads hidden_activation
        data.pop("cache_implementation", None)   # a generation setting ("hybrid"), not architecture
        window = data.pop("sliding_window_size", None)  # transformers 4.42's duplicate of sliding_window
        if window is not None and window != data.get("sliding_window", cls.sliding_window):
            raise ConfigError(f"{source}: sliding_window_size {window} disagrees with sliding_window "
                              f"{data.get('sliding_window', cls.sliding_window)} (transformers reads sliding_window)")
        if "torch_dtype" in data:
            legacy = data.pop("torch_dtype")
            if data.setdefault("dtype", legacy) != legacy:
                raise ConfigError(f"{source}: torch_dtype {legacy!r} and dtype {data['dtype']!r} disagree")
        data.update(cls._rope_theta_from(data, source))
        return super().from_dict(data, source=source)

    @staticmethod
    def _rope_theta_from(data: dict[str, Any], source: str) -> dict[str, Any]:
        """Pops ``rope_parameters`` / ``rope_scaling`` / ``rope_theta`` from ``data``; returns {rope_theta: ...}."""
        params = data.pop("rope_parameters", None)
        scaling = data.pop("rope_scaling", None)
        thetas = {}
        if "rope_theta" in data:
            thetas["rope_theta"] = data.pop("rope_theta")
        for key, value in (("rope_parameters", params), ("rope_scaling", scaling)):
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: key {key!r}: expected an object, got {value!r}")
            rope_type = value.get("rope_type", value.get("type", "default"))
            unknown = sorted(set(value) - {"rope_theta", "rope_type", "type"})
            if rope_type != "default" or unknown:
                raise ConfigError(f"{source}: key {key!r}: only the 'default' RoPE (keys rope_theta, rope_type) is "
                                  f"supported; got {value!r}")
            if "rope_theta" in value:
                thetas[f"{key}.rope_theta"] = value["rope_theta"]
        if len(set(thetas.values())) > 1:
            raise ConfigError(f"{source}: the RoPE theta is given differently in {thetas}")
        return {"rope_theta": next(iter(thetas.values()))} if thetas else {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["rope_parameters"] = {"rope_theta": out.pop("rope_theta"), "rope_type": "default"}
        out.update(architectures=[self.class_name], model_type=self.model_type,
                   transformers_version=TRANSFORMERS_VERSION)
        return dict(sorted(out.items()))

    # Derived quantities (not config keys).
    @property
    def layer_type_list(self) -> tuple[str, ...]:
        """Per layer: 'sliding_attention' or 'full_attention'; by default even layers slide (transformers' rule)."""
        if self.layer_types is not None:
            return tuple(self.layer_types)
        return tuple(GEMMA2_LAYER_TYPES[i % 2] for i in range(self.num_hidden_layers))

    @property
    def num_layers(self) -> int:
        return self.num_hidden_layers


# The published Gemma-2-2B (the SANA-Video text encoder is its instruction-tuned decoder): 2,614,341,888 params.
GEMMA2_2B = Gemma2Config(
    vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0, sliding_window=4096, rms_norm_eps=1e-6, rope_theta=10000.0,
    max_position_embeddings=8192, hidden_activation="gelu_pytorch_tanh", pad_token_id=0, eos_token_id=1,
    bos_token_id=2,
)
