# Minimal reproduction of the check_status crash seen on the H200 machine (run under cuda-gdb
# there for a native backtrace). Not part of the test suite.
import numpy as np
from libmla import _C

rng = np.random.default_rng(0)
b, s_q, h_q, h_kv = 4, 2, 16, 1
lens = np.array([100, 7, 250, 64], dtype=np.int32)
num_pages = b * 4 + 2
q = rng.standard_normal((b, s_q, h_q, 576)).astype(np.float16)
k = rng.standard_normal((num_pages, 64, h_kv, 576)).astype(np.float16)
bt = rng.permutation(num_pages)[: b * 4].reshape(b, 4).astype(np.int32)
print("describe", _C.describe(q), flush=True)
print("check_status", _C.check_status(q, k, bt, lens, 512, 0.0, False), flush=True)
