"""Reference builders the tests, benchmarks and users share. Most need the test extras (torch, diffusers).

    numerics.py                 rel_err, randomize_ (every parameter of a PyTorch module random)
    pipelines.py                tiny random-weight pipelines in the diffusers folder layout
                                (``python -m sana_jax.testing.pipelines OUT_DIR [wan|ltx2]``)
    training.py                 the tiny training setup: configs/ of a source checkout, random batches
    block_causal_reference.py   a float64 PyTorch reference of the block-causal transformer
    references.py               tiny random-weight diffusers references: the transformer, Wan / LTX-2 / DC-AE VAEs
    linear_attention.py         float64 NumPy linear-attention references; assert_matches_references for kernels
"""
