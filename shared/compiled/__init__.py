"""Compiled serving: each version converted to ONNX (skl2onnx), verified against scikit-learn,
served by ONNX Runtime."""
