"""Serving: the predictor, what an instance serves and how it reloads, request checks, traffic."""
