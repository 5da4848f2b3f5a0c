"""Decoder-only MoE transformer, Mixtral-compatible parameter names and inference math."""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from ..config import Config, ModelConfig
from ..errors import ConfigError
from .attention import KVCache
from .block import DecoderLayer, checkpointed


class _Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = [DecoderLayer(cfg) for _ in range(cfg.num_layers)]
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)


class MoETransformer(nn.Module):
    """`__call__(tokens) -> (logits, stats)`; stats sum the MoE layers' aux/z losses."""

    def __init__(self, cfg: ModelConfig, *, checkpoint_layers: bool = False, checkpoint_moe: bool = False):
        super().__init__()
        self.cfg = cfg
        self.model = _Backbone(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.checkpoint_layers = checkpoint_layers
        # Finer grain: recompute only each layer's MoE feed-forward (its expert buffers are
        # the largest per-layer activations); whole-layer checkpointing subsumes it.
        for layer in self.model.layers:
            layer.checkpoint_moe = checkpoint_moe and not checkpoint_layers

    def head_weight(self) -> mx.array:
        """The LM head's [V, D] weight (the embedding when tied)."""
        return self.model.embed_tokens.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    @property
    def layers(self):
        return self.model.layers

    def __call__(self, tokens: mx.array, mask="causal", cache: Optional[list[KVCache]] = None,
                 positions: Optional[mx.array] = None, hidden_only: bool = False):
        """`positions` ([S] indices into the flattened [B*L] tokens) limits the LM head to those
        rows (the loss needs only SQL positions; decoding only the last): returns [S, V].
        `hidden_only` returns the final-norm hidden states instead of logits (the chunked loss
        applies `head_weight()` itself)."""
        h = self.model.embed_tokens(tokens)                       # [B, L, D]
        E = self.cfg.num_experts
        aux = mx.array(0.0)
        z = mx.array(0.0)
        dropped = mx.array(0.0)
        counts = mx.zeros((len(self.layers), E))
        per_layer = []
        for i, layer in enumerate(self.layers):
            c = cache[i] if cache is not None else None
            if self.checkpoint_layers and self.training and c is None:
                # Recompute the layer in the backward pass instead of storing activations.
                h, st = checkpointed(layer, lambda x, _l=layer: _l(x, mask))(h)
            else:
                h, st = layer(h, mask, c)
            aux = aux + st["aux_loss"]
            z = z + st["z_loss"]
            dropped = dropped + st["dropped"]
            per_layer.append(st["counts"])
        if positions is not None:
            h = h.reshape(-1, h.shape[-1])[positions]             # [S, D]
        h = self.model.norm(h)
        if hidden_only:
            logits = h
        else:
            logits = self.model.embed_tokens.as_linear(h) if self.cfg.tie_word_embeddings else self.lm_head(h)
        n = len(self.layers)
        stats = {"aux_loss": aux / n, "z_loss": z / n, "dropped": dropped / n,
                 "counts": mx.stack(per_layer) if per_layer else counts}
        return logits, stats


def count_parameters(cfg: ModelConfig) -> dict[str, int]:
    """Total and active (per token) parameter counts, from the config alone."""
    d, f, E, k, V, L = (cfg.hidden_size, cfg.intermediate_size, cfg.num_experts,
                        cfg.num_experts_per_token, cfg.vocab_size, cfg.num_layers)
    hd = d // cfg.num_attention_heads
    attn = d * hd * (cfg.num_attention_heads * 2 + cfg.num_key_value_heads * 2)
    expert = 3 * d * f
    norms = 2 * d
    per_layer_total = attn + E * expert + d * E + norms
    per_layer_active = attn + k * expert + d * E + norms
    emb = V * d
    head = 0 if cfg.tie_word_embeddings else V * d
    total = L * per_layer_total + emb + head + d
    active = L * per_layer_active + emb + head + d
    return {"total": total, "active": active, "embedding": emb + head}


def build_model(cfg: Config) -> MoETransformer:
    """The model of `cfg` with fp32 master weights. `mixed_precision` bf16/fp16 runs the training
    forward/backward on a cast copy (see train/trainer.py `value_and_grad_mp`); gradients, AdamW
    state and checkpoints stay fp32, and evaluation runs on the fp32 masters.
    `gradient_checkpointing` recomputes whole decoder layers in the backward pass;
    `activation_checkpointing` (alone) recomputes only each layer's MoE feed-forward."""
    t = cfg.training
    if cfg.model.moe_impl == "gather" and t.mixed_precision != "fp32" and \
            mx.default_device().type == mx.DeviceType.cpu:
        # MLX's CPU gather_mm computes in float32 only (it fails mid-step otherwise).
        raise ConfigError(f"model.moe_impl 'gather' runs only in fp32 on the CPU, not training.mixed_precision "
                          f"{t.mixed_precision}; use moe_impl: capacity or mixed_precision: fp32")
    model = MoETransformer(cfg.model, checkpoint_layers=t.gradient_checkpointing,
                           checkpoint_moe=t.activation_checkpointing)
    mx.eval(model.parameters())
    return model
