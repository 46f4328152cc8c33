"""The blend search: exact λ line searches against brute force, scores against the float64 reference,
the shortlist against every class, determinism, the published TPE behind a flag, bounded memory."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from semobridge import search as S
from semobridge.blend import RANGES, BlendParams
from semobridge.errors import InputError
from semobridge.fit import build_head, fit_features
from tests import reference as R
from tests.helpers import features_info, synthetic_features
from tests.test_method import features_of, info_of

REPO = Path(__file__).resolve().parents[1]


def random_params(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor([r[0] for r in RANGES.values()])
    hi = torch.tensor([r[1] for r in RANGES.values()])
    return lo + (hi - lo) * torch.rand(n, 7, generator=g)


def head_and_val(classes: int, seed: int = 0, val: int = 4):
    feats = synthetic_features(classes=classes, val=val, seed=seed)
    return build_head(feats, features_info(feats)), feats.val_image, feats.val_label


# ----------------------------------------------------------------- exact scores against the reference


def test_exact_scores_count_what_the_float64_reference_predicts():
    syn = R.synthetic(seed=0, C=5, n_query=40)
    head = fit_features(features_of(syn), info_of(syn), params=BlendParams())
    val = S.Validation(head, torch.from_numpy(syn.q).float(), torch.from_numpy(syn.q_labels))
    params = random_params(12, seed=1)
    keys = S.exact_scores(val, params)
    I = R.image_prototypes(syn.F, syn.labels, syn.C)
    text = R.text_side(syn.eos, syn.prompt_class, syn.W, syn.C)
    Wp = R.pinv_truncated(syn.W)
    P = R.bridged_prototypes(syn.F, syn.labels, syn.C, Wp, syn.W, text.L)
    D = R.class_kl(I, text.T)
    counts = []
    for p in params.double().numpy():
        z = R.logits(syn.q, text.T, P, I, Wp, syn.W, text.L, D, *p)
        counts.append(int((z.argmax(-1) == syn.q_labels).sum()))
    assert keys.floor().long().tolist() == counts
    assert len(set(counts)) > 3  # the parameters matter on this data
    margins = keys - keys.floor()
    assert ((margins >= 0) & (margins < 1)).all()


def test_exact_scores_are_the_same_kept_or_recomputed_in_chunks(monkeypatch):
    head, images, labels = head_and_val(12, seed=2, val=9)
    params = random_params(20, seed=3)
    kept = S.exact_scores(S.Validation(head, images, labels, keep=True), params)
    monkeypatch.setattr(S, "FULL_CHUNK_ELEMENTS", 3 * 12 * 7)  # 7 queries a chunk: several chunks, one partial
    val = S.Validation(head, images, labels, keep=False)
    assert len(list(val)) == -(-len(labels) // 7)
    chunked = S.exact_scores(val, params)
    assert chunked.floor().tolist() == kept.floor().tolist()
    torch.testing.assert_close(chunked, kept, rtol=0, atol=1e-6)  # matrix products of other sizes round differently


# ----------------------------------------------------------------- the λ line search against brute force


def brute_force_cover(X: torch.Tensor, R_: torch.Tensor) -> torch.Tensor:
    """Correct queries of z = t·X + R at every t of the search's log grid [G, T_STEPS] (float64)."""
    step = 2 * S.LOG_T / S.T_STEPS
    t = torch.exp(-S.LOG_T + (torch.arange(S.T_STEPS, dtype=torch.float64) + 0.5) * step)
    out = []
    for Xg, Rg in zip(X.double(), R_.double()):
        z = t[:, None, None] * Xg + Rg  # [T, N, M]
        out.append((z[..., 0] > z[..., 1:].amax(-1)).sum(-1))
    return torch.stack(out)


@pytest.mark.parametrize("seed", range(4))
def test_line_search_finds_the_best_lambda_of_its_grid(seed):
    g = torch.Generator().manual_seed(seed)
    G, N, M = 3, 60, 7
    X = torch.exp(3 * torch.randn(G, N, M, generator=g, dtype=torch.float64))
    R_ = torch.exp(3 * torch.randn(G, N, M, generator=g, dtype=torch.float64))
    X[0, :5] = 1.0  # dX = 0: decided by R alone
    R_[1, :5, 0] = R_[1, :5, 1]  # ties in R
    cover, _, log_t = S._best_t(*S._intervals(X.clone(), *S._numerators(R_)))
    brute = brute_force_cover(X, R_)
    assert cover.tolist() == brute.amax(1).tolist()
    assert (cover > 0).all() and (cover < N).all()  # neither trivial nor hopeless
    for g_, lt in enumerate(log_t):  # the chosen t classifies exactly `cover` queries
        z = torch.exp(lt) * X[g_] + R_[g_]
        assert int((z[:, 0] > z[:, 1:].amax(-1)).sum()) == int(cover[g_])


# ----------------------------------------------------------------- the shortlist


def test_shortlist_of_every_class_scores_like_the_full_blend():
    head, images, labels = head_and_val(8, seed=4)
    val = S.Validation(head, images, labels)
    sl = S.Shortlist.build(val)
    assert sl.gap.shape == (3, len(labels), 8)  # 4 x 16 >= 7 wrong classes: all of them
    params = random_params(30, seed=5)
    full = S.exact_scores(val, params)
    short = sl.scores(params)
    assert short.floor().tolist() == full.floor().tolist()
    torch.testing.assert_close(short, full, rtol=0, atol=1e-4)


