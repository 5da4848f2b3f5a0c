"""One MoE training step (forward, backward, AdamW update): Vantage vs mlx-lm (vs PyTorch).

    python bench/moe_step.py --device cpu --preset tiny
    python bench/moe_step.py --device cpu --preset cpu-15m
    python bench/moe_step.py --device gpu --preset mixtral-gpu      # MLX CUDA + torch

Every system is built from one shape description (preset + overrides) and trained on the same
random batch [B, L+1] (inputs = tokens[:, :-1], targets = tokens[:, 1:], loss on all B*L
positions):
  vantage       Vantage's own compiled trainer step (`make_train_step`: loss_fn with the
                router aux/z losses, grad-norm clipping, AdamW) with moe_impl/capacity as named
  mlx-lm        `mlx_lm.models.mixtral.Model` with Vantage's initial weights, mlx-lm's own
                `default_loss`, AdamW, its step compiled as mlx_lm/tuner/trainer.py does
                (mx.compile with inputs=outputs=[model.state, optimizer.state, mx.random.state])
  mlx-lm-eager  the same step uncompiled
  torch         HF transformers `MixtralForCausalLM` (default attention), torch AdamW,
                bf16, random init (GPU only unless --systems names it)
Before timing, Vantage (no-drop capacity) and mlx-lm are checked to compute the same function
on the same weights (logits and loss). Timing: warm-up steps, then --rounds rounds of --steps
steps per system, interleaved (the CPU is shared), each step ended by a synchronizing eval;
the median round is reported on the GPU, the fastest on the (shared) CPU. Peak memory: MLX's peak during that system's steps minus the
other systems' resident arrays; torch.cuda.max_memory_allocated for torch.
Last line: `ratio_vs_mlx_lm=X.XX` (+ ` ratio_vs_torch=Y.YY` when torch ran): Vantage at the
no-drop capacity factor, top-k of the preset, over mlx-lm's compiled step.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vantage_core.blas import active_blas, load_openblas  # noqa: E402

load_openblas()

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402
from mlx.utils import tree_flatten, tree_map  # noqa: E402

PRESETS = {
    # The GPU shape (Mixtral-shaped, ~0.6B parameters).
    "mixtral-gpu": dict(hidden=1024, layers=8, heads=16, kv_heads=8, experts=8, top_k=2,
                        intermediate=2816, vocab=8192, batch=16, seq=1024, dtype="bf16"),
    # configs/tiny_model.yaml (~0.5M parameters).
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, experts=4, top_k=2,
                 intermediate=128, vocab=2048, batch=16, seq=128, dtype="fp32"),
    # configs/spider_gpu.yaml (~100M parameters).
    "spider-gpu": dict(hidden=512, layers=8, heads=8, kv_heads=4, experts=8, top_k=2,
                       intermediate=1024, vocab=4096, batch=64, seq=640, dtype="bf16"),
    # The upcycled SmolLM2-135M MoE (configs/spider_smollm2_moe.yaml: 8 experts top-2, 49k vocabulary,
    # batch 32 x 768; untied head here, as mlx-lm's Mixtral has no tied embeddings).
    "smollm2-moe": dict(hidden=576, layers=30, heads=9, kv_heads=3, experts=8, top_k=2,
                        intermediate=1536, vocab=49152, batch=32, seq=768, dtype="bf16"),
    # ~15M parameters.
    "cpu-15m": dict(hidden=256, layers=4, heads=8, kv_heads=4, experts=8, top_k=2,
                    intermediate=512, vocab=4096, batch=8, seq=128, dtype="fp32"),
}
DTYPES = {"fp32": mx.float32, "bf16": mx.bfloat16, "fp16": mx.float16}
LR, BETAS, EPS, WD, ROPE_THETA, NORM_EPS = 1e-4, (0.9, 0.95), 1e-8, 0.1, 10000.0, 1e-5

_log_file = None


def say(*a):
    line = " ".join(str(x) for x in a)
    print(line, flush=True)
    if _log_file is not None:
        _log_file.write(line + "\n")
        _log_file.flush()


def tree_bytes(t) -> int:
    return sum(v.nbytes for _, v in tree_flatten(t) if isinstance(v, mx.array))


# --------------------------------------------------------------------------- MLX systems


def vantage_config(sh: dict, *, k: int, impl: str, capacity: float, compile: bool = True):
    from vantage_core.config import Config, ModelConfig, TrainingConfig
    m = ModelConfig(hidden_size=sh["hidden"], num_layers=sh["layers"], num_experts=sh["experts"],
                    num_experts_per_token=k, expert_capacity=capacity, num_attention_heads=sh["heads"],
                    num_key_value_heads=sh["kv_heads"], intermediate_size=sh["intermediate"],
                    vocab_size=sh["vocab"], max_position_embeddings=max(4096, sh["seq"]),
                    rope_theta=ROPE_THETA, rms_norm_eps=NORM_EPS, moe_impl=impl)
    t = TrainingConfig(batch_size=sh["batch"], learning_rate=LR, adam_beta1=BETAS[0], adam_beta2=BETAS[1],
                       adam_epsilon=EPS, weight_decay=WD, warmup_steps=0, lr_scheduler_type="constant",
                       num_train_steps=1_000_000, mixed_precision=sh["dtype"], compile=compile)
    return Config(model=m, training=t)


def to_mlx_lm_names(params: list[tuple[str, mx.array]]):
    # Vantage nests the SwitchGLU one level deeper (block_sparse_moe.experts.switch_mlp.*);
    # mlx-lm has block_sparse_moe.switch_mlp.*; everything else is named alike.
    return [(n.replace(".block_sparse_moe.experts.switch_mlp.", ".block_sparse_moe.switch_mlp."), v)
            for n, v in params]


class MLXSystem:
    kind = "mlx"

    def __init__(self, name, model, optimizer, step, args, tokens_per_step, label=""):
        self.name, self.model, self.optimizer, self.step_fn, self.args = name, model, optimizer, step, args
        self.tokens = tokens_per_step
        self.label = label
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.peak = 0
        self.dropped: list[float] = []

    def run(self):
        out = self.step_fn(*self.args)
        mx.eval(out, self.model.parameters(), self.optimizer.state)
        return out

    def resident(self) -> int:
        return tree_bytes(self.model.parameters()) + tree_bytes(self.optimizer.state)


def make_vantage(sh, init_params, batch, *, k, impl, capacity, name, fused=True, plain=False):
    from vantage_core.model import MoETransformer
    from vantage_core.train.optim import make_optimizer
    from vantage_core.train.trainer import make_train_step
    cfg = vantage_config(sh, k=k, impl=impl, capacity=capacity)
    model = MoETransformer(cfg.model)
    model.load_weights(init_params)
    model.train()
    for layer in model.layers:
        layer.block_sparse_moe.experts.plain_autograd = plain
    opt = make_optimizer(cfg.training)
    micro, apply, step = make_train_step(model, opt, cfg)
    inputs, positions, targets, weights = batch
    if fused:
        fn, args = step, (inputs, positions, targets, weights)
    else:  # the loop's split form: micro then apply (one call each; eval only at the end here)
        one = mx.array(1.0)

        def fn(*a):
            loss, aux, grads = micro(*a, one)
            return loss, aux, apply(grads)
        args = (inputs, positions, targets, weights)
    s = MLXSystem(name, model, opt, fn, args, inputs.size,
                  label=f"{impl}, capacity {capacity:g}" if impl == "capacity" else impl)
    s.cfg = cfg
    return s


def make_mlx_lm(sh, init_params, tokens, *, k, compiled=True, name="mlx-lm"):
    from mlx_lm.models.mixtral import Model, ModelArgs
    try:
        from mlx_lm.tuner.trainer import default_loss
    except ImportError:  # mlx_lm/tuner/trainer.py's, verbatim
        def default_loss(model, batch, lengths):
            inputs, targets = batch[:, :-1], batch[:, 1:]
            logits = model(inputs)
            steps = mx.arange(1, targets.shape[1] + 1)
            mask = mx.logical_and(steps >= lengths[:, 0:1], steps <= lengths[:, 1:])
            ce = nn.losses.cross_entropy(logits, targets) * mask
            ntoks = mask.sum()
            return ce.astype(mx.float32).sum() / ntoks, ntoks
    args = ModelArgs(model_type="mixtral", vocab_size=sh["vocab"], hidden_size=sh["hidden"],
                     intermediate_size=sh["intermediate"], num_hidden_layers=sh["layers"],
                     num_attention_heads=sh["heads"], num_experts_per_tok=k,
                     num_key_value_heads=sh["kv_heads"], num_local_experts=sh["experts"],
                     rms_norm_eps=NORM_EPS, rope_theta=ROPE_THETA, tie_word_embeddings=False)
    model = Model(args)
    model.load_weights(to_mlx_lm_names(init_params), strict=True)
    model.train()
    opt = optim.AdamW(learning_rate=LR, betas=list(BETAS), eps=EPS, weight_decay=WD)
    loss_value_and_grad = nn.value_and_grad(model, default_loss)
    B, L1 = tokens.shape
    lengths = mx.array(np.array([[0, L1 - 1]] * B, dtype=np.int32))   # every position counts

    def step(batch, lengths):  # mlx_lm/tuner/trainer.py's step, no accumulation
        (lvalue, toks), grad = loss_value_and_grad(model, batch, lengths)
        opt.update(model, grad)
        return lvalue, toks

    if compiled:
        state = [model.state, opt.state, mx.random.state]
        step = mx.compile(step, inputs=state, outputs=state)
    return MLXSystem(name, model, opt, step, (tokens, lengths), B * (L1 - 1),
                     label="compiled" if compiled else "eager")


# --------------------------------------------------------------------------- torch


class TorchSystem:
    """HF transformers `MixtralForCausalLM` loaded from Vantage's initial weights (an HF
    folder written by vantage_core.weights), AdamW (fused on CUDA), optionally torch.compile'd
    (model forward + cross entropy in one compiled function), one `experts_implementation`."""
    kind = "torch"

    def __init__(self, sh, k, device, folder, *, experts_impl=None, compiled=False, fused=True, name="torch"):
        import torch
        import torch.nn.functional as F
        from transformers import MixtralForCausalLM
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
        self.torch, self.F = torch, F
        self.name = name
        dev = torch.device("cuda" if device == "gpu" else "cpu")
        self.dev = dev
        dt = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[sh["dtype"]]
        kw = {"experts_implementation": experts_impl} if experts_impl else {}
        self.model = MixtralForCausalLM.from_pretrained(folder, dtype=dt, attn_implementation="sdpa", **kw).to(dev)
        self.model.config.num_experts_per_tok = k
        self.model.train()
        self.attn_impl = getattr(self.model.config, "_attn_implementation", "?")
        self.experts_impl = getattr(self.model.config, "_experts_implementation", None) or "eager"
        fused = fused and dev.type == "cuda"
        self.label = (f"experts={self.experts_impl}, attn={self.attn_impl}, AdamW{' fused' if fused else ''}"
                      f"{', torch.compile' if compiled else ', eager'}")
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                                     **({"fused": True} if fused else {}))
        self.V = sh["vocab"]

        def loss_fn(inp, tgt):
            logits = self.model(input_ids=inp).logits
            return F.cross_entropy(logits.float().reshape(-1, self.V), tgt.reshape(-1))
        self.loss_fn = torch.compile(loss_fn) if compiled else loss_fn
        self.tokens = sh["batch"] * sh["seq"]
        self.times, self.cpu_times, self.peak, self.dropped = [], [], 0, []
        self.compile_s = 0.0

    def set_batch(self, tokens_np):
        t = self.torch.from_numpy(tokens_np.astype("int64")).to(self.dev)
        self.inp, self.tgt = t[:, :-1].contiguous(), t[:, 1:].contiguous()

    def initial_loss(self) -> float:
        with self.torch.no_grad():
            logits = self.model(input_ids=self.inp).logits
            return float(self.F.cross_entropy(logits.float().reshape(-1, self.V), self.tgt.reshape(-1)))

    def run(self):
        torch = self.torch
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.inp, self.tgt)
        loss.backward()
        self.opt.step()
        if self.dev.type == "cuda":
            torch.cuda.synchronize()
        return loss

    def resident(self) -> int:
        return 0

    def reset_peak(self):
        if self.dev.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def get_peak(self):
        return self.torch.cuda.max_memory_allocated() if self.dev.type == "cuda" else 0

    def close(self):
        del self.model, self.opt, self.loss_fn
        gc.collect()
        if self.dev.type == "cuda":
            self.torch.cuda.empty_cache()


def write_hf_folder(params: list, sh: dict, k: int, folder: str) -> str:
    """Vantage's initial weights as an HF Mixtral folder (what vantage-export writes), so the
    torch systems start from the same weights and therefore the same routing."""
    from vantage_core.weights import hf_config, hf_weights
    import json
    cfg = vantage_config(sh, k=k, impl="capacity", capacity=0.0)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f)
    mx.save_safetensors(os.path.join(folder, "model.safetensors"), hf_weights(dict(params), cfg),
                        metadata={"format": "pt"})
    return folder


def skew_routing(params: list, sh: dict, strength: float = 4.0) -> list:
    """Weights under which one expert gets most tokens: a shared direction u is added to every
    token embedding, and every layer's router scores expert 0 along u, so expert 0 is (nearly)
    every token's first choice. Both frameworks load these same weights."""
    D = sh["hidden"]
    u = mx.random.normal((D,), key=mx.random.key(123))
    u = u / mx.linalg.norm(u)
    out = []
    for n, v in params:
        if n == "model.embed_tokens.weight":
            rms = mx.sqrt(mx.mean(mx.square(v.astype(mx.float32))))
            v = (v.astype(mx.float32) + strength * rms * mx.sqrt(mx.array(float(D))) * u).astype(v.dtype)
        elif n.endswith("block_sparse_moe.gate.weight"):
            g = v.astype(mx.float32)
            g = mx.concatenate([(u * 8.0)[None], g[1:]], axis=0)
            v = g.astype(v.dtype)
        out.append((n, v))
    return out


