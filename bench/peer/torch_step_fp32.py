#!/usr/bin/env python3
"""torch_step.py with TF32 off: PyTorch's default lets cuDNN run FP32
convolutions on TF32 tensor cores (10-bit mantissas); this runs them, and any
matmul, in full FP32 -- the precision of gannf's CUDA kernels -- so that the
two step rates compare like with like. Same arguments as torch_step.py.
"""
import os
import runpy
import sys

import torch

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
sys.argv[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_step.py")
runpy.run_path(sys.argv[0], run_name="__main__")
