"""slowfast-serve: serve SlowFast-family video classifiers with TorchServe.

Packages by role:

- ``slowfast_serve.client``: calling a running service (HTTP and gRPC inference, folders, timelines, streams,
  the management API). Needs only ``requests`` and ``rich`` (``pip install ".[client]"``); never imports torch.
- ``slowfast_serve.server``: operating the service from a checkout (archives, the local TorchServe instance,
  weights, checkpoint conversion, export, the KServe layout). Needs the pinned stack (``scripts/install.sh``).
- ``slowfast_serve.training``: fine-tuning and the synthetic motion dataset of the demo model.
- ``slowfast_serve.load``: the soak test.
- ``slowfast_serve.cli``: the ``slowfast-serve`` command line over all of them.

What goes into a model archive is the separate ``handler`` package.
"""

__version__ = "0.1.0"
