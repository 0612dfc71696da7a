"""Autotune: ``auto`` times the candidate engines on a problem's first call, keeps the
winner in the process and in the tuning cache, and uses it from then on."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import _tune
from fastconv.engines import get_engine, reference
from fastconv._validate import geometry

TOL = {np.float32: dict(rtol=2e-4, atol=2e-4), np.float64: dict(rtol=1e-10, atol=1e-10)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty tuning cache in tmp_path, nothing remembered in the process, autotune on."""
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_tune, "_loaded", None)
    monkeypatch.setattr(_tune, "_session", {})
    with fastconv.autotune(True):
        yield tmp_path / _tune.FILE_NAME
    monkeypatch.setattr(_tune, "_loaded", None)


@pytest.fixture
def timings(monkeypatch):
    """Each call of _tune.time_engines, as the tuple of engines it timed."""
    seen = []
    real = _tune.time_engines

    def counted(calls, rounds, prefer=None):
        seen.append(tuple(calls))
        return real(calls, 1, prefer)  # one round: these tests count, they do not time

    monkeypatch.setattr(_tune, "time_engines", counted)
    return seen


def _arrays(x_shape=(2, 4, 9, 9), w_shape=(6, 4, 3, 3), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(w_shape).astype(dtype))


def test_off_by_default_and_then_never_times(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    out = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_autotune())"],
                         capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "FASTCONV_AUTOTUNE"})
    assert out.stdout.strip() == "False"
    with fastconv.autotune(False):
        monkeypatch.setattr(_tune, "time_engines", lambda *a: pytest.fail("timed while off"))
        x, w = _arrays()
        fastconv.conv2d(x, w, 1, 1)
        fastconv.conv2d_backward(fastconv.conv2d(x, w, 1, 1), x, w, 1, 1)
    assert not (tmp_path / _tune.FILE_NAME).exists()


def test_each_new_problem_is_timed_once_then_reused(cache, timings):
    x, w = _arrays()
    y = fastconv.conv2d(x, w, 1, 1)
    assert len(timings) == 1
    for _ in range(3):
        np.testing.assert_allclose(fastconv.conv2d(x, w, 1, 1), y, **TOL[np.float32])
    assert len(timings) == 1
    # the result of the tuned call is the reference's
    np.testing.assert_allclose(y, reference.forward(x, w, None, geometry(
        x.shape, w.shape, 1, 1, 1, 1, 0)), **TOL[np.float32])
    # another shape, another pass: timed once each
    fastconv.conv2d(x[:1], w, 1, 1)
    gy = np.ones_like(y)
    g1 = fastconv.conv2d_backward(gy, x, w, 1, 1)
    g2 = fastconv.conv2d_backward(gy, x, w, 1, 1)
    assert len(timings) == 4  # forward twice (two shapes), grad_input, grad_weight
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)  # the same winner: the same bits
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 4 and set(entries.values()) <= set(_tune.ENGINES)


def test_candidates_follow_dtype_precision_and_shape(cache, timings):
    x, w = _arrays((2, 64, 12, 12), (64, 64, 3, 3))
    fastconv.conv2d(x, w, 1, 1)
    fastconv.conv2d_backward(fastconv.conv2d(x, w, 1, 1), x, w, 1, 1, wrt="w")
    with fastconv.float32_precision("highest"):
        fastconv.conv2d(x, w, 1, 1)
    fastconv.conv2d(x.astype(np.float64), w.astype(np.float64), 1, 1)
    fastconv.conv2d(x, w, 2, 1)  # strided: not Winograd's
    assert timings == [("direct", "im2col", "winograd"), ("direct", "im2col"),
                       ("direct", "im2col"), ("direct", "im2col"), ("direct", "im2col")]


