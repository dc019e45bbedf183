"""The dashboard (issue 17): server-rendered pages over the buckets, read-only, no JavaScript.

``routes.handle`` answers one request; ``sources.Sources`` reads the facts through the CLI's own
functions on cached views of the buckets (``cache.ReadCache``); the pages are built with the
escaping builder ``html`` and the SVG charts of ``svg``; ``formatting.number`` writes every number.
Layout and headers: docs/design.md section 5 (dashboard).
"""
