"""A small run of examples/dask_conv.py: the image's tiles match fastconv.conv2d on this
machine, and data-parallel training reaches the accuracy of training on one machine."""
import re

import pytest
from conftest import load_example

pytest.importorskip("dask.array")
pytest.importorskip("distributed")
pytest.importorskip("sklearn")


def test_small_run_of_the_dask_example(capsys):
    assert load_example("dask_conv").main(["--size", "512", "--chunk", "96", "--epochs", "1",
                                 "--batch-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "2 workers" in out
    assert re.search(r"image 512 x 512 x 3 float32 .* chunks of 96 x 96, 36 of them", out)
    assert re.search(r"peak memory of a worker: [\d,]+ MiB", out)
    error = float(re.search(r"largest relative error (\S+)", out).group(1))
    assert error < 1e-5, out
    spread, alone = map(float, re.search(r"test accuracy: ([\d.]+)% data-parallel on the "
                                         r"cluster .*, ([\d.]+)% on one machine", out).groups())
    assert abs(spread - alone) <= 1.0 and alone > 50, out