def test_keyed_by_threads_and_precision(cache, timings):
    x, w = _arrays()
    with fastconv.num_threads(2):
        fastconv.conv2d(x, w, 1, 1)
    with fastconv.num_threads(1):
        fastconv.conv2d(x, w, 1, 1)
        fastconv.conv2d(x, w, 1, 1)
        with fastconv.float32_precision("highest"):
            fastconv.conv2d(x, w, 1, 1)
        fastconv.conv2d(x, w, 1, 1, layout="NCHW")
    assert len(timings) == 3
    keys = json.loads(cache.read_text())["entries"]
    assert sorted((k.split("|")[0], k.split("|")[-1]) for k in keys) == [
        ("1", "high"), ("1", "highest"), ("2", "high")]


def test_the_winner_is_what_auto_runs(cache, monkeypatch):
    """A stored winner, even against the cost model, is the engine later calls run."""
    x, w = _arrays()
    g = geometry(x.shape, w.shape, 1, 1, 1, 1, 0)
    model = fastconv.choose_backend(g, np.float32, fastconv.get_num_threads())["forward"]
    other = "im2col" if model != "im2col" else "direct"
    monkeypatch.setattr(_tune, "time_engines",
                        lambda calls, rounds, prefer=None: (other, calls[other]()))
    fastconv.conv2d(x, w, 1, 1)
    called = []
    engine = get_engine(other)
    real = engine.forward
    monkeypatch.setattr(engine, "forward",
                        lambda *a, **k: called.append(other) or real(*a, **k))
    fastconv.conv2d(x, w, 1, 1)
    assert called == [other]
    from fastconv._api import auto_engine
    assert auto_engine(g, np.float32, "forward") == other


def test_a_nan_keeps_no_winner_and_gives_the_exact_answer(cache, timings):
    x, w = _arrays((1, 64, 10, 10), (64, 64, 3, 3))
    x[0, 3, 4, 4] = np.nan
    y = fastconv.conv2d(x, w, 1, 1)
    g = geometry(x.shape, w.shape, 1, 1, 1, 1, 0)
    want = reference.forward(x, w, None, g)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    assert not cache.exists() and not _tune._session and not _tune._loaded
    fastconv.conv2d(x, w, 1, 1)
    assert len(timings) == 2  # timed again, as no winner was kept


def test_survives_a_process_restart(tmp_path):
    env = {**os.environ, "FASTCONV_CACHE_DIR": str(tmp_path), "FASTCONV_AUTOTUNE": "1"}
    script = (
        "import numpy as np, fastconv\n"
        "from fastconv import _tune\n"
        "n = []\n"
        "real = _tune.time_engines\n"
        "_tune.time_engines = lambda c, r, prefer=None: n.append(1) or real(c, 1, prefer)\n"
        "x = np.ones((2, 3, 8, 8), np.float32); w = np.ones((4, 3, 3, 3), np.float32)\n"
        "fastconv.conv2d(x, w, 1, 1)\n"
        "print(fastconv.get_autotune(), len(n))\n")
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs == [["True", "1"], ["True", "0"]]


