"""Local emulation: the stack, function processes and their declarations, the file-drop router,
synthetic data, the demo."""
