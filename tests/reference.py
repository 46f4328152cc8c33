"""Independent float64 NumPy reference of the SeMoBridge method.

Written from the method description (docs/method.md) only (sections Notation, Text side, The
bridge, Prototypes, Class weights, Logits, SeMoBridge-T training), without
looking at the library's implementation.  Every function takes and returns
float64 NumPy arrays.  A few functions accept an ``xp`` module argument so the
same formula can be evaluated with float64 torch tensors (for autograd
gradient references); the formulas are the same code either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PINV_ATOL = 0.3
LAMBDA_IT = 0.5
LAMBDA_C = 0.1
LAMBDA_B = 0.1


# ----------------------------------------------------------------- helpers


def _is_np(x):
    return isinstance(x, np.ndarray)


def _sumsq_last(x):
    """sum of squares over the last axis, kept as a trailing axis of size 1."""
    if _is_np(x):
        return (x * x).sum(-1, keepdims=True)
    return (x * x).sum(-1, keepdim=True)


def n(x):
    """x / ||x||_2 along the last axis (works for numpy and torch)."""
    return x / _sumsq_last(x) ** 0.5


def class_means(x, labels, num_classes):
    """Per-class mean of rows of x: [C, ...]. Works for numpy only."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    return np.stack([x[labels == c].mean(0) for c in range(num_classes)])


def _class_means_any(x, labels, num_classes):
    """Per-class mean for numpy or torch tensors (labels is a numpy array)."""
    labels = np.asarray(labels)
    rows = [x[np.nonzero(labels == c)[0]].mean(0) for c in range(num_classes)]
    if isinstance(x, np.ndarray):
        return np.stack(rows)
    import torch

    return torch.stack(rows)


# ----------------------------------------------------------------- bridge


def pinv_truncated(W, atol=PINV_ATOL):
    """SVD pseudo-inverse of W [d_t, d] with singular values < atol zeroed -> [d, d_t]."""
    W = np.asarray(W, dtype=np.float64)
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    inv = np.where(S >= atol, 1.0 / np.where(S > 0, S, 1.0), 0.0)
    return (Vh.T * inv) @ U.T


def pinv_full(W):
    return np.linalg.pinv(np.asarray(W, dtype=np.float64))


def pseudo_eos(x, Wp, L, b=None):
    """e_hat = L * n(x W+ + b) -> [N, d_t]."""
    u = x @ Wp
    if b is not None:
        u = u + b
    return L * n(u)


def bridge(x, Wp, W, L, b=None):
    """bridge(x) = e_hat W -> [N, d]."""
    return pseudo_eos(x, Wp, L, b) @ W


# ----------------------------------------------------------------- text side


@dataclass
class TextRef:
    T: np.ndarray  # [C, d]
    E: np.ndarray  # [C, d_t]
    L: float
    t: np.ndarray  # [C, d_t]


