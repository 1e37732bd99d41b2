"""SlowFast-family video action recognition for TorchServe.

The pure pipeline (no TorchServe imports): :mod:`handler.decode` (PyAV, in memory),
:mod:`handler.transforms` (Kinetics preprocessing, pathway split), :mod:`handler.models` (registry and
checkpoints), :mod:`handler.labels`, :mod:`handler.request` (options), :mod:`handler.pipeline` (batches).
:mod:`handler.ts_handler` is the TorchServe adapter over them.
"""
