"""L-BFGS (strong-Wolfe) maximisation of a deterministic scalar objective of a few tensors.

``torch.optim.LBFGS`` does the quasi-Newton steps and the line search, one
iteration per ``step`` call; the stopping rules, the evaluation count and the
convergence verdict are decided here from quantities this module computed
itself (``LBFGS`` would otherwise report a budget stop or a stalled line
search as success, and its counters are private).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["LBFGSResult", "lbfgs_maximise"]

# Strong-Wolfe constants of torch's line search, used to judge the accepted step.
_C1, _C2 = 1e-4, 0.9


@dataclass
class LBFGSResult:
    """Outcome of :func:`lbfgs_maximise`.

    Attributes
    ----------
    trace : numpy.ndarray
        ``(evaluations,)`` objective at every evaluation.
    iterations : int
        Accepted steps.
    evaluations : int
        Objective evaluations (each computes value and gradient).
    converged : bool
        ``max |∇ loss| <= tolerance_grad`` at the final point, or the change
        criterion: the last step satisfied the strong Wolfe conditions and
        changed the loss by less than ``tolerance_change``, or the L-BFGS
        direction ``d`` predicts a change ``|∇ lossᵀ d| < tolerance_change``
        (``loss = -objective / scale``). Budget stops and line searches that
        found no acceptable step are not convergence.
    reason : str
        ``"gradient"``, ``"change"`` (an accepted step, or the predicted
        first-order change ``|gᵀd|`` of the next one, below ``tolerance_change``),
        ``"max_iter"``, ``"max_eval"`` or ``"line search stalled"``.
    gradient_max : float
        ``max |∇ loss|`` at the final point.
    objective : float
        The objective at the final point.
    """

    trace: np.ndarray
    iterations: int
    evaluations: int
    converged: bool
    reason: str
    gradient_max: float
    objective: float


def _lbfgs_direction(grad: torch.Tensor, pairs: list, history: int = 20) -> torch.Tensor:
    """L-BFGS search direction ``-H grad`` from our own record of accepted ``(s, y)`` pairs.

    Same two-loop recursion and pair filter (``yᵀs > 1e-10``) as ``torch.optim.LBFGS``;
    used only to judge the predicted change ``gradᵀd`` when LBFGS declines to step.
    """
    kept = [(s, y) for s, y in pairs if float(y @ s) > 1e-10][-history:]
    q = -grad.clone()
    alphas = []
    for s, y in reversed(kept):
        a = float(s @ q) / float(y @ s)
        q = q - a * y
        alphas.append(a)
    if kept:
        s, y = kept[-1]
        q = q * (float(y @ s) / float(y @ y))
    for (s, y), a in zip(kept, reversed(alphas)):
        b = float(y @ q) / float(y @ s)
        q = q + (a - b) * s
    return q


def lbfgs_maximise(objective, params: list[torch.Tensor], max_iter: int, scale: float = 1.0,
                   tolerance_grad: float = 1e-6, tolerance_change: float = 1e-9,
                   max_eval: int | None = None, progress: bool = True,
                   desc: str = "evidence") -> LBFGSResult:
    """Maximise ``objective(*params)`` in place over leaf tensors ``params``.

    The minimised loss is ``-objective / scale`` (``scale`` ~ problem size, so
    the tolerances are per measurement).

    Parameters
    ----------
    objective : callable
        ``(*params) -> 0-d tensor``, differentiable, deterministic.
    params : list of torch.Tensor
        Leaf tensors with ``requires_grad``; updated in place.
    max_iter : int
        Maximum accepted steps.
    scale : float
    tolerance_grad, tolerance_change : float
        See :class:`LBFGSResult`.
    max_eval : int, optional
        Maximum evaluations (default ``1.5 max_iter + 5``).
    progress : bool
    desc : str

    Returns
    -------
    LBFGSResult

    Raises
    ------
    FloatingPointError
        The objective became non-finite.
    """
    max_eval = int(max_iter * 1.5) + 5 if max_eval is None else int(max_eval)
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, max_eval=max_eval,
                            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                            history_size=20, line_search_fn="strong_wolfe")
    trace: list[float] = []
    seen: list[tuple[torch.Tensor, float, list[torch.Tensor]]] = []   # (point, loss, grads)
    bar = tqdm(total=max_eval, desc=desc, disable=not progress, leave=False)

    def point() -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in params])

    def lookup(x):
        for xs, loss, grads in reversed(seen):
            if torch.equal(xs, x):
                return loss, grads
        return None

    def closure():
        x = point()
        hit = lookup(x)
        if hit is not None:  # LBFGS re-evaluates the accepted point at each step: reuse it
            for p, g in zip(params, hit[1]):
                p.grad = g.clone()
            return torch.tensor(hit[0], dtype=params[0].dtype)
        for p in params:
            p.grad = None
        value = objective(*params)
        v = float(value.detach())
        if not np.isfinite(v):
            raise FloatingPointError(f"{desc} objective became {v} at evaluation {len(trace)}")
        trace.append(v)
        loss = -value / scale
        loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
        seen.append((x, float(loss.detach()), grads))
        bar.update(1)
        if len(trace) % 5 == 0:
            bar.set_postfix(objective=f"{v:.6g}")
        return loss

    def state_at(x):
        """(loss, flat gradient) at an evaluated point, evaluating it if needed."""
        hit = lookup(x)
        if hit is None:
            with torch.enable_grad():
                closure()
            hit = lookup(x)
        return hit[0], torch.cat([g.reshape(-1) for g in hit[1]])

    x = point()
    f, g = state_at(x)
    iterations, reason = 0, ""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []      # accepted (s, y) curvature pairs
    try:
        while True:
            if float(g.abs().max()) <= tolerance_grad:
                reason = "gradient"
                break
            if iterations >= max_iter:
                reason = "max_iter"
                break
            remaining = max_eval - len(trace)
            if remaining <= 0:
                reason = "max_eval"
                break
            # The line search then makes at most `remaining` evaluations (the step's first
            # closure call is the cached current point).
            opt.param_groups[0]["max_eval"] = remaining
            opt.step(closure)
            x_new = point()
            if torch.equal(x_new, x):
                if len(trace) >= max_eval:
                    reason = "max_eval"
                elif abs(float(g @ _lbfgs_direction(g, pairs))) < tolerance_change:
                    reason = "change"  # predicted first-order change below tolerance: no step needed
                else:
                    reason = "line search stalled"
                break
            f_new, g_new = state_at(x_new)
            iterations += 1
            s = x_new - x
            pairs.append((s, g_new - g))
            wolfe = (f_new <= f + _C1 * float(g @ s)
                     and abs(float(g_new @ s)) <= _C2 * abs(float(g @ s)))
            small = abs(f_new - f) < tolerance_change or float(s.abs().max()) <= tolerance_change
            x, f, g = x_new, f_new, g_new
            if small:
                reason = "gradient" if float(g.abs().max()) <= tolerance_grad else (
                    "change" if wolfe else "line search stalled")
                break
    finally:
        bar.close()
    return LBFGSResult(trace=np.asarray(trace), iterations=iterations, evaluations=len(trace),
                       converged=reason in ("gradient", "change"), reason=reason,
                       gradient_max=float(g.abs().max()), objective=-f * scale)
