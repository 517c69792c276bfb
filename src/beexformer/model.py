"""BEExformer: a binarized transformer encoder with an exit after every block (arXiv 2412.05225).

Read top to bottom: embeddings -> C blocks (binarized attention + SLFN), each followed by an exit head.
Training runs every sample through all blocks and sums the exits' losses (soft routing, `loss.py`);
inference with `early_exit` runs the batch block by block and drops the samples whose exit rule fired, so
the work done is that of the blocks each sample really ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from beexformer.config import BEExformerConfig
from beexformer.errors import CheckpointError
from beexformer.exits import ExitRule, ExitTracker, Prediction
from beexformer.layers import BEExBlock, BEExEmbeddings, BinaryLinear, ExitHead
from beexformer.loss import soft_routing_loss

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class BEExformerOutput:
    exit_logits: Tensor  # [C, B, K]: the logits of every exit
    loss: Tensor | None = None  # soft-routing loss, when labels were given
    exit_weights: Tensor | None = None  # [C, B] routing weights used in the loss
    # With output_internals=True (distillation): [embeddings, block 1, ..., block C] outputs, each [B, T, d],
    # and every block's attention probabilities [B, h, T, T].
    hidden_states: list[Tensor] | None = None
    attentions: list[Tensor] | None = None

    @property
    def logits(self) -> Tensor:
        """The last exit's logits [B, K]."""
        return self.exit_logits[-1]


class BEExformer(nn.Module):
    def __init__(self, config: BEExformerConfig) -> None:
        super().__init__()
        self.config = config.validate()
        c = config
        self.embeddings = BEExEmbeddings(
            c.vocab_size,
            c.d_model,
            c.max_len,
            position=c.position,
            combine=c.combine,
            n_segments=c.n_segments,
            bits=c.embedding_bits,
            quantizer=c.weight_quantizer,
            dropout=c.dropout,
            eps=c.layer_norm_eps,
        )
        n_distinct = 1 if c.share_weights else c.n_blocks
        self.blocks = nn.ModuleList(BEExBlock(c) for _ in range(n_distinct))
        self.exits = nn.ModuleList(
            ExitHead(
                c.d_model, c.exit_hidden, c.n_classes, bits=c.exit_bits, pre_norm=c.norm == "pre", pooling=c.pooling
            )
            for _ in range(c.n_blocks)
        )

    def block(self, index: int) -> BEExBlock:
        """The block at depth `index` (0-based); with shared weights, the one block."""
        return self.blocks[0 if self.config.share_weights else index]

    @staticmethod
    def _default_mask(input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        return torch.ones_like(input_ids) if attention_mask is None else attention_mask

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_internals: bool = False,
    ) -> BEExformerOutput:
        mask = self._default_mask(input_ids, attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        exit_logits, hidden, attentions = [], [x], []
        for c in range(self.config.n_blocks):
            x, probs = self.block(c)(x, mask, return_attention=True)
            hidden.append(x)
            attentions.append(probs)
            exit_logits.append(self.exits[c](x, mask))
        stacked = torch.stack(exit_logits)
        internals = {"hidden_states": hidden, "attentions": attentions} if output_internals else {}
        if labels is None:
            return BEExformerOutput(stacked, **internals)
        loss, weights = soft_routing_loss(stacked, labels, self.config.loss_weighting, self.config.entropy_temperature)
        return BEExformerOutput(stacked, loss, weights, **internals)

    def hidden_states(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> list[Tensor]:
        """[embeddings output, block 1 output, ..., block C output], each [B, T, d] (as Hugging Face's
        output_hidden_states): what the pretrained-start test compares with BertModel layer by layer."""
        mask = self._default_mask(input_ids, attention_mask)
        states = [self.embeddings(input_ids, token_type_ids)]
        for c in range(self.config.n_blocks):
            states.append(self.block(c)(states[-1], mask))
        return states

    @torch.no_grad()
    def early_exit(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        token_type_ids: Tensor | None,
        rule: ExitRule,
    ) -> Prediction:
        """Per-sample early exit with batch compaction: after each block the samples that leave are
        removed from the batch, so later blocks run only on the rest."""
        mask = self._default_mask(input_ids, attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        tracker = ExitTracker(rule, input_ids.shape[0], self.config.n_blocks, self.config.n_classes)
        for c in range(self.config.n_blocks):
            x = self.block(c)(x, mask)
            keep = tracker.step(self.exits[c](x, mask).numpy())
            if tracker.done:
                break
            if not keep.all():
                keep_t = torch.from_numpy(keep)
                x, mask = x[keep_t], mask[keep_t]
        return tracker.decision()

    # --- persistence: config JSON + safetensors, as in Hugging Face's save_pretrained convention ---

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / CONFIG_NAME)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt", "beexformer": "latent"})

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> BEExformer:
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory}: no {name} (is this a BEExformer model directory?)")
        model = cls(BEExformerConfig.load(directory / CONFIG_NAME))
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except Exception as err:  # safetensors raises several types for truncated or corrupt files
            raise CheckpointError(f"{directory / WEIGHTS_NAME}: cannot read weights ({err})") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{directory / WEIGHTS_NAME}: weights do not fit the config ({first})") from None
        return model.eval()

    def float_twin(self) -> BEExformer:
        """A float32 model of the same architecture whose weights are this model's effective weights
        (alpha * sign(W) where binarized): the baseline the 1-bit engine is measured against."""
        twin = BEExformer(self.config.float_twin())
        twin.load_state_dict(self.state_dict())
        with torch.no_grad():
            for mine, theirs in zip(self.modules(), twin.modules(), strict=True):
                if hasattr(mine, "twin_weight"):
                    theirs.weight.copy_(mine.twin_weight())
        return twin.eval()


def binary_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose weights are stored as 1 bit (binary linears and embeddings)."""
    return [(n, m) for n, m in model.named_modules() if getattr(m, "is_binary", False)]


__all__ = ["BEExformer", "BEExformerOutput", "Prediction", "BinaryLinear", "binary_modules"]
