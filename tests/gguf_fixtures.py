"""Tiny Llama GGUF files written with the `gguf` package's GGUFWriter, the way llama.cpp's
convert_hf_to_gguf.py writes a Llama: Hugging Face weights with Q/K rows permuted for the
interleaved RoPE, 2-D weights stored in the requested type (norms stay F32), a GPT-2 byte-level
BPE tokenizer (control tokens, byte alphabet, a few merges) and the usual `llama.*` metadata.

`write_tiny_llama` returns the HF-named float32 weights the file holds *as the file holds them*
(quantized weights dequantized with gguf.quants.dequantize, Q/K back in HF row order): the
weights a correct reader must produce, computed without vantage_core."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# convert_hf_to_gguf.py's sizes for the fixture (head_dim 16)
TINY = dict(hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, rope_theta=10000.0, eps=1e-5, ctx=1024)
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# merges applied in order; every part exists when the merge is added (BPE needs that)
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ s", "a t", "S E", "L E", "C T", "SE LE",
          "SELE CT", "R O", "RO M", "Ġ F", "ĠF ROM", "Ġ W", "H E", "R E", "HE RE", "ĠW HERE", "Ġ *",
          "Ġ n", "a m", "Ġn am", "Ġnam e", "o w", "Ġ h", "Ġh ow", "Ġ m", "a n", "Ġm an", "Ġman y", "Ġ i",
          "Ġ d", "Ġd at", "Ġdat a", "Ġ (",
          "1 2"]   # a digit merge: only a digit-isolating pre-tokenizer keeps "12" two tokens
TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
            "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
            "{% endif %}")


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def vocab() -> tuple[list[str], list[int], list[str]]:
    tokens = CONTROL + bytes_to_unicode()
    have = set(tokens)
    for m in MERGES:
        a, b = m.split(" ")
        assert a in have and b in have, m
        if a + b not in have:
            tokens.append(a + b)
            have.add(a + b)
    types = [3] * len(CONTROL) + [1] * (len(tokens) - len(CONTROL))   # 3 = CONTROL, 1 = NORMAL
    return tokens, types, MERGES


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute (HF rotate-half rows -> llama.cpp interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def inverse_rows(n_rows: int, n_head: int) -> np.ndarray:
    """Row index that undoes `permute`, computed from the permutation itself (argsort of where
    each row went), not from a closed form."""
    where = permute(np.arange(n_rows, dtype=np.int64)[:, None], n_head)[:, 0]   # permuted[i] = w[where[i]]
    return np.argsort(where)


def hf_weights(seed: int = 0, vocab_size: int | None = None, tied: bool = False) -> dict[str, np.ndarray]:
    """Random HF-Llama weights (scaled so the logits are O(1..10), which makes errors visible)."""
    rs = np.random.RandomState(seed)
    D, F, L, H, KV = TINY["hidden"], TINY["ffn"], TINY["layers"], TINY["heads"], TINY["kv_heads"]
    hd = D // H
    V = vocab_size or len(vocab()[0])

    def lin(o, i):
        return (rs.randn(o, i) / np.sqrt(i)).astype(np.float32)

    def norm():
        return (1 + 0.1 * rs.randn(D)).astype(np.float32)

    w = {"model.embed_tokens.weight": rs.randn(V, D).astype(np.float32), "model.norm.weight": norm()}
    if not tied:
        w["lm_head.weight"] = lin(V, D)
    for i in range(L):
        p = f"model.layers.{i}"
        w.update({f"{p}.self_attn.q_proj.weight": lin(H * hd, D), f"{p}.self_attn.k_proj.weight": lin(KV * hd, D),
                  f"{p}.self_attn.v_proj.weight": lin(KV * hd, D), f"{p}.self_attn.o_proj.weight": lin(D, H * hd),
                  f"{p}.mlp.gate_proj.weight": lin(F, D), f"{p}.mlp.up_proj.weight": lin(F, D),
                  f"{p}.mlp.down_proj.weight": lin(D, F), f"{p}.input_layernorm.weight": norm(),
                  f"{p}.post_attention_layernorm.weight": norm()})
    return w


_BLOCK = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
          "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{_BLOCK[rest.rsplit('.', 1)[0]]}.weight"


def write_tiny_llama(path: Path, qtype: str = "F32", *, tied: bool = False, arch: str = "llama", seed: int = 0,
                     tensor_types: dict[str, str] | None = None, with_template: bool = True,
                     pre: str = "smollm", edit=None) -> dict[str, np.ndarray]:
    """Write the fixture; returns the float32 HF-named weights stored (see the module doc).
    `tensor_types` overrides the type of single GGUF tensors (e.g. {"blk.0.ffn_up.weight": "Q5_0"});
    `edit(weights)` may change the HF weights in place before they are written."""
    import gguf
    from gguf.quants import dequantize, quantize

    T = gguf.GGMLQuantizationType
    tokens, types, merges = vocab()
    hf = hf_weights(seed, len(tokens), tied)
    if edit is not None:
        edit(hf)
    H, KV = TINY["heads"], TINY["kv_heads"]
    w = gguf.GGUFWriter(str(path), arch)
    # metadata under the file's architecture prefix (llama.* for "llama")
    w.add_block_count(TINY["layers"])
    w.add_context_length(TINY["ctx"])
    w.add_embedding_length(TINY["hidden"])
    w.add_feed_forward_length(TINY["ffn"])
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(TINY["rope_theta"])
    w.add_layer_norm_rms_eps(TINY["eps"])
    w.add_vocab_size(len(tokens))
    w.add_rope_dimension_count(TINY["hidden"] // H)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    if with_template:
        w.add_chat_template(TEMPLATE)
    stored: dict[str, np.ndarray] = {}
    for name, x in hf.items():
        if name.endswith("q_proj.weight"):
            x = permute(x, H)
        elif name.endswith("k_proj.weight"):
            x = permute(x, KV)
        gname = gguf_name(name)
        t = (tensor_types or {}).get(gname, "F32" if x.ndim == 1 else qtype)
        if t == "F32":
            w.add_tensor(gname, x)
            back = x
        elif t == "F16":
            w.add_tensor(gname, x.astype(np.float16))
            back = x.astype(np.float16).astype(np.float32)
        else:
            q = quantize(x, T[t])                         # uint8 [rows, bytes per row]
            w.add_tensor(gname, q, raw_dtype=T[t])        # the writer derives the element shape
            back = dequantize(q, T[t]).astype(np.float32)
            assert back.shape == x.shape
        if name.endswith("q_proj.weight"):
            back = back[inverse_rows(back.shape[0], H)]
        elif name.endswith("k_proj.weight"):
            back = back[inverse_rows(back.shape[0], KV)]
        stored[name] = back
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def original_weights(seed: int = 0, tied: bool = False) -> dict[str, np.ndarray]:
    """The HF weights before any GGUF storage (what `write_tiny_llama` started from)."""
    return hf_weights(seed, len(vocab()[0]), tied)
