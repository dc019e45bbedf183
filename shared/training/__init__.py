"""Training: the train function's event handler, fitting, the challenger and its gate, the registry."""