def test_environment_variable_is_checked():
    env = {**os.environ, "FASTCONV_AUTOTUNE": "maybe"}
    r = subprocess.run([sys.executable, "-c", "import fastconv"], env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0 and "FASTCONV_AUTOTUNE must be one of" in r.stderr


@pytest.mark.parametrize("bad", ["yes", 2, None, 1.0])
def test_bad_flag(bad):
    with pytest.raises(TypeError, match="enabled must be True or False"):
        fastconv.set_autotune(bad)
    assert fastconv.get_autotune() in (True, False)


def test_unwritable_cache_warns_and_keeps_the_winners(tmp_path, monkeypatch, timings):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(_tune, "_loaded", None)
    monkeypatch.setattr(_tune, "_session", {})
    x, w = _arrays()
    with fastconv.autotune():
        with pytest.warns(UserWarning, match="could not write the tuning cache"):
            fastconv.conv2d(x, w, 1, 1)
        fastconv.conv2d(x, w, 1, 1)
    assert len(timings) == 1


@pytest.mark.parametrize("damage", ["corrupt", "unreadable"])
def test_corrupt_or_unreadable_cache_is_ignored_with_a_warning(cache, timings, damage):
    if damage == "corrupt":
        cache.write_bytes(b"\xff\xfe{not json")
    else:
        cache.mkdir()  # reading a directory fails as root too
    x, w = _arrays()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = fastconv.conv2d(x, w, 1, 1)
    messages = [str(c.message) for c in caught]
    assert any("corrupt or unreadable tuning cache" in m for m in messages), messages
    assert y.shape == (2, 6, 9, 9) and len(timings) == 1
    if damage == "unreadable":  # nor can it be replaced: no temporary file is left
        assert any("could not write" in m for m in messages)
        assert [p.name for p in cache.parent.iterdir()] == [cache.name]


def test_tune_uses_the_same_candidates(cache, monkeypatch):
    seen = []
    real = _tune.time_engines
    monkeypatch.setattr(_tune, "time_engines",
                        lambda calls, rounds, prefer=None: seen.append(tuple(calls))
                        or real(calls, 1, prefer))
    with fastconv.autotune(False):
        winners = fastconv.tune((2, 64, 10, 10), (64, 64, 3, 3), 1, 1, repeat=1)
    assert seen == [("direct", "im2col", "winograd"), ("direct", "im2col", "winograd"),
                    ("direct", "im2col")]
    assert set(winners.values()) <= set(_tune.ENGINES)
    assert json.loads(cache.read_text())["format"] == _tune.FORMAT == 2


def test_cache_dir_comes_from_platformdirs(monkeypatch, tmp_path):
    import platformdirs
    monkeypatch.delenv("FASTCONV_CACHE_DIR", raising=False)
    assert _tune.cache_dir() == __import__("pathlib").Path(
        platformdirs.user_cache_dir("fastconv", appauthor=False))
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    assert _tune.cache_dir() == tmp_path


def test_the_cost_models_engine_keeps_a_tie(monkeypatch):
    """Within MARGIN of the fastest, the preferred (cost model's) engine wins; beyond
    it, the fastest does. A fake clock makes each engine's calls take fixed times."""
    clock = [0.0]
    monkeypatch.setattr(_tune.time, "perf_counter", lambda: clock[0])

    def engine(seconds):
        def call():
            clock[0] += seconds
            return np.zeros(1)
        return call

    tie = {"direct": engine(1.04), "im2col": engine(1.00)}
    assert _tune.time_engines(tie, 4, prefer="direct")[0] == "direct"
    assert _tune.time_engines(tie, 4)[0] == "im2col"
    clear = {"direct": engine(1.10), "im2col": engine(1.00)}
    assert _tune.time_engines(clear, 4, prefer="direct")[0] == "im2col"


def test_short_calls_are_timed_more_often(monkeypatch):
    """At least ``rounds`` timed calls each; calls shorter than TIMED_SECONDS / rounds
    get more, up to MAX_ROUNDS, and each engine its own count (fake clock)."""
    clock = [0.0]
    monkeypatch.setattr(_tune.time, "perf_counter", lambda: clock[0])
    made = {"direct": 0, "im2col": 0}

    def engine(name, seconds):
        def call():
            made[name] += 1
            clock[0] += seconds
            return np.zeros(1)
        return call

    slow, short = 1.0, _tune.TIMED_SECONDS / 8  # (an exact quotient)
    _tune.time_engines({"direct": engine("direct", slow), "im2col": engine("im2col", short)}, 4)
    assert made == {"direct": 1 + 4, "im2col": 1 + 8}
    made.update(direct=0, im2col=0)
    _tune.time_engines({"direct": engine("direct", 1e-7), "im2col": engine("im2col", slow)}, 4)
    assert made == {"direct": 1 + _tune.MAX_ROUNDS, "im2col": 1 + 4}