def matmul_rate(device: str, n: int = 8192, reps: int = 10) -> dict:
    """bf16 [n, n] @ [n, n] TFLOP/s on this device, measured by MLX and (GPU) by torch."""
    rates = {}
    dt = mx.bfloat16 if device == "gpu" else mx.float32
    a_ = mx.random.normal((n, n)).astype(dt)
    b_ = mx.random.normal((n, n)).astype(dt)
    mx.eval(a_ @ b_)
    t0 = time.perf_counter()
    for _ in range(reps):
        mx.eval(a_ @ b_)
    rates["mlx"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
    del a_, b_
    if device == "gpu":
        try:
            import torch
            a_ = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            b_ = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
            a_ @ b_
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                a_ @ b_
            torch.cuda.synchronize()
            rates["torch"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12
            del a_, b_
            torch.cuda.empty_cache()
        except Exception as e:  # no torch: MLX's rate only
            say(f"# torch matmul rate not measured: {type(e).__name__}: {e}")
    return rates


def model_flops_per_step(sh: dict, k: int) -> float:
    """Training FLOPs of the useful work (PaLM appendix B convention): 6 x matmul parameters
    active per token x tokens, plus 12 x layers x hidden x seq per token for attention scores
    (non-causal count, as PaLM). Capacity padding and recomputation are not useful work."""
    d, f, E, V, n = sh["hidden"], sh["intermediate"], sh["experts"], sh["vocab"], sh["layers"]
    hd = d // sh["heads"]
    attn = d * hd * (2 * sh["heads"] + 2 * sh["kv_heads"])
    active = n * (attn + k * 3 * d * f + d * E) + V * d          # the LM head; not the lookup
    T = sh["batch"] * sh["seq"]
    return 6.0 * active * T + 12.0 * n * d * sh["seq"] * T


# --------------------------------------------------------------------------- checks


def routing_load(model, inputs) -> tuple[float, np.ndarray]:
    """Largest per-layer expert load over the mean load (before capacity), on this batch."""
    _, st = model(inputs)
    counts = np.array(st["counts"])                      # [layers, E]
    mean = counts.sum(axis=1, keepdims=True) / counts.shape[1]
    return float((counts / mean).max()), counts


def check_same_function(v: MLXSystem, m: MLXSystem, inputs, targets, dtype: str) -> dict:
    """Vantage (train mode, capacity path, no drops) vs mlx-lm on the same weights."""
    lv, st = v.model(inputs)
    lm = m.model(inputs)
    lv32, lm32 = lv.astype(mx.float32), lm.astype(mx.float32)
    rel = float((mx.linalg.norm((lv32 - lm32).reshape(-1)) / mx.linalg.norm(lm32.reshape(-1))).item())
    mx_abs = float(mx.abs(lv32 - lm32).max().item())
    ce_v = float(nn.losses.cross_entropy(lv32, targets).mean().item())
    ce_m = float(nn.losses.cross_entropy(lm32, targets).mean().item())
    dropped = float(st["dropped"].item())
    tol = 1e-4 if dtype == "fp32" else 2e-2
    ok = rel < tol and abs(ce_v - ce_m) < tol * max(1.0, abs(ce_m)) and dropped == 0.0
    return dict(rel=rel, max_abs=mx_abs, ce_vantage=ce_v, ce_mlx_lm=ce_m, dropped=dropped, tol=tol, ok=ok)


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="MLX (and torch) device")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="the shape (see PRESETS)")
    for key in ("hidden", "layers", "heads", "kv_heads", "experts", "top_k", "intermediate", "vocab", "batch", "seq"):
        p.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"override the preset's {key}")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="override the preset's dtype")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 10 GPU, 2 CPU)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per system (default 2 GPU, 12 CPU)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation); at least 3")
    p.add_argument("--capacity", type=float, default=0.0,
                   help="no-drop capacity factor for the headline; 0 = smallest multiple of 0.05 above the "
                        "batch's largest expert load plus --margin")
    p.add_argument("--margin", type=float, default=0.1, help="added to the largest load for the no-drop factor")
    p.add_argument("--impl", default="capacity", choices=["capacity", "sorted"],
                   help="the headline Vantage row's MoE path: capacity (dense [E, C, D] buffers at the no-drop "
                        "factor, whole step compiled) or sorted (exact per-expert sizes, never drops)")
    p.add_argument("--variants", default=None,
                   help="extra rows: cap1.25, gather, top1 (Vantage and mlx-lm at k=1), plain (capacity "
                        "path through MLX autograd, no hand-written VJPs), split (the micro+apply form), "
                        "eager (mlx-lm uncompiled), sorted / capacity (the other MoE path than --impl) "
                        "(default: cap1.25,gather,top1,plain,split,eager on the CPU; cap1.25 on the GPU)")
    p.add_argument("--systems", default=None, help="comma list among vantage,mlx-lm,torch (default: "
                   "torch only on the GPU)")
    p.add_argument("--torch-variants", default=None,
                   help="torch rows as EXPERTS:MODE[:unfused], EXPERTS among transformers' experts "
                        "implementations (grouped_mm, eager, batched_mm), MODE compile|eager "
                        "(default GPU: grouped_mm:compile,grouped_mm:eager,eager:compile,eager:eager,"
                        "batched_mm:eager,grouped_mm:eager:unfused; CPU: grouped_mm:eager)")
    p.add_argument("--routing", default="random,skewed",
                   help="routing cases, each a full table: random (the initial router) and/or skewed "
                        "(one expert is nearly every token's first choice)")
    p.add_argument("--check-only", action="store_true", help="only check that the systems compute the same function")
    p.add_argument("--log", default=None, help="also write the output here (default $OUT/log when OUT is set)")
    p.add_argument("--seed", type=int, default=0, help="weights and batch seed")
    a = p.parse_args(argv)
    if a.warmup < 3:
        p.error("--warmup: at least 3 steps (compiled systems get 3 warm-up steps)")
    return a


