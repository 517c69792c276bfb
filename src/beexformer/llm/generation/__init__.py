"""Decoding strategies for early exit in causal LMs: full, early-exit and self-speculative."""

from beexformer.llm.generation.base import DecodingStrategy, GenerationResult
from beexformer.llm.generation.engine import DecodeState, LayerwiseDecoder, StepOutcome
from beexformer.llm.generation.strategies import (
    DraftStatistics,
    EarlyExitDecoding,
    FullDecoding,
    GateBudget,
    GateLedger,
    GatePrices,
    SelfSpeculativeDecoding,
)

__all__ = [
    "DecodeState",
    "DecodingStrategy",
    "DraftStatistics",
    "EarlyExitDecoding",
    "FullDecoding",
    "GateBudget",
    "GateLedger",
    "GatePrices",
    "GenerationResult",
    "LayerwiseDecoder",
    "SelfSpeculativeDecoding",
    "StepOutcome",
]
