"""Counts the selection rows (KV head, token) that differ between two --dump files of s1bench."""
import sys
import numpy as np
a = np.fromfile(sys.argv[1], dtype=np.int32)
b = np.fromfile(sys.argv[2], dtype=np.int32)
w = int(sys.argv[3]) if len(sys.argv) > 3 else 96
a, b = a.reshape(-1, w), b.reshape(-1, w)
d = (a != b).any(axis=1)
print(f"rows {a.shape[0]}, differing {int(d.sum())} ({100.0 * d.mean():.3f}%), differing entries {int((a != b).sum())}")
