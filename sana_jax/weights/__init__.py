"""Weight conversion: rulebooks (PyTorch <-> Flax tables) and state-dict IO."""

from sana_jax.weights.io import read_checkpoint_file, read_state_dict, write_state_dict
from sana_jax.weights.rulebook import (Rule, WeightMappingError, check_against, flatten, flax_to_torch,
                                       stack_layers, torch_to_flax, unflatten, unstack_layers)

__all__ = ["Rule", "WeightMappingError", "check_against", "flatten", "flax_to_torch", "read_checkpoint_file",
           "read_state_dict", "stack_layers", "torch_to_flax", "unflatten", "unstack_layers", "write_state_dict"]
