"""``polyalign serve``: a trained model behind an HTTP API (embed, search) with a search page.

The room above :mod:`polyalign.inference`: it loads, embeds and scores through it and adds only
what a service needs (request parsing and limits, batching of concurrent requests, metrics, the page).
FastAPI and uvicorn are imported only here, never by ``import polyalign``.
"""
