"""utils/inference/onnx_model.py's size rule: which adaptive pools, and so
which image sizes, ONNX expresses as Paddle computes them; checked against
paddle2onnx and onnxruntime themselves (support/onnx_pool.py). Each arch's
sizes: tests/contracts/test_archs.py."""
import pytest

from utils.inference.onnx_model import adaptive_windows, onnx_pool_windows, pool_converts

pytest.importorskip("paddle2onnx", reason="ONNX export needs paddle2onnx (requirements-dev.txt)")
pytest.importorskip("onnxruntime", reason="ONNX inference needs onnxruntime (requirements-dev.txt)")

from support.onnx_pool import onnx_computes_pool  # noqa: E402

pytestmark = pytest.mark.float_sensitive   # onnxruntime's kernels against Paddle's

OUTPUTS = (1, 4, 6, 7)   # a global pool, the tiny test net's, AlexNet's and CaffeNet's, VGG16's


@pytest.mark.parametrize("m", OUTPUTS)
def test_the_rule_is_what_onnx_computes(m):
    verdicts = {n: pool_converts(n, m) for n in range(1, 31)}
    assert verdicts == {n: onnx_computes_pool(n, m) for n in verdicts}
    assert any(verdicts.values()) and (m == 1 or not all(verdicts.values()))


def test_windows_of_both_sides():
    assert adaptive_windows(13, 6) == onnx_pool_windows(13, 6)        # 448 px AlexNet: exact
    assert adaptive_windows(8, 6) == [(0, 2), (1, 3), (2, 4), (4, 6), (5, 7), (6, 8)]
    assert onnx_pool_windows(8, 6) == [(0, 3), (1, 4), (2, 5), (3, 6), (4, 7), (5, 8)]
    # a 1x1 map to 6x6: the same windows, but stride 0, which onnxruntime refuses
    assert adaptive_windows(1, 6) == onnx_pool_windows(1, 6) == [(0, 1)] * 6
    assert not pool_converts(1, 6) and pool_converts(12, 6) and pool_converts(7, 1)
