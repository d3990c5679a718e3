#!/usr/bin/env python3
"""Checks model_ref.py's building blocks against the numbers printed in minicpm4.md:
RoPE test vectors (§2.4), derived constants r and w (§1.2), parameter counts from the tensor
shapes (§1.2, §3.4), and the bf16 rounding rule (§0.1, §3.3)."""

import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model_ref  # noqa: E402

fails = 0


def check(cond, what):
    global fails
    print(("ok    " if cond else "FAIL  ") + what)
    fails += not cond


# §2.4 test vectors: D=128, theta 10000, s=1, p=5, MiniCPM4-8B list entries 0, 1, 63 (double)
ext = {0: 0.9977997200264581, 1: 1.014658295992452, 63: 31.02392307921529}
want = {0: (0.2942175021533906, -0.9557384900832547), 1: (-0.4305646386043557, -0.902559744273752),
        63: (0.9999999998268125, 1.8611153426248152e-05)}
for i, e in ext.items():
    ang = 5 * 10000.0 ** (-2 * i / 128) / e
    c, s = math.cos(ang), math.sin(ang)
    check(abs(c - want[i][0]) < 1e-12 and abs(s - want[i][1]) < 1e-12,
          "RoPE test vector i=%d: cos %.16g sin %.16g" % (i, c, s))
    # the fp32 recipe model_ref uses stays within fp32 angle resolution of the double values
    f = model_ref.f32
    inv = f(1.0 / f(f(10000.0) ** f(2 * i / 128)))
    a32 = f(f(5 * f(1.0 / f(e))) * inv)
    check(abs(math.cos(a32) - want[i][0]) < 1e-6, "fp32-recipe angle i=%d within 1e-6" % i)

# §1.2 derived constants
check(abs(1.4 / math.sqrt(32) - 0.24748737341529164) < 1e-16, "r(8B) = 1.4/sqrt(32)")
check(abs(1.4 / math.sqrt(24) - 0.28577380332470415) < 1e-16, "r(0.5B) = 1.4/sqrt(24)")
check(4096 / 256 == 16 and 1024 / 256 == 4, "w = H/dim_model_base: 16 (8B), 4 (0.5B)")


def params(V, H, L, Hq, Hkv, I, tied):
    D = H // Hq
    layer = 2 * H + Hq * D * H * 2 + 2 * Hkv * D * H + 3 * I * H
    return V * H + L * layer + H + (0 if tied else V * H)


check(params(73448, 4096, 32, 32, 2, 16384, False) == 8185253888, "8B parameter count 8,185,253,888")
check(params(73448, 1024, 24, 16, 2, 4096, True) == 433873920, "0.5B parameter count 433,873,920 (tied)")
check(params(73448, 1024, 24, 16, 2, 4096, False) == 509084672, "0.5B untied 509,084,672")

# bf16 round to nearest even
check(model_ref.round_bf16(1.0 + 2 ** -8) == 1.0, "bf16: 1+2^-8 ties to even (1.0)")
check(model_ref.round_bf16(1.0 + 3 * 2 ** -8) == 1.0 + 2 ** -6, "bf16: 1+3*2^-8 ties to even (1+2^-6)")
check(model_ref.round_bf16(1.0 + 2 ** -8 + 2 ** -20) == 1.0 + 2 ** -7, "bf16: above the tie rounds up")

print("%d self-check(s) failed" % fails if fails else "model_ref self-checks passed")
sys.exit(1 if fails else 0)
