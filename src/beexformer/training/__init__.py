"""Training on GLUE with Hugging Face Accelerate: arguments, atomic checkpoints, the loop."""

from beexformer.training.arguments import TrainingArguments

__all__ = ["TrainingArguments"]
