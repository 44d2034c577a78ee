"""L-BFGS (strong-Wolfe) maximisation of a deterministic scalar objective of a few tensors."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["lbfgs_maximise"]


def lbfgs_maximise(objective, params: list[torch.Tensor], max_iter: int, scale: float = 1.0,
                   tolerance_grad: float = 1e-6, tolerance_change: float = 1e-9,
                   progress: bool = True, desc: str = "evidence"):
    """Maximise ``objective(*params)`` in place over leaf tensors ``params``.

    The minimised loss is ``-objective / scale`` (``scale`` ~ problem size, so
    the tolerances are per measurement). Returns ``(trace, iterations,
    evaluations, converged)`` where ``trace`` holds the objective at every
    evaluation and ``converged`` is False if ``max_iter`` was exhausted.

    Raises ``FloatingPointError`` if the objective becomes non-finite.
    """
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=int(max_iter * 1.5) + 5,
                            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                            history_size=20, line_search_fn="strong_wolfe")
    trace: list[float] = []
    bar = tqdm(total=int(max_iter * 1.5) + 5, desc=desc, disable=not progress, leave=False)

    def closure():
        opt.zero_grad(set_to_none=True)
        value = objective(*params)
        v = float(value.detach())
        if not np.isfinite(v):
            raise FloatingPointError(f"{desc} objective became {v} at evaluation {len(trace)}")
        trace.append(v)
        loss = -value / scale
        loss.backward()
        bar.update(1)
        if len(trace) % 5 == 0:
            bar.set_postfix(objective=f"{v:.6g}")
        return loss

    opt.step(closure)
    bar.close()
    state = opt.state[opt._params[0]]
    iters = int(state.get("n_iter", 0))
    return np.asarray(trace), iters, len(trace), iters < max_iter
