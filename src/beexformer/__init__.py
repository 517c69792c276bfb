"""beexformer: binarized transformers with early exits."""

__version__ = "0.1.0"
