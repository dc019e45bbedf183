"""The feedback loop: the prediction log, labels that arrive later, their join, live quality."""
