"""Files the package carries: TorchServe's base ``config.properties`` and the bundled models (``models/``).

In a checkout these are links to the repository's own files (one copy of each); a wheel holds copies, so an
installed package finds them here, through :mod:`importlib.resources`, wherever it runs.
"""
