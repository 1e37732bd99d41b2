"""Operating the service from a checkout: archives, the local TorchServe, weights, conversion, export, KServe.

``REPO`` is the checkout every module here works in (its ``config.properties``, ``model_store/``, ``run/``).
"""

from slowfast_serve.checkout import checkout

REPO = checkout()