def test_shortlist_of_many_classes_keeps_the_winners():
    head, images, labels = head_and_val(120, seed=6, val=2)
    val = S.Validation(head, images, labels)
    sl = S.Shortlist.build(val, per_affinity=8)
    assert sl.gap.shape == (3, len(labels), 33)
    params = random_params(40, seed=7)
    full, short = S.exact_scores(val, params).floor(), sl.scores(params).floor()
    assert (short >= full).all()  # fewer rivals: never fewer correct
    assert (short - full).max() <= 0.02 * len(labels)


# ----------------------------------------------------------------- the search


def test_coordinate_search_beats_the_defaults_and_the_sobol_screen():
    head, images, labels = head_and_val(40, seed=8, val=6)
    val = S.Validation(head, images, labels)
    found = S.search_blend(head, images, labels, trials=512, seed=0, progress=False)
    key = float(S.exact_scores(val, found.to_tensor()[None])[0])
    default = float(S.exact_scores(val, BlendParams().to_tensor()[None])[0])
    screen = S.exact_scores(val, random_params(512, seed=9)).max()
    assert key > default and int(key) > int(default)
    assert key >= float(screen)  # better than 512 random candidates scored exactly


def test_search_is_deterministic():
    head, images, labels = head_and_val(30, seed=10)
    a = S.search_blend(head, images, labels, trials=256, seed=3, progress=False)
    b = S.search_blend(head, images, labels, trials=256, seed=3, progress=False)
    assert a == b


def test_unknown_search_and_no_trials_are_input_errors():
    head, images, labels = head_and_val(5)
    with pytest.raises(InputError, match="unknown blend search 'grid'"):
        S.search_blend(head, images, labels, method="grid")
    for trials in (0, -3):
        with pytest.raises(InputError, match="trials must be a positive integer"):
            S.search_blend(head, images, labels, trials=trials)


def test_tpe_is_the_published_optuna_study():
    optuna = pytest.importorskip("optuna")
    head, images, labels = head_and_val(6, seed=11)
    found = S.search_blend(head, images, labels, trials=15, seed=2, progress=False, method="tpe")
    assert S.search_blend(head, images, labels, trials=15, seed=2, progress=False, method="tpe") == found
    # the same study by hand: TPESampler(seed), suggest_float over blend.RANGES in order, accuracy as the value
    val = S.Validation(head, images, labels)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=2))
    study.optimize(lambda t: float(S.exact_scores(val, torch.tensor([[t.suggest_float(n, *r) for n, r in RANGES.items()]]))[0] // 1)
                   / len(labels), n_trials=15)
    assert found == BlendParams.from_dict(study.best_params)


def test_tpe_without_optuna_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    head, images, labels = head_and_val(5)
    with pytest.raises(InputError, match="pip install optuna"):
        S.search_blend(head, images, labels, method="tpe", progress=False)


def test_cli_search_option_runs_either_search(tmp_path):
    from click.testing import CliRunner

    from semobridge.cli import main
    from semobridge.model import SeMoBridge

    pytest.importorskip("optuna")
    feats = synthetic_features(classes=6, seed=12)
    feats.save(tmp_path / "f.npz")
    head = build_head(feats, features_info(feats))
    for method in S.SEARCH_METHODS:
        model = tmp_path / f"{method}.safetensors"
        result = CliRunner().invoke(main, ["fit-features", str(tmp_path / "f.npz"), "-o", str(model), "--search", method,
                                           "--search-trials", "40", "--seed", "2"])
        assert result.exit_code == 0, result.output
        want = S.search_blend(head, feats.val_image, feats.val_label, trials=40, seed=2, progress=False, method=method)
        assert SeMoBridge.load(model).info.params == pytest.approx(want.to_dict())
    result = CliRunner().invoke(main, ["fit-features", str(tmp_path / "f.npz"), "-o", str(tmp_path / "x.safetensors"), "--search", "grid"])
    assert result.exit_code != 0 and "'grid' is not one of 'coordinate', 'tpe'" in result.output


# ----------------------------------------------------------------- memory


PEAK = textwrap.dedent("""
    import json, sys, torch
    from benchmarks.common import synthetic_features, info_for
    from semobridge.fit import build_head
    from semobridge.search import search_blend
    from benchmarks.common import peak_rss_mb, reset_peak_rss
    torch.set_num_threads(1)
    f = synthetic_features(1000, 1, 1, 512, 512, seed=0)
    head = build_head(f, info_for(f, {"name": "x", "pretrained": "none", "weights_hash": "0"}))
    reset_peak_rss()
    before = peak_rss_mb()
    search_blend(head, f.val_image, f.val_label, trials=int(sys.argv[1]), progress=False)
    print(json.dumps({"before": before, "peak": peak_rss_mb()}))
""")


def test_search_memory_is_bounded_whatever_the_budget():
    """C = 1,000: peak RSS well under 2 GB, and the same for 256 and 8,192 candidates."""
    peaks = {}
    for trials in (256, 8192):
        out = subprocess.run([sys.executable, "-c", PEAK, str(trials)], cwd=REPO, capture_output=True, text=True, check=True)
        peaks[trials] = json.loads(out.stdout.strip().splitlines()[-1])
    for p in peaks.values():
        assert p["peak"] < 2048
        assert p["peak"] - p["before"] < 200  # the search's own memory
    assert abs((peaks[8192]["peak"] - peaks[8192]["before"]) - (peaks[256]["peak"] - peaks[256]["before"])) < 50
