"""bench/moe_step.py's pieces that its numbers rest on: the skewed-routing weights really send
(nearly) every token to one expert with every framework computing the same function, and
the MFU numerator is the useful-work FLOP count."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("routing,expect_share", [("random", (0.2, 0.45)), ("skewed", (0.49, 0.5001))])
def test_routing_cases_share_of_busiest_expert_and_same_function(routing, expect_share):
    out = subprocess.run([sys.executable, "bench/moe_step.py", "--device", "cpu", "--preset", "tiny",
                          "--routing", routing, "--variants", "", "--check-only"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    share = float(re.search(r"busiest expert: ([\d.]+)% of assignments", out.stdout).group(1)) / 100
    assert expect_share[0] <= share <= expect_share[1], share
    assert re.search(r"check top-2 .* OK", out.stdout), out.stdout[-2000:]


def test_model_flops_counts_active_parameters_and_attention():
    sys.path.insert(0, str(ROOT))
    from bench.moe_step import model_flops_per_step
    sh = dict(hidden=8, layers=2, heads=2, kv_heads=1, experts=4, top_k=2, intermediate=16,
              vocab=32, batch=3, seq=5, dtype="fp32")
    hd = 4
    attn = 8 * hd * (2 * 2 + 2 * 1)                        # q, o: 8x8; k, v: 8x4
    active = 2 * (attn + 2 * 3 * 8 * 16 + 8 * 4) + 32 * 8  # k experts of 3 matrices, router, head
    T = 15
    assert model_flops_per_step(sh, 2) == 6 * active * T + 12 * 2 * 8 * 5 * T
    assert model_flops_per_step(sh, 1) < model_flops_per_step(sh, 2)
