"""Pytest setup for every test path, the notebooks (nbval) included: loaded before anything imports torch."""

from __future__ import annotations

import os

# Before torch is imported (here, by the notebooks' kernels and by subprocesses, which inherit it):
# PyTorch's OpenMP worker threads spin for a long time while they wait for each other, and on a busy
# 2-core machine a spinning thread holds the core its partner needs. Beside one other training process,
# a training step of the course detector took 1.2 s instead of 0.03 s, and notebook 06 ran past its
# cell timeout; spinning only 1,000 times before sleeping, the step took 0.09 s (0.031 s on an idle
# machine against 0.029 s). See README, "Developing".
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
