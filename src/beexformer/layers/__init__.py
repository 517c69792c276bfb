"""Building blocks of BEExformer: binary linear and embedding layers, attention, SLFN, block, exit head."""

from beexformer.layers.attention import BinaryMultiHeadSelfAttention
from beexformer.layers.binary_linear import BinaryLinear
from beexformer.layers.block import BEExBlock
from beexformer.layers.embedding import BEExEmbeddings, BinaryEmbedding
from beexformer.layers.exit_head import ExitHead, masked_mean_pool
from beexformer.layers.slfn import SLFN, FeedForward, build_ffn

__all__ = [
    "BEExBlock",
    "BEExEmbeddings",
    "BinaryEmbedding",
    "BinaryLinear",
    "BinaryMultiHeadSelfAttention",
    "ExitHead",
    "FeedForward",
    "SLFN",
    "build_ffn",
    "masked_mean_pool",
]
