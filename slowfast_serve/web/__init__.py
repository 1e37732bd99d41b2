"""The web page to try the service (docs/web.md): ``command`` (``slowfast-serve web`` and the page ``make serve``
starts), ``proxy`` (its server: the page's files and a proxy to TorchServe that keeps the tokens), ``static/``."""
