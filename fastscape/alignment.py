"""Permutation alignment of two MLPs (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin").

Permuting the units of a hidden layer — the rows of its W and b and the columns of the next
layer's W, by one permutation — leaves the network's function unchanged. Two networks trained
from different seeds usually sit in differently permuted copies of the same basin, and the
straight segment between them crosses a barrier that the segment between θa and a suitably
permuted θb does not. :func:`align` finds that permutation of θb:

- ``method="weights"`` (weight matching) maximizes the inner product of the parameters,
  ``Σ_l <W_a^l, P_l W_b^l P_{l-1}^T> + <b_a^l, P_l b_b^l>`` (equivalently, minimizes
  ‖θa − π(θb)‖, since permutations keep the norm) by coordinate descent over the hidden
  layers: with the other permutations fixed, the objective is linear in P_l, so each step is a
  linear assignment problem (:func:`scipy.optimize.linear_sum_assignment`) on the ``(k, k)``
  matrix ``W_a^l (W_b^l P_{l-1}^T)^T + b_a^l b_b^l^T + W_a^{l+1}^T (P_{l+1} W_b^{l+1})``. It
  starts from the identity or (default) from a forward pass matching each layer on its
  incoming weights alone, whichever has the larger objective. The layers are visited in a
  random order (``seed``) in each sweep; a layer's permutation changes only when the
  assignment strictly improves the objective, so the objective never decreases, and the
  descent stops after a sweep that changes nothing.
- ``method="activations"`` (activation matching) runs both networks on data X and pairs the
  units of each hidden layer by the Pearson correlation of their activations (one assignment
  per layer maximizing the summed correlation; the layers do not interact, since permuting a
  layer of θb permutes the activations of that layer only).

Permutation convention: ``perm[h][i] = j`` says that unit i of hidden layer h of the aligned
network is unit j of θb, so the aligned layer is ``W_b[perm[h]][:, perm[h - 1]]``,
``b_b[perm[h]]`` (see :func:`permute`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import check_choice, check_positive_int
from .data import Batch
from .models import MLP

#: Relative gain below which a new assignment of a layer is not taken (round-off in the sums of
#: the cost matrix could otherwise make two equally good assignments swap forever).
IMPROVEMENT_RTOL = 1e-12

#: Rows per block when the activations of X are computed (bounds the memory to
#: ``block x widest layer`` floats per network).
ACTIVATION_BLOCK = 4096


@dataclass
class Alignment:
    """Result of :func:`align`.

    Attributes
    ----------
    theta : (P,) array
        θb with its hidden units permuted: the same function as θb (its loss equals θb's to
        round-off), aligned with θa.
    permutations : tuple of (k_h,) int64 arrays
        One per hidden layer (empty for a model without one); ``permutations[h][i]`` is the
        unit of θb's hidden layer h placed at position i.
    objective : (iterations + 1,) array
        ``method="weights"``: the inner product ``<θa, π(θb)>`` of the weights and biases at
        the start (entry 0; see ``init`` of :func:`align`) and after each sweep over the
        layers, non-decreasing.
        ``method="activations"``: the correlation of the paired units summed over the hidden
        layers, with the identity pairing (entry 0) and after the assignment (entry 1).
    converged : bool
        Weight matching: a sweep changed no permutation within ``max_iter`` sweeps.
        Activation matching (one assignment per layer, no iteration) and models without a
        hidden layer: always True.
    distance : (2,) array
        ‖θa − θb‖ before and ‖θa − π(θb)‖ after the alignment.
    method : str
    settings : dict
        ``seed``, ``max_iter``, ``n_samples`` (activation matching) and, for a model without
        a hidden layer, a ``note`` saying that there was nothing to permute.
    """

    theta: np.ndarray
    permutations: tuple
    objective: np.ndarray
    converged: bool
    distance: np.ndarray
    method: str
    settings: dict = field(default_factory=dict)

    @property
    def n_iterations(self) -> int:
        """Sweeps run (weight matching); 1 for activation matching, 0 without hidden layers."""
        return self.objective.shape[0] - 1


# ----------------------------------------------------------------------------- permutations
def _check_model(model) -> MLP:
    if not isinstance(model, MLP):
        raise TypeError(f"model must be an MLP, got {type(model).__name__}")
    return model


def _check_permutations(model: MLP, permutations) -> list[np.ndarray]:
    hidden = model.sizes[1:-1]
    perms = list(permutations)
    if len(perms) != len(hidden):
        raise ValueError(
            f"permutations has {len(perms)} entries, the model has {len(hidden)} hidden layers"
        )
    out = []
    for h, (p, k) in enumerate(zip(perms, hidden)):
        arr = np.asarray(p)
        if arr.dtype.kind not in "iu" or arr.shape != (k,):
            raise ValueError(
                f"permutations[{h}] must be {k} integers (hidden layer {h} has {k} units), "
                f"got dtype {arr.dtype} and shape {arr.shape}"
            )
        if not np.array_equal(np.sort(arr), np.arange(k)):
            raise ValueError(f"permutations[{h}] is not a permutation of 0..{k - 1}")
        out.append(arr.astype(np.int64))
    return out


def _apply(model: MLP, theta: np.ndarray, perms: list[np.ndarray]) -> np.ndarray:
    params = model.unflatten(theta)
    out = []
    for l, (W, b) in enumerate(params):
        rows = perms[l] if l < len(perms) else slice(None)
        cols = perms[l - 1] if l > 0 else slice(None)
        out.append((W[rows][:, cols], b[rows]))
    return model.flatten(out)


def permute(model: MLP, theta, permutations) -> np.ndarray:
    """Permute the hidden units of a parameter vector (the network's function is unchanged).

    Parameters
    ----------
    model : MLP
    theta : (P,) array
    permutations : sequence of (k_h,) int arrays
        One permutation of ``range(k_h)`` per hidden layer h; ``permutations[h][i] = j`` puts
        unit j of ``theta``'s layer h at position i.

    Returns
    -------
    (P,) array
        The permuted parameters: ``W^h[perm[h]][:, perm[h - 1]]`` and ``b^h[perm[h]]``, the
        output layer's columns permuted by the last hidden layer's permutation.
    """
    model = _check_model(model)
    theta = model.check_theta(theta)
    return _apply(model, theta, _check_permutations(model, permutations))


def _inner(theta_a: np.ndarray, theta_b: np.ndarray) -> float:
    return float(np.dot(theta_a, theta_b))


# ----------------------------------------------------------------------------- weight matching
def _layer_cost(pa, pb, perms, h) -> np.ndarray:
    """The (k, k) matrix whose assignment sum is the part of <θa, π(θb)> that depends on
    hidden layer h's permutation, the other permutations held fixed."""
    Wa, ba = pa[h]
    Wb, bb = pb[h]
    if h > 0:
        Wb = Wb[:, perms[h - 1]]
    C = Wa @ Wb.T + np.outer(ba, bb)
    Wa_next = pa[h + 1][0]
    Wb_next = pb[h + 1][0]
    if h + 1 < len(perms):
        Wb_next = Wb_next[perms[h + 1]]
    C += Wa_next.T @ Wb_next
    return C


def _forward_start(pa, pb) -> list[np.ndarray]:
    """Each hidden layer matched on its incoming weights and biases only, first layer first
    (the input units need no permutation; each layer's incoming weights are then compared
    under the permutation just found for the layer below)."""
    # imported here, not at the top: scipy.optimize would slow `import fastscape`
    from scipy.optimize import linear_sum_assignment

    perms: list[np.ndarray] = []
    for h in range(len(pa) - 1):
        Wa, ba = pa[h]
        Wb, bb = pb[h]
        if h > 0:
            Wb = Wb[:, perms[h - 1]]
        _, cols = linear_sum_assignment(Wa @ Wb.T + np.outer(ba, bb), maximize=True)
        perms.append(cols.astype(np.int64))
    return perms


def _weight_matching(model, a, b, seed, max_iter, init):
    from scipy.optimize import linear_sum_assignment

    pa, pb = model.unflatten(a), model.unflatten(b)
    k = model.sizes[1:-1]
    perms = [np.arange(n, dtype=np.int64) for n in k]
    start = _inner(a, b)
    if init == "forward":
        candidate = _forward_start(pa, pb)
        value = _inner(a, _apply(model, b, candidate))
        if value > start:
            perms, start = candidate, value
    rng = np.random.default_rng(seed)
    objective = [start]
    converged = False
    rows = [np.arange(n) for n in k]
    for _ in range(max_iter):
        changed = False
        for h in rng.permutation(len(k)):
            C = _layer_cost(pa, pb, perms, h)
            _, cols = linear_sum_assignment(C, maximize=True)
            old = float(C[rows[h], perms[h]].sum())
            new = float(C[rows[h], cols].sum())
            scale = float(np.abs(C).sum()) or 1.0
            if new - old > IMPROVEMENT_RTOL * scale:
                perms[h] = cols.astype(np.int64)
                changed = True
        objective.append(_inner(a, _apply(model, b, perms)))
        if not changed:
            converged = True
            break
    return perms, np.array(objective), converged


# ----------------------------------------------------------------------------- activation matching
def _probes(model: MLP) -> list[tuple[MLP, int, np.ndarray]]:
    """Per hidden layer h, a model whose outputs are that layer's activations: the first h + 1
    layers of ``model`` followed by an identity layer (W = I, b = 0, exact in floating point),
    with the number of parameters it takes from the front of theta (the layout stores the
    layers one after the other) and the identity layer's parameters. Its logits go through
    the dispatch seam like any model's."""
    out = []
    for h, k in enumerate(model.sizes[1:-1]):
        probe = MLP([*model.sizes[: h + 2], k], activation=model.activation, loss="mse")
        head = np.concatenate([np.eye(k).ravel(), np.zeros(k)])
        out.append((probe, model.layout[h].bias.stop, head))
    return out


def _hidden_activations(probes, theta: np.ndarray, X: np.ndarray) -> list[np.ndarray]:
    """Hidden activations of a block of samples: one (n, k_h) array per hidden layer."""
    out = []
    for probe, stop, head in probes:
        out.append(probe.logits(np.concatenate([theta[:stop], head]), X))
    return out


def _correlations(model: MLP, a: np.ndarray, b: np.ndarray, X: np.ndarray) -> list[np.ndarray]:
    """Per hidden layer, the (k, k) Pearson correlations of θa's units (rows) with θb's
    (columns) over the samples of X; a unit whose activation is constant on X correlates 0.

    Two passes over X in blocks: the means, then the centred cross-products (no cancellation
    from subtracting large means at the end)."""
    probes = _probes(model)
    n = X.shape[0]
    k = model.sizes[1:-1]
    mean_a = [np.zeros(m) for m in k]
    mean_b = [np.zeros(m) for m in k]
    for s in range(0, n, ACTIVATION_BLOCK):
        Xb = X[s : s + ACTIVATION_BLOCK]
        for h, (Aa, Ab) in enumerate(
            zip(_hidden_activations(probes, a, Xb), _hidden_activations(probes, b, Xb))
        ):
            mean_a[h] += Aa.sum(axis=0)
            mean_b[h] += Ab.sum(axis=0)
    mean_a = [m / n for m in mean_a]
    mean_b = [m / n for m in mean_b]
    cross = [np.zeros((m, m)) for m in k]
    var_a = [np.zeros(m) for m in k]
    var_b = [np.zeros(m) for m in k]
    for s in range(0, n, ACTIVATION_BLOCK):
        Xb = X[s : s + ACTIVATION_BLOCK]
        for h, (Aa, Ab) in enumerate(
            zip(_hidden_activations(probes, a, Xb), _hidden_activations(probes, b, Xb))
        ):
            Da = Aa - mean_a[h]
            Db = Ab - mean_b[h]
            cross[h] += Da.T @ Db
            var_a[h] += np.einsum("ij,ij->j", Da, Da)
            var_b[h] += np.einsum("ij,ij->j", Db, Db)
    out = []
    for h in range(len(k)):
        sa, sb = np.sqrt(var_a[h]), np.sqrt(var_b[h])
        denom = np.outer(sa, sb)
        corr = np.divide(cross[h], denom, out=np.zeros_like(cross[h]), where=denom > 0.0)
        out.append(corr)
    return out


def _activation_matching(model, a, b, X):
    from scipy.optimize import linear_sum_assignment

    corrs = _correlations(model, a, b, X)
    perms = []
    before = after = 0.0
    for C in corrs:
        _, cols = linear_sum_assignment(C, maximize=True)
        rows = np.arange(C.shape[0])
        before += float(np.trace(C))
        after += float(C[rows, cols].sum())
        perms.append(cols.astype(np.int64))
    return perms, np.array([before, after])


# ----------------------------------------------------------------------------- API
def align(
    model: MLP,
    theta_a,
    theta_b,
    method: str = "weights",
    X=None,
    *,
    seed: int = 0,
    max_iter: int = 100,
    init: str = "forward",
) -> Alignment:
    """Permute the hidden units of θb to bring it close to θa (Git Re-Basin).

    Parameters
    ----------
    model : MLP
        Any member of the family: any number of hidden layers, any activation. A model
        without a hidden layer has nothing to permute: θb is returned unchanged, with
        ``settings["note"]`` saying so.
    theta_a, theta_b : (P,) arrays
        The reference parameters and those to permute.
    method : {"weights", "activations"}
        Weight matching (coordinate descent of linear assignments over the layers, no data)
        or activation matching (correlations of hidden activations on ``X``).
    X : (n, d) array or Batch, optional
        The inputs of activation matching (required there, refused with weight matching);
        n >= 2.
    seed : int
        Seed of the order in which weight matching visits the layers in each sweep.
    max_iter : int
        Most sweeps of weight matching.
    init : {"forward", "identity"}
        Where weight matching starts: ``"identity"`` (θb as it is, as in Ainsworth et al.)
        or ``"forward"`` (default): each hidden layer matched on its incoming weights and
        biases alone, first layer first — taken only when its objective beats the
        identity's. The forward start recovers a permuted copy of θa exactly; from the
        identity, the coordinate descent stopped at a local optimum for about one such copy
        in ten of small nets with two or three hidden layers (tests/test_alignment.py).

    Returns
    -------
    Alignment
        ``theta`` (the permuted θb), ``permutations``, ``objective`` per iteration,
        ``converged`` and ``distance`` (‖θa − θb‖ before, after).

    Notes
    -----
    Activation matching pairs units by correlation, which does not see the scale of a unit; a
    unit whose activation is constant on X (a dead ReLU) correlates 0 with every unit, so such
    units are paired arbitrarily among themselves. Weight matching looks at the weights and
    has no such blind spot, but the coordinate descent may stop at a local optimum (another
    ``seed`` visits the layers in another order).
    """
    model = _check_model(model)
    a = model.check_theta(theta_a, "theta_a")
    b = model.check_theta(theta_b, "theta_b")
    check_choice(method, "method", ("weights", "activations"))
    check_choice(init, "init", ("forward", "identity"))
    seed = check_positive_int(seed, "seed", minimum=0)
    max_iter = check_positive_int(max_iter, "max_iter")
    settings: dict = {"seed": seed, "max_iter": max_iter, "init": init}
    if method == "activations":
        if X is None:
            raise ValueError("X is required with method='activations' (the data to run on)")
        Xa = model.check_X(X.X if isinstance(X, Batch) else X)
        if Xa.shape[0] < 2:
            raise ValueError(f"X needs at least 2 samples for correlations, got {Xa.shape[0]}")
        settings["n_samples"] = int(Xa.shape[0])
    elif X is not None:
        raise ValueError("X is used by method='activations' only; weight matching needs no data")
    before = float(np.linalg.norm(a - b))
    if model.is_linear:
        settings["note"] = "the model has no hidden layer: nothing to permute"
        score = _inner(a, b) if method == "weights" else 0.0
        return Alignment(
            b.copy(), (), np.array([score]), True, np.array([before, before]), method, settings
        )
    if method == "weights":
        perms, objective, converged = _weight_matching(model, a, b, seed, max_iter, init)
    else:
        perms, objective = _activation_matching(model, a, b, Xa)
        converged = True
    aligned = _apply(model, b, perms)
    distance = np.array([before, float(np.linalg.norm(a - aligned))])
    return Alignment(aligned, tuple(perms), objective, converged, distance, method, settings)


__all__ = ["Alignment", "align", "permute"]
