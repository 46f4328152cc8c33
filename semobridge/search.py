"""Blend hyper-parameter search on the validation split (σ, α, β, γ, λ1-3 of docs/method.md, "Logits").

Two procedures, chosen by `method`:

- "coordinate" (default): coordinate ascent over the blocks (α, λ1), (β, λ2), (γ, λ3) and (σ, λ1).
  In each block the exponent (or σ) runs over a coarse and a fine grid, and the block's λ is solved
  for every grid value at once: with everything else fixed, z = t·X + R is linear in t = λ, so the t
  that classify one query correctly form an interval, and counting the intervals over T_STEPS
  log-spaced values of t gives the best λ (the middle of the widest best range) for about the cost of
  one candidate. A grid value is one trial. The exponentials of a grid form a geometric sequence
  (one product per value). Candidates are scored on a shortlist of each query's rival classes (the
  highest by each affinity and by D), the starts are the best of a scrambled Sobol screen over the
  published ranges, and the finalists are scored again on every class.
- "tpe": the published procedure, 1,000 sequential Optuna TPE trials over blend.RANGES with a fixed
  seed, maximising validation accuracy (optuna is an optional dependency).

Candidates are ranked by validation accuracy, ties broken by the mean normalised margin (settings
that separate the classes more clearly). The published defaults are always a finalist, so the result
is never worse on validation than them. Memory is bounded whatever the budget: affinities are
computed in query chunks, and every temporary has a bounded size (CHUNK_ELEMENTS, FULL_CHUNK_ELEMENTS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm.auto import tqdm

from .blend import RANGES, BlendParams, blend
from .errors import InputError
from .model import SeMoBridge
from .params import SEARCH_METHODS
from .validate import positive

DEFAULT_TRIALS = {"coordinate": 1024, "tpe": 1000}  # tpe: the published count
SHORTLIST = 16  # wrong classes kept per query from the ranking by each affinity and by D
STARTS = 4  # coordinate-ascent starts (the best of the Sobol screen)
SCREEN = 0.125  # the share of the trials spent on the Sobol screen ...
SCREEN_QUERIES = 1024  # ... scored on a sample of about this many queries first
CHUNK_ELEMENTS = 1 << 18  # elements per temporary on the shortlist: cache-sized work on a CPU
FULL_CHUNK_ELEMENTS = 1 << 22  # elements per temporary on every class (affinities, exact scores, TPE trials)
CACHE_ELEMENTS = 1 << 26  # validation affinities kept between stages up to this size (256 MB)
LOG_T = 40.0  # the λ search covers t in [e^-40, e^40] relative to the other terms ...
T_STEPS = 4096  # ... at this many log-spaced values (a factor 1.02 apart)


def search_blend(
    head: SeMoBridge,
    val_image: torch.Tensor,
    val_label: torch.Tensor,
    trials: int | None = None,
    seed: int = 0,
    progress: bool = True,
    method: str = "coordinate",
) -> BlendParams:
    """The blend hyper-parameters with the best validation accuracy found by `method` with `trials` candidates."""
    if method not in SEARCH_METHODS:
        raise InputError(f"unknown blend search {method!r}", hint=f"use one of: {', '.join(SEARCH_METHODS)}")
    trials = positive(DEFAULT_TRIALS[method] if trials is None else trials, "the blend search's trials")
    if head.num_classes < 2:  # every setting is right
        return BlendParams()
    val = Validation(head, val_image, val_label, keep=method == "tpe" or None)  # TPE re-reads them every trial
    search = coordinate_search if method == "coordinate" else tpe_search
    return search(val, trials, seed, progress)


# ----------------------------------------------------------------- validation affinities and exact scores


class Validation:
    """The validation affinities [3, N, C] in query chunks of FULL_CHUNK_ELEMENTS; kept when small, else recomputed."""

    def __init__(self, head: SeMoBridge, images: torch.Tensor, labels: torch.Tensor, keep: bool | None = None):
        self.head = head
        self.device = head.text_classifier.device
        self.images, self.labels = images.to(self.device), labels.to(self.device)
        self.kl = head.class_kl
        self.classes, self.size = head.num_classes, len(labels)
        self.rows = max(1, FULL_CHUNK_ELEMENTS // (3 * self.classes))
        keep = keep if keep is not None else 3 * self.size * self.classes <= CACHE_ELEMENTS
        self._kept = list(self._compute()) if keep else None

    def _compute(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in zip(self.images.split(self.rows), self.labels.split(self.rows)):
            yield self.head.affinities(images), labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(affinities [3, n, C], labels [n]) per query chunk."""
        return iter(self._kept) if self._kept is not None else self._compute()