def text_side(eos, prompt_class, W, C):
    eos = np.asarray(eos, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    t = class_means(eos, prompt_class, C)
    T = n(class_means(n(eos @ W), prompt_class, C))
    E = n(class_means(n(eos), prompt_class, C))
    L = float(np.linalg.norm(t, axis=-1).mean())
    return TextRef(T=T, E=E, L=L, t=t)


# ----------------------------------------------------------------- prototypes


def image_prototypes(F, labels, C):
    return n(class_means(F, labels, C))


def bridged_prototypes(F, labels, C, Wp, W, L, B=None):
    labels = np.asarray(labels)
    b = None if B is None else B[labels]
    G = bridge(F, Wp, W, L, b)
    return n(class_means(G, labels, C))


# ----------------------------------------------------------------- class weights


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def class_kl(I, T):
    p = softmax(I @ T.T, axis=1)
    pcc = np.diag(p)
    return np.log2((1 + 1e-6) / (pcc + 1e-6))


def class_weights(D, sigma):
    return np.exp(sigma * D)


# ----------------------------------------------------------------- logits


def logits_terms(q, T, P, I, Wp, W, L, D, sigma, alpha, beta, gamma):
    """Return z1, z2, z3 (each [N, C])."""
    w = class_weights(D, sigma)
    nq = n(q)
    z1 = np.exp(-alpha * (1 - nq @ T.T))
    z2 = w * np.exp(-beta * (1 - nq @ P.T))
    z3 = w * np.exp(-gamma * (1 - n(bridge(q, Wp, W, L)) @ I.T))
    return z1, z2, z3


def affinities(q, T, P, I, Wp, W, L):
    nq = n(q)
    return np.stack([nq @ T.T, nq @ P.T, n(bridge(q, Wp, W, L)) @ I.T])


def logits(q, T, P, I, Wp, W, L, D, sigma, alpha, beta, gamma, l1, l2, l3):
    z1, z2, z3 = logits_terms(q, T, P, I, Wp, W, L, D, sigma, alpha, beta, gamma)
    return l1 * z1 + l2 * z2 + l3 * z3


# ----------------------------------------------------------------- training


def cross_entropy(scores, target, xp=np):
    """Mean cross entropy of row scores [N, C] against integer targets."""
    if _is_np(scores):
        m = scores.max(-1, keepdims=True)
    else:
        m = scores.detach().max(-1, keepdim=True).values
    lse = xp.log(xp.exp(scores - m).sum(-1)) + m[..., 0]
    idx = np.arange(scores.shape[0])
    return (lse - scores[idx, np.asarray(target)]).mean()


def losses(Wp, B, F, labels, W, T, E, L, s, C, xp=np):
    """All SeMoBridge-T loss terms; B may be None (no CSB).

    Works with numpy float64 arrays (xp=np) or torch float64 tensors
    (xp=torch), in which case autograd can differentiate it.
    """
    labels = np.asarray(labels)
    u = F @ Wp
    if B is not None:
        u = u + B[labels]
    Ehat = L * n(u)                      # [N, d_t]
    G = Ehat @ W                         # [N, d]
    P = n(_class_means_any(G, labels, C))
    classes = np.arange(C)
    img = cross_entropy(s * (n(F) @ P.T), labels, xp)
    txtp = cross_entropy(P @ T.T, classes, xp)
    txte = cross_entropy(n(_class_means_any(Ehat, labels, C)) @ E.T, classes, xp)
    cons = cross_entropy(n(G) @ P.T, labels, xp)
    out = {"img": img, "txtp": txtp, "txte": txte, "cons": cons}
    if B is not None:
        norms = _sumsq_last(B)[..., 0] ** 0.5
        out["bias"] = ((norms - norms.mean()) ** 2).mean()
        bias = out["bias"]
    else:
        out["bias"] = 0.0 * img
        bias = 0.0
    out["loss"] = (LAMBDA_IT * img + (1 - LAMBDA_IT) * (txtp + txte) / 2
                   + LAMBDA_C * cons + LAMBDA_B * bias)
    return out


def learning_rate(step):
    if step == 0:
        return 1e-5
    if step < 500:
        return 1.5e-4 * step / 500
    return 1.5e-4


# ----------------------------------------------------------------- synthetic data


@dataclass
class Synthetic:
    W: np.ndarray            # [d_t, d]
    eos: np.ndarray          # [M, d_t]
    prompt_class: np.ndarray  # [M]
    F: np.ndarray            # [N, d]
    labels: np.ndarray       # [N]
    q: np.ndarray            # [Q, d]
    q_labels: np.ndarray     # [Q]
    C: int
    s: float = 100.0


def synthetic(seed=0, C=5, d_t=48, d=64, n_query=20):
    """CLIP-like features with a modality gap.

    W has a spread of singular values (some < 0.3 so truncation matters), text
    EOS tokens are class directions + per-prompt noise with a large shared
    component (EOS tokens are long and similar), image embeddings are the
    class's text direction mapped through W plus a shared gap offset plus noise,
    unequal prompts and shots per class, not normalised.
    """
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((d_t, d_t)))
    V, _ = np.linalg.qr(rng.standard_normal((d, d)))
    sv = np.geomspace(3.0, 0.05, d_t)  # many below 0.3
    W = (U * sv) @ V[:, :d_t].T          # [d_t, d], rank d_t

    common = 6.0 * rng.standard_normal(d_t)
    cls_dir = 2.0 * rng.standard_normal((C, d_t))
    prompts_per_class = [3 + (c % 4) for c in range(C)]
    eos, pc = [], []
    for c in range(C):
        for _ in range(prompts_per_class[c]):
            eos.append(common + cls_dir[c] + 0.7 * rng.standard_normal(d_t))
            pc.append(c)
    eos = np.array(eos)
    pc = np.array(pc)

    gap = 1.5 * rng.standard_normal(d)
    img_dir = (cls_dir @ W) + 0.8 * rng.standard_normal((C, d))

    def images(labels):
        scale = rng.uniform(0.5, 2.0, size=(len(labels), 1))
        x = 0.15 * img_dir[labels] + gap + 0.9 * rng.standard_normal((len(labels), d))
        return scale * x

    shots = [1 + (c % 3) * 2 for c in range(C)]  # 1, 3, 5, 1, 3, ...
    labels = np.concatenate([np.full(k, c) for c, k in enumerate(shots)])
    F = images(labels)
    q_labels = rng.integers(0, C, size=n_query)
    q = images(q_labels)
    # round to float32 so that the float32 library and this float64 reference
    # see exactly the same inputs
    r = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    return Synthetic(W=r(W), eos=r(eos), prompt_class=pc, F=r(F), labels=labels,
                     q=r(q), q_labels=q_labels, C=C)