def run_case(a, sh, routing, rates):
    gpu = a.device == "gpu"
    steps = a.steps or (10 if gpu else 2)
    rounds = a.rounds or (2 if gpu else 12)
    systems = set((a.systems or ("vantage,mlx-lm,torch" if gpu else "vantage,mlx-lm")).split(","))
    variants = set((a.variants if a.variants is not None else
                    ("cap1.25" if gpu else "cap1.25,gather,top1,plain,split,eager")).split(",")) - {""}
    tvars = (a.torch_variants or ("grouped_mm:compile,grouped_mm:eager,eager:compile,eager:eager,"
                                  "batched_mm:eager,grouped_mm:eager:unfused" if gpu else "grouped_mm:eager")).split(",")
    k = sh["top_k"]
    B, L = sh["batch"], sh["seq"]
    from vantage_core.model import MoETransformer, count_parameters
    say(f"\n## routing: {routing}")

    mx.random.seed(a.seed)
    tokens = mx.random.randint(0, sh["vocab"], (B, L + 1)).astype(mx.int32)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    positions = mx.arange(B * L, dtype=mx.int32)
    tflat = targets.reshape(-1)
    wts = mx.ones((B * L,), dtype=mx.float32)
    batch = (inputs, positions, tflat, wts)
    tokens_np = np.array(tokens)

    def init_params(kk):
        cfg = vantage_config(sh, k=kk, impl="capacity", capacity=0.0)
        mx.random.seed(a.seed + 1)
        mdl = MoETransformer(cfg.model)
        if sh["dtype"] != "fp32":
            mdl.set_dtype(DTYPES[sh["dtype"]])
        mx.eval(mdl.parameters())
        params = list(tree_flatten(mdl.parameters()))
        if routing == "skewed":
            params = skew_routing(params, sh)
            mdl.load_weights(params)
        pc = count_parameters(cfg.model)
        return params, mdl, pc

    runs: list = []
    head = {}
    checks = []
    folders = {}
    for kk in ([k] + ([1] if "top1" in variants and k != 1 else [])):
        params, probe, pc = init_params(kk)
        say(f"# top-{kk}: parameters total {pc['total'] / 1e6:.2f}M, active/token {pc['active'] / 1e6:.2f}M")
        probe.train()
        load, counts = routing_load(probe, inputs)
        E = sh["experts"]
        nodrop = a.capacity or min(E / kk, math.ceil((load + a.margin) * 20 - 1e-9) / 20)
        share = float(counts.max(axis=1).max() / counts.sum(axis=1).max())
        say(f"# top-{kk}: largest expert load / mean on this batch = {load:.3f} (busiest expert: {share:.1%} of "
            f"assignments) -> no-drop capacity factor {nodrop:g} (E/k = {E / kk:g} never drops)")
        del probe
        if "torch" in systems:
            import tempfile
            folders[kk] = write_hf_folder(params, sh, kk, tempfile.mkdtemp(prefix=f"moe_step_hf_{routing}_k{kk}_"))
        tag = "" if kk == k else f" top{kk}"
        if "vantage" in systems:
            v = make_vantage(sh, params, batch, k=kk, impl=a.impl,
                             capacity=nodrop if a.impl == "capacity" else 0.0, name=f"vantage{tag}")
            v.headline = kk == k
            runs.append(v)
            if kk == k:
                head["vantage"] = v
                if "cap1.25" in variants:
                    runs.append(make_vantage(sh, params, batch, k=kk, impl="capacity", capacity=1.25,
                                             name="vantage cap1.25"))
                if "gather" in variants:
                    runs.append(make_vantage(sh, params, batch, k=kk, impl="gather", capacity=0.0,
                                             name="vantage gather"))
                if "sorted" in variants and a.impl != "sorted":
                    runs.append(make_vantage(sh, params, batch, k=kk, impl="sorted", capacity=0.0,
                                             name="vantage sorted"))
                if "capacity" in variants and a.impl != "capacity":
                    runs.append(make_vantage(sh, params, batch, k=kk, impl="capacity", capacity=nodrop,
                                             name="vantage capacity"))
                if "plain" in variants:
                    runs.append(make_vantage(sh, params, batch, k=kk, impl="capacity", capacity=nodrop,
                                             name="vantage plain-autograd", plain=True))
                if "split" in variants:
                    runs.append(make_vantage(sh, params, batch, k=kk, impl="capacity", capacity=nodrop,
                                             name="vantage split", fused=False))
        if "mlx-lm" in systems:
            m = make_mlx_lm(sh, params, tokens, k=kk, name=f"mlx-lm{tag}")
            runs.append(m)
            if kk == k:
                head["mlx-lm"] = m
                if "eager" in variants:
                    runs.append(make_mlx_lm(sh, params, tokens, k=kk, compiled=False, name="mlx-lm eager"))
        if "vantage" in systems and "mlx-lm" in systems:
            c = check_same_function(v, m, inputs, targets, sh["dtype"])
            c["k"] = kk
            checks.append(c)
            say(f"# check top-{kk} vantage({v.label}) vs mlx-lm, same weights: logits rel-L2 "
                f"{c['rel']:.2e} (max abs {c['max_abs']:.2e}), CE {c['ce_vantage']:.6f} vs {c['ce_mlx_lm']:.6f}, "
                f"dropped {c['dropped']:.4f}, tolerance {c['tol']:g}: {'OK' if c['ok'] else 'FAILED'}")
        if "vantage" in systems and kk == k:
            lv, _ = v.model(inputs)
            head["ce0"] = float(nn.losses.cross_entropy(lv.astype(mx.float32), targets).mean().item())
        del params
    if any(not c["ok"] for c in checks):
        say("# CHECK FAILED: the systems do not compute the same function; numbers below are not comparable")
        if a.check_only:
            sys.exit(1)
    if a.check_only:
        return {}

    def time_round(r):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            out = r.run()
            if r.name.startswith("vantage"):
                r.dropped.append(float(out[1][3].item()))
        r.times.append((time.perf_counter() - t0) / steps)
        r.cpu_times.append((time.process_time() - c0) / steps)

    truns = []

    def run_torch(kk, spec):
        parts = spec.split(":")
        impl, mode = parts[0], (parts[1] if len(parts) > 1 else "eager")
        unfused = "unfused" in parts[2:]
        name = f"torch {impl} {mode}{' unfused' if unfused else ''}{'' if kk == k else f' top{kk}'}"
        gc.collect()
        mx.clear_cache()
        ts = None
        try:
            ts = TorchSystem(sh, kk, a.device, folders[kk], experts_impl=impl, compiled=mode == "compile",
                             fused=not unfused, name=name)
            ts.set_batch(tokens_np)
            ce0 = ts.initial_loss()
            if "ce0" in head and kk == k:
                say(f"# check {name}: initial CE {ce0:.6f} vs vantage {head['ce0']:.6f} (same weights and routing: "
                    f"{'OK' if abs(ce0 - head['ce0']) < (2e-2 if sh['dtype'] != 'fp32' else 1e-3) * max(1, ce0) else 'DIFFERENT'})")
            ts.reset_peak()
            t0 = time.perf_counter()
            for _ in range(a.warmup):
                ts.run()
            ts.compile_s = time.perf_counter() - t0
            say(f"# warm-up {name}: {ts.compile_s:.1f}s ({a.warmup} steps{', includes torch.compile' if mode == 'compile' else ''})")
            for _ in range(rounds):
                time_round(ts)
            ts.peak = ts.get_peak()
        except Exception as e:
            say(f"# FAILED {name}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            if ts is not None:
                ts.close()
            else:
                gc.collect()
                try:
                    import torch
                    torch.cuda.empty_cache()
                except Exception:
                    pass
            return None
        ts.close()
        truns.append(ts)
        return ts

    if "torch" in systems:
        for spec in tvars:
            run_torch(k, spec)

    failed = []
    for r in runs:
        gc.collect()
        mx.clear_cache()
        t0 = time.perf_counter()
        others = mx.get_active_memory() - r.resident()   # the other systems' arrays, constant here
        mx.reset_peak_memory()
        try:
            for _ in range(max(1, a.warmup)):
                r.run()
        except Exception as e:  # report and go on with the other systems
            say(f"# FAILED {r.name}: {type(e).__name__}: {e}")
            failed.append(r)
            continue
        r.compile_s = time.perf_counter() - t0
        r.peak = mx.get_peak_memory() - others
        say(f"# warm-up {r.name}: {r.compile_s:.1f}s")

    runs = [r for r in runs if r not in failed]
    for i in range(rounds):
        for r in (runs if i % 2 == 0 else runs[::-1]):
            time_round(r)
    if "torch" in systems and "top1" in variants and k != 1 and 1 in folders:
        run_torch(1, "grouped_mm:eager")

    runs = truns + runs
    say("")
    est = min if not gpu else statistics.median
    est_name = "best" if not gpu else "median"
    peak_rate = max(rates.values()) if rates else 0.0
    flops = {kk: model_flops_per_step(sh, kk) for kk in (k, 1)}
    say(f"| system | step | tokens/s | step ms ({est_name} of {rounds}) | median ms | CPU-s/step | warm-up s | "
        f"peak memory MiB | MFU | dropped |")
    say("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    res = {}
    for r in runs:
        t = est(r.times)
        tps = r.tokens / t
        res[r.name] = tps
        kk = 1 if "top1" in r.name else k
        mfu = flops[kk] / t / 1e12 / peak_rate if peak_rate else float("nan")
        dr = f"{max(r.dropped):.4f} (mean {statistics.mean(r.dropped):.4f})" if r.dropped else "0 (never drops)"
        say(f"| {r.name} | {r.label} | {tps:,.0f} | {t * 1e3:.1f} | {statistics.median(r.times) * 1e3:.1f} | "
            f"{statistics.median(r.cpu_times):.3f} | {getattr(r, 'compile_s', 0.0):.1f} | {r.peak / 2 ** 20:,.0f} | "
            f"{mfu:.1%} | {dr} |")
    say(f"\n# MFU = model FLOPs per step ({flops[k] / 1e12:.2f} TFLOP at top-{k}: 6 x active matmul parameters x "
        f"tokens + 12 x layers x hidden x seq x tokens) / step time / the bf16 matmul rate measured in this run "
        f"({', '.join(f'{n} {v:.0f}' for n, v in rates.items())} TFLOP/s; the higher one)")
    out = {}
    if "vantage" in res and "mlx-lm" in res:
        out["ratio_vs_mlx_lm"] = res["vantage"] / res["mlx-lm"]
        if "vantage cap1.25" in res:
            say(f"# capacity 1.25: vantage/mlx-lm = {res['vantage cap1.25'] / res['mlx-lm']:.2f}")
        if "vantage top1" in res and "mlx-lm top1" in res:
            say(f"# top-1: vantage/mlx-lm = {res['vantage top1'] / res['mlx-lm top1']:.2f}")
    tk = {n: v for n, v in res.items() if n.startswith("torch") and "top1" not in n}
    if tk and "vantage" in res:
        best = max(tk, key=tk.get)
        out["ratio_vs_torch_best"] = res["vantage"] / tk[best]
        best_run = next(r for r in runs if r.name == best)
        say(f"# fastest torch: {best} ({tk[best]:,.0f} tokens/s, peak {best_run.peak / 2 ** 20:,.0f} MiB); "
            f"vantage no-drop / it = {out['ratio_vs_torch_best']:.2f}, memory {head['vantage'].peak / 2 ** 20:,.0f} MiB "
            + (f"({head['vantage'].peak / best_run.peak:.2f}x)" if best_run.peak else "(torch peak not measured)"))
        if "vantage cap1.25" in res:
            say(f"# capacity 1.25 (drops tokens): vantage/fastest torch = {res['vantage cap1.25'] / tk[best]:.2f}")
    say(f"# {routing}: " + " ".join(f"{n}={v:.2f}" for n, v in out.items()))
    for f in folders.values():
        import shutil
        shutil.rmtree(f, ignore_errors=True)
    return out


def main(argv=None):
    global _log_file
    a = parse_args(argv)
    log_path = a.log or (os.path.join(os.environ["OUT"], "log") if os.environ.get("OUT") else None)
    if log_path:
        _log_file = open(log_path, "a")
    sh = dict(PRESETS[a.preset])
    for key in ("hidden", "layers", "heads", "kv_heads", "experts", "top_k", "intermediate", "vocab", "batch", "seq", "dtype"):
        if getattr(a, key) is not None:
            sh[key] = getattr(a, key)
    gpu = a.device == "gpu"
    mx.set_default_device(mx.gpu if gpu else mx.cpu)
    vers = ""
    try:
        import torch
        import transformers
        vers = f"  torch={torch.__version__}  transformers={transformers.__version__}"
    except ImportError:
        pass
    say(f"# bench/moe_step.py {datetime.date.today().isoformat()}  device={mx.default_device()}  "
        f"mlx={mx.__version__}{vers}  blas={active_blas() if not gpu else 'n/a'}  python={platform.python_version()}")
    say(f"# shape: {sh}  warmup={a.warmup}")
    rates = matmul_rate(a.device, n=8192 if gpu else 1024, reps=10 if gpu else 3)
    say("# matmul rate (" + ("bf16 8192^3" if gpu else "fp32 1024^3") + "): "
        + ", ".join(f"{n} {v:.1f} TFLOP/s" for n, v in rates.items()))
    results = {}
    for routing in a.routing.split(","):
        results[routing] = run_case(a, sh, routing, rates)
    say("")
    parts = []
    for routing, out in results.items():
        for n, v in out.items():
            parts.append(f"{n}={v:.2f}" if routing == "random" else f"{routing}_{n}={v:.2f}")
    # the headline (random routing) last, so the last field is ratio_vs_torch_best when torch ran
    parts.sort(key=lambda s: (not s.startswith("skewed"), s.startswith("ratio_vs_torch_best")))
    if parts:
        say(" ".join(parts))


if __name__ == "__main__":
    main()