def _tally(true: torch.Tensor, other: torch.Tensor, hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct count and summed normalised margin per candidate, from the true and the best wrong score [B, n]."""
    margin = ((true - other) / (torch.maximum(true, other) + 1e-12)).clamp(-1, 1)
    return hit.sum(-1).double(), margin.sum(-1).double()


def _key(hits: torch.Tensor, margins: torch.Tensor, queries: int) -> torch.Tensor:
    """Ranking key: correct count + a margin term in [0, 1) (lexicographic)."""
    return hits + 0.5 * (margins / queries + 1) * (1 - 1e-6)


def _full_tally(aff: torch.Tensor, kl: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct count (argmax == label, as accuracy counts it) and summed margin per candidate over all classes."""
    N, C = aff.shape[1:]
    hits, margins = [], []
    for rows in params.split(max(1, FULL_CHUNK_ELEMENTS // (N * C))):
        z = blend(aff, kl, rows)  # [b, N, C], positive
        top, index = z.topk(2, dim=-1)
        target = labels.expand(len(rows), N)
        hit = index[..., 0] == target
        true = z.gather(-1, target[..., None]).squeeze(-1)
        other = torch.where(hit, top[..., 1], top[..., 0])  # the best wrong class
        h, m = _tally(true, other, hit)
        hits.append(h)
        margins.append(m)
    return torch.cat(hits), torch.cat(margins)


def exact_scores(val: Validation, params: torch.Tensor) -> torch.Tensor:
    """Ranking key per candidate [B] on every class of the whole validation split."""
    hits = margins = 0
    for aff, labels in val:
        h, m = _full_tally(aff, val.kl, labels, params)
        hits, margins = hits + h, margins + m
    return _key(hits, margins, val.size)


# ----------------------------------------------------------------- the shortlist


@dataclass
class Shortlist:
    """Per query its true class (column 0) and the wrong classes most likely to beat it: M of C columns.

    Those are the highest wrong classes by each affinity and by D (class weights w_c = exp(σ D_c)
    decide when the terms are flat); duplicates are harmless (only the best wrong score counts).
    """

    gap: torch.Tensor  # affinities - 1, [3, N, M] (≤ 0)
    kl: torch.Tensor  # D of each listed class [N, M]

    @classmethod
    def build(cls, val: Validation, per_affinity: int | None = None) -> "Shortlist":
        """The true class and the `per_affinity` highest wrong classes by each affinity and by D (all when C is small)."""
        per_affinity = per_affinity or SHORTLIST
        gaps, kls = [], []
        for aff, labels in val:
            n, C = aff.shape[1:]
            if 4 * per_affinity >= C - 1:
                others = torch.arange(C - 1, device=aff.device).expand(n, C - 1)
                wrong = others + (others >= labels[:, None])
            else:
                masked = aff.scatter(2, labels[None, :, None].expand(3, n, 1), float("-inf"))
                wrong = masked.topk(per_affinity, dim=-1).indices.permute(1, 0, 2).reshape(n, -1)
                heavy = val.kl.topk(per_affinity + 1).indices.expand(n, -1)  # the largest w_c win when the terms are flat
                own = (heavy == labels[:, None]).to(torch.uint8)
                heavy = heavy.gather(1, own.argsort(dim=1, stable=True)[:, :per_affinity])
                wrong = torch.cat([wrong, heavy], 1)
            cols = torch.cat([labels[:, None], wrong], 1)
            gaps.append(aff.gather(2, cols.expand(3, -1, -1)) - 1)
            kls.append(val.kl[cols])
        return cls(torch.cat(gaps, 1), torch.cat(kls))

    @property
    def queries(self) -> int:
        return self.kl.shape[0]

    def sample(self, queries: int) -> "Shortlist":
        """Every k-th query, at least `queries` of them (the classes stay evenly represented)."""
        stride = max(1, self.queries // queries)
        return Shortlist(self.gap[:, ::stride], self.kl[::stride]) if stride > 1 else self

    def chunks(self, depth: int = 1) -> list[slice]:
        """Query ranges whose [depth, n, M] temporaries hold at most CHUNK_ELEMENTS."""
        rows = max(1, CHUNK_ELEMENTS // (depth * self.kl.shape[1]))
        return [slice(i, i + rows) for i in range(0, self.queries, rows)]

    def scores(self, params: torch.Tensor) -> torch.Tensor:
        """Ranking key per candidate [B] on the shortlist."""
        params = params.to(self.gap)
        hits = margins = 0
        for q in self.chunks(len(params)):
            p = params.reshape(-1, 7, 1, 1)
            sigma, alpha, beta, gamma, l1, l2, l3 = p.unbind(1)
            gap, log_w = self.gap[:, q], sigma * self.kl[q]
            z = torch.addcmul(l1.log(), alpha, gap[0]).exp_()
            z.add_(torch.addcmul(l2.log() + log_w, beta, gap[1]).exp_())
            z.add_(torch.addcmul(l3.log() + log_w, gamma, gap[2]).exp_())
            true, other = z[..., 0], z[..., 1:].amax(-1)
            h, m = _tally(true, other, true > other)
            hits, margins = hits + h, margins + m
        return _key(hits, margins, self.queries)


# ----------------------------------------------------------------- coordinate ascent with exact λ


def _intervals(X: torch.Tensor, num_lo: torch.Tensor, num_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, the open range (lo, hi) of t for which z = t·X + R puts the true class (column 0) first.

    The query is right iff t·dX + dR > 0 for every wrong class c (dX = X_true - X_c, likewise dR):
    t > -dR/dX where dX > 0, t < -dR/dX where dX < 0. With num_lo = -dR and num_hi = max(dR, 0) + tiny,
    division by max(±dX, 0) sends every other case to ±inf or NaN (never right) without masks.
    """
    dX = X[..., :1] - X[..., 1:]
    lo = (num_lo / dX.clamp_(min=0)).amax(-1)
    ndX = X[..., 1:] - X[..., :1]
    hi = (num_hi / ndX.clamp_(min=0)).amin(-1)
    return lo, hi


def _numerators(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """num_lo = R_c - R_true and num_hi = max(R_true - R_c, 0) + tiny for `_intervals`."""
    return R[..., 1:] - R[..., :1], (R[..., :1] - R[..., 1:]).clamp_(min=0).add_(1e-30)


def _best_t(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For open intervals [G, N] of t: per g the most intervals holding one of T_STEPS values of t
    (log-spaced over [e^-LOG_T, e^LOG_T]), the longest run of values holding that many, and log t at its middle."""
    G, N = lo.shape
    step = 2 * LOG_T / T_STEPS  # value j: log t = -LOG_T + (j + 1/2) step
    lo = lo.nan_to_num(nan=float("inf")).clamp(min=math.exp(-LOG_T)).log()
    hi = hi.clamp(max=math.exp(LOG_T)).log()
    first = ((lo + LOG_T) / step - 0.5).clamp(-1, T_STEPS).floor().long() + 1  # the first value above lo
    stop = ((hi + LOG_T) / step - 0.5).clamp(0, T_STEPS).ceil().long()  # the first value at or above hi
    first = torch.where(first < stop, first, T_STEPS)  # empty intervals count nowhere (+1 and -1 at T_STEPS)
    stop = torch.where(first < T_STEPS, stop, T_STEPS)
    delta = torch.zeros(G, T_STEPS + 1, dtype=torch.long, device=lo.device)
    delta.scatter_add_(1, first, torch.ones_like(first)).scatter_add_(1, stop, -torch.ones_like(stop))
    cover = delta[:, :T_STEPS].cumsum(1)
    best = cover.amax(1, keepdim=True)
    index = torch.arange(T_STEPS, device=lo.device).expand(G, -1)
    run_start = torch.where(cover == best, -1, index).cummax(1).values  # the last value below best
    run = torch.where(cover == best, index - run_start, 0)
    end = run.argmax(1, keepdim=True)
    longest = run.gather(1, end)
    middle = end - (longest - 1) / 2
    return best.squeeze(1), longest.squeeze(1), (-LOG_T + (middle.squeeze(1) + 0.5) * step)


class Ascent:
    """Coordinate ascent on a shortlist from one start; `trials` counts grid values (one λ search each)."""

    COARSE = 21  # values of the coarse grid over a parameter's whole range
    FINE = 3  # the fine grid: the current value ± 1..FINE steps of 1/200 of the range

    def __init__(self, sl: Shortlist, start: torch.Tensor, trials: int):
        self.sl, self.budget = sl, trials
        self.p = start.double().cpu()
        self.p[4:] /= self.p[4:].max().clamp(min=1e-30)
        self.key = float(sl.scores(self.p[None])[0])

    def grids(self, i: int) -> list[tuple[float, float, int]]:
        """(first, step, count) of the coarse grid over parameter i's range and of the fine one around its value."""
        lo, hi = RANGES[list(RANGES)[i]]
        coarse, fine = (hi - lo) / (self.COARSE - 1), (hi - lo) / 200
        first = max(lo, float(self.p[i]) - self.FINE * fine)
        count = min(2 * self.FINE + 1, int((hi - first) / fine + 1e-9) + 1)
        return [(lo, coarse, self.COARSE), (first, fine, count)]

    def term(self, k: int, q: slice, exponent: float | None = None, sigma: float | None = None) -> torch.Tensor:
        """Term k+1 without its λ on queries q: exp(θ (a - 1)), times w = exp(σ D) for terms 2 and 3 [n, M];
        θ and σ are the current ones unless given."""
        exponent = float(self.p[1 + k]) if exponent is None else exponent
        sigma = float(self.p[0]) if sigma is None else sigma
        x = exponent * self.sl.gap[k, q]
        return (x + sigma * self.sl.kl[q] if k and sigma else x).exp_()

    def block(self, k: int) -> bool:
        """Improve block k (0-2: the exponent of term k+1 with its λ; 3: σ with λ1). True if the key rose."""
        p, sl = self.p, self.sl
        param, lam = (1 + k, 4 + k) if k < 3 else (0, 4)
        grids = self.grids(param)
        count = sum(n for _, _, n in grids)
        los, his = [], []
        for q in sl.chunks():
            lo, hi = [], []
            if k < 3:  # X_g = term k+1 at θ_g: a geometric sequence over each grid; R the other two terms
                num = _numerators(sum(float(p[4 + j]) * self.term(j, q) for j in range(3) if j != k))
                for first, step, n in grids:
                    X, ratio = self.term(k, q, exponent=first), (step * sl.gap[k, q]).exp()
                    for _ in range(n):
                        interval = _intervals(X, *num)
                        lo.append(interval[0])
                        hi.append(interval[1])
                        X = X * ratio
            else:  # X = term 1; R_g = exp(σ_g D) (λ2 e2 + λ3 e3), geometric in σ_g
                X = self.term(0, q)
                rest = float(p[5]) * self.term(1, q, sigma=0) + float(p[6]) * self.term(2, q, sigma=0)
                for first, step, n in grids:
                    R, ratio = (first * sl.kl[q]).exp_().mul_(rest), (step * sl.kl[q]).exp_()
                    for _ in range(n):
                        interval = _intervals(X, *_numerators(R))
                        lo.append(interval[0])
                        hi.append(interval[1])
                        R = R * ratio
            los.append(torch.stack(lo))
            his.append(torch.stack(hi))
        self.budget -= count
        cover, run, log_t = _best_t(torch.cat(los, 1), torch.cat(his, 1))
        values = torch.cat([first + step * torch.arange(n, dtype=torch.float64) for first, step, n in grids])
        best = int((cover * (T_STEPS + 1) + run).argmax())  # most queries right, then the widest range of λ
        row = p.clone()
        row[param], row[lam] = values[best], math.exp(float(log_t[best]))
        key = float(sl.scores(row[None])[0])
        if key <= self.key:
            return False
        self.p, self.key = row, key
        self.p[4:] /= self.p[4:].max()
        return True

    def run(self) -> torch.Tensor:
        """Sweep the four blocks until a sweep classifies no more queries or the budget is spent."""
        while self.budget > 0:
            hits = math.floor(self.key)
            for k in range(4):
                if self.budget > 0:
                    self.block(k)
            if math.floor(self.key) <= hits:
                break
        return self.p.float()


def coordinate_search(val: Validation, trials: int, seed: int, progress: bool) -> BlendParams:
    """A Sobol screen on the shortlist, coordinate ascent from its best, the finalists scored on every class."""
    sl = Shortlist.build(val)
    lo = torch.tensor([r[0] for r in RANGES.values()])
    hi = torch.tensor([r[1] for r in RANGES.values()])
    screen = max(1, int(trials * SCREEN))
    sobol = torch.quasirandom.SobolEngine(7, scramble=True, seed=seed)
    design = torch.cat([BlendParams().to_tensor()[None], lo + (hi - lo) * sobol.draw(screen)])
    sample = sl.sample(SCREEN_QUERIES)  # successive halving: every candidate on a sample, the best on all
    keys = torch.cat([sample.scores(rows) for rows in design.split(64)]).cpu()
    design = design[keys.argsort(descending=True, stable=True)[: 2 * STARTS]]
    starts = design[sl.scores(design).cpu().argsort(descending=True, stable=True)[:STARTS]]
    finalists = [BlendParams().to_tensor()]
    left = trials - screen
    for i, start in enumerate(tqdm(starts, desc="blend search", disable=not progress, leave=False)):
        share = left // (len(starts) - i)
        ascent = Ascent(sl, start, share)
        finalists.append(ascent.run())
        left -= share - max(0, ascent.budget)
    finalists = torch.stack(finalists)
    best = exact_scores(val, finalists.to(val.device)).argmax()
    return BlendParams.from_tensor(finalists[best].cpu())


# ----------------------------------------------------------------- the published procedure


def tpe_search(val: Validation, trials: int, seed: int, progress: bool) -> BlendParams:
    """`trials` sequential Optuna TPE trials over blend.RANGES (seeded sampler), maximising validation accuracy."""
    try:
        import optuna
    except ImportError as exc:
        raise InputError(
            "the published blend search (tpe) needs optuna, which is not installed: pip install optuna",
            hint="or pip install 'semobridge[dev]'; the default search (coordinate) needs nothing more",
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))

    def objective(trial: "optuna.Trial") -> float:
        row = torch.tensor([trial.suggest_float(name, lo, hi) for name, (lo, hi) in RANGES.items()], device=val.device)
        return sum(int((blend(aff, val.kl, row).argmax(-1) == labels).sum()) for aff, labels in val) / val.size

    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    return BlendParams.from_dict(study.best_params)