# ----------------------------------------------------------------- training protocol (order of operations)


def _bias_grad(B):
    """Gradient of the bias term mean_c (|B_c| - mean |B|)^2 (0 where |B_c| = 0)."""
    norms = np.linalg.norm(B, axis=1, keepdims=True)
    coef = 2.0 / len(B) * (norms - norms.mean())
    return np.where(norms > 0, coef / np.where(norms > 0, norms, 1.0), 0.0) * B


def train(F, labels, W, eos, prompt_class, C, s, q, q_labels, blend_params, steps, order="paper", keep_last=False):
    """SeMoBridge-T trained in float64 in one of the two orders of operations.

    "paper" (the published code): each of `steps` iterations updates with AdamW, then
    evaluates the blend with `blend_params` (sigma, alpha, beta, gamma, l1, l2, l3) on (q,
    q_labels); the first strictly best state is kept (the untrained one is never a candidate;
    keep_last keeps the state after all updates); the prototypes for testing come from the
    LAST state. "consistent": evaluate, then update, `steps - 1` updates; prototypes from the
    kept state. Returns (W+ kept, B kept, P for testing, kept step = updates applied).
    """
    import torch

    text = text_side(eos, prompt_class, W, C)
    Wp = pinv_truncated(W)
    B = np.zeros((C, W.shape[0]))
    I = image_prototypes(F, labels, C)
    D = class_kl(I, text.T)
    lr_wd, beta1, beta2, eps = 0.01, 0.9, 0.999, 1e-8
    moments = {"Wp": [np.zeros_like(Wp), np.zeros_like(Wp)], "B": [np.zeros_like(B), np.zeros_like(B)]}

    def accuracy(Wp, B):
        P = bridged_prototypes(F, labels, C, Wp, W, text.L, B)
        z = logits(q, text.T, P, I, Wp, W, text.L, D, *blend_params)
        return (z.argmax(1) == q_labels).mean()

    def gradients(Wp, B):
        Wp_t = torch.tensor(Wp, requires_grad=True)
        B_t = torch.tensor(B, requires_grad=True)
        out = losses(Wp_t, B_t, torch.from_numpy(F), labels, torch.from_numpy(W), torch.from_numpy(text.T),
                     torch.from_numpy(text.E), text.L, s, C, xp=torch)
        (LAMBDA_IT * out["img"] + (1 - LAMBDA_IT) * (out["txtp"] + out["txte"]) / 2 + LAMBDA_C * out["cons"]).backward()
        return Wp_t.grad.numpy(), B_t.grad.numpy() + LAMBDA_B * _bias_grad(B)

    def adamw(name, p, g, lr, t):
        m, v = moments[name]
        p = p * (1 - lr * lr_wd)
        m[:] = beta1 * m + (1 - beta1) * g
        v[:] = beta2 * v + (1 - beta2) * g * g
        return p - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)

    updates = steps if order == "paper" else steps - 1
    best, kept = -1.0, None
    for e in range(steps):
        if order == "consistent" and not keep_last:
            acc = accuracy(Wp, B)
            if acc > best:
                best, kept = acc, (Wp.copy(), B.copy(), e)
        if e < updates:
            gW, gB = gradients(Wp, B)
            Wp, B = adamw("Wp", Wp, gW, learning_rate(e), e + 1), adamw("B", B, gB, learning_rate(e), e + 1)
            if order == "paper" and not keep_last:
                acc = accuracy(Wp, B)
                if acc > best:
                    best, kept = acc, (Wp.copy(), B.copy(), e + 1)
    last = (Wp, B, updates)
    kept = kept if kept is not None else last
    P_from = last if order == "paper" else kept
    return kept[0], kept[1], bridged_prototypes(F, labels, C, P_from[0], W, text.L, P_from[1]), kept[2]
