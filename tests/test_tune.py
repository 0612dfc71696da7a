"""The dispatcher and the tuning cache."""
import json
import warnings

import numpy as np
import pytest

import fastconv
from fastconv import _tune
from fastconv._validate import geometry


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_tune, "_loaded", None)
    monkeypatch.setattr(_tune, "_session", {})
    yield tmp_path / _tune.FILE_NAME
    monkeypatch.setattr(_tune, "_loaded", None)


def _g(*shape_args, **kw):
    return geometry(*shape_args, kw.get("stride", 1), kw.get("pad", 0), 1, kw.get("groups", 1), 0)


def test_choose_backend_is_deterministic_and_total():
    for args in [((8, 32, 112, 112), (32, 1, 3, 3)), ((8, 64, 56, 56), (64, 64, 3, 3)),
                 ((1, 3, 9, 9), (4, 3, 1, 1))]:
        groups = 32 if args[1][1] == 1 and args[0][1] == 32 else 1
        g = _g(*args, groups=groups)
        for dtype in (np.float32, np.float64):
            for threads in (1, 2, 16):
                first = fastconv.choose_backend(g, dtype, threads)
                assert first == fastconv.choose_backend(g, dtype, threads)
                assert set(first) == {"forward", "grad_input", "grad_weight"}
                assert set(first.values()) <= {"direct", "im2col", "winograd"}


def test_choose_backend_answers_are_kept_but_follow_the_settings():
    # The answers are cached (_dispatch._rules): a caller's change to one must not reach
    # the next, and the float32 precision set later must still count.
    g = _g((8, 64, 28, 28), (64, 64, 3, 3), pad=1)
    m = fastconv.Machine("avx512", 2, 2 << 20)
    first = fastconv.choose_backend(g, np.float32, 2, machine=m)
    assert first["forward"] == "winograd"
    first["forward"] = "reference"
    assert fastconv.choose_backend(g, np.float32, 2, machine=m)["forward"] == "winograd"
    with fastconv.float32_precision("highest"):
        assert fastconv.choose_backend(g, np.float32, 2, machine=m)["forward"] == "direct"
    assert fastconv.choose_backend(g, np.float32, 2, machine=m)["forward"] == "winograd"
    # a bad precision is refused for every layer, a 1x1 one included
    pointwise = _g((8, 64, 28, 28), (64, 64, 1, 1))
    with pytest.raises(ValueError, match="precision must be None, 'highest' or 'high', "
                                         "got 'medium'"):
        fastconv.choose_backend(pointwise, np.float32, 2, precision="medium")


def test_tune_stores_winners_that_auto_uses(cache, monkeypatch):
    winners = fastconv.tune((2, 3, 12, 12), (4, 3, 3, 3), 1, 1, repeat=1)
    assert set(winners) == {"forward", "grad_input", "grad_weight"}
    data = json.loads(cache.read_text())
    assert data["fastconv"] == fastconv.__version__ and len(data["entries"]) == 3
    # auto must now follow the cache, even against the cost model: rewrite the entries
    # to the engine the model would not pick and check which engine runs.
    g = _g((2, 3, 12, 12), (4, 3, 3, 3), pad=1)
    model = fastconv.choose_backend(g, np.float32, fastconv.get_num_threads())["forward"]
    other = {"direct": "im2col", "im2col": "direct"}[model]
    data["entries"] = {k: other for k in data["entries"]}
    cache.write_text(json.dumps(data))
    monkeypatch.setattr(_tune, "_loaded", None)
    called = []
    from fastconv.engines import get_engine
    engine = get_engine(other)

    def spy(*args):
        called.append(other)
        return np.zeros((2, 4, 12, 12), np.float32)

    monkeypatch.setattr(engine, "forward", spy)
    fastconv.conv2d(np.ones((2, 3, 12, 12), np.float32), np.ones((4, 3, 3, 3), np.float32), 1, 1)
    assert called == [other]


def test_corrupt_cache_is_ignored_with_a_warning(cache):
    cache.write_text("{not json")
    with pytest.warns(UserWarning, match="corrupt or unreadable tuning cache"):
        y = fastconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)))
    assert y.shape == (1, 1, 3, 3)
    # tune() replaces the corrupt file with a valid one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastconv.tune((1, 1, 4, 4), (1, 1, 2, 2), repeat=1, passes=("forward",))
    assert json.loads(cache.read_text())["entries"]


def test_stale_cache_is_ignored_with_a_warning(cache, monkeypatch):
    fastconv.tune((1, 2, 6, 6), (2, 2, 3, 3), repeat=1, passes=("forward",))
    data = json.loads(cache.read_text())
    data["fastconv"] = "0.0.0-old"
    cache.write_text(json.dumps(data))
    monkeypatch.setattr(_tune, "_loaded", None)
    with pytest.warns(UserWarning, match="ignoring tuning cache"):
        fastconv.conv2d(np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3)))


def test_clear_cache(cache):
    fastconv.tune((1, 1, 5, 5), (1, 1, 3, 3), repeat=1, passes=("forward",))
    assert cache.exists()
    fastconv.clear_tuning_cache()
    assert not cache.exists()


# The cost model's answers on the suite, as measured there (fastconv/_dispatch.py
# gives the timings behind each): a change of rule shows up here.
EXPECTED_CHOICES = {
    # layer: (forward, grad_input, grad_weight)
    "cs231n": ("im2col", "im2col", "im2col"),
    "alexnet_conv1": ("direct", "im2col", "direct"),
    "resnet_stem": ("direct", "im2col", "direct"),
    "vgg_conv1_2": ("direct", "direct", "direct"),
    "resnet_c3_3x3s2": ("direct", "direct", "direct"),
    "resnet_c4_3x3": ("direct", "direct", "direct"),
    "resnet_c5_3x3": ("im2col", "direct", "im2col"),
    "mobilenet_dw": ("direct", "direct", "direct"),
    "lenet_c5": ("im2col", "direct", "im2col"),
    "batch1_c4": ("direct", "direct", "im2col"),
    "lenet_c1": ("direct", "direct", "direct"),
    "resnet_c2_1x1": ("direct", "direct", "direct"),
}
# Where a machine without AVX-512 is answered otherwise (fastconv/_dispatch.py, revised
# 2026-12-03 on Zen 3 and 2026-12-07 on Zen 4 with the AVX2 kernels): cs231n's small
# images keep the direct engine's forward (its strided grad_input into 3 channels and
# its short-reduction grad_weight go to im2col on every ISA).
EXPECTED_WITHOUT_AVX512 = {
    "cs231n": ("direct", "im2col", "im2col"),
}
# Two machine descriptions the choices are pinned for: a 2-core Zen 3 VM (AVX2, 512 KiB
# of L2 per core) and a 2-core Xeon (AVX-512, 2 MiB of L2 per core), and a many-core
# AVX2 server that the rules answer as the 2-core one.
MACHINES = {
    "zen3_avx2": fastconv.Machine("avx2", 2, 512 << 10),
    "xeon_avx512": fastconv.Machine("avx512", 2, 2 << 20),
    "avx2_64_cores": fastconv.Machine("avx2", 64, 1 << 20),
}


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_short_reduction_grad_weight_on_im2col(machine):
    """RGB 3x3 layers with 16 filters or more (Cg*R*S = 27) take grad_weight to im2col
    on every ISA (VGG-16's first layer, MobileNetV2's stem); fewer filters keep direct."""
    m = MACHINES[machine]
    for x_shape, w_shape, stride, expected in (((8, 3, 224, 224), (64, 3, 3, 3), 1, "im2col"),
                                               ((8, 3, 224, 224), (32, 3, 3, 3), 2, "im2col"),
                                               ((8, 3, 224, 224), (8, 3, 3, 3), 1, "direct")):
        g = geometry(x_shape, w_shape, stride, 1, 1, 1, 0)
        choice = fastconv.choose_backend(g, np.float32, 2, precision="highest", machine=m)
        assert choice["grad_weight"] == expected, (x_shape, w_shape)
        assert choice["forward"] == "direct", (x_shape, w_shape)  # maps over 1024 positions


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_short_reduction_forward_on_small_maps(machine):
    """With AVX-512, their forward onto maps of at most 1024 positions goes to im2col
    (cs231n's 16x16, 32x32 from 64x64 at stride 2); with AVX2 it stays direct."""
    m = MACHINES[machine]
    for x_shape, w_shape, stride in (((100, 3, 31, 31), (25, 3, 3, 3), 2),
                                     ((32, 3, 64, 64), (32, 3, 3, 3), 2),
                                     ((100, 3, 31, 31), (25, 3, 3, 3), 1)):
        g = geometry(x_shape, w_shape, stride, 1, 1, 1, 0)
        choice = fastconv.choose_backend(g, np.float32, 2, precision="highest", machine=m)
        assert choice["forward"] == ("im2col" if m.simd == "avx512" else "direct"), x_shape
    # fewer filters keep direct (lenet_c1)
    g = geometry((64, 1, 32, 32), (6, 1, 5, 5), 1, 0, 1, 1, 0)
    assert fastconv.choose_backend(g, np.float32, 2, machine=m)["forward"] == "direct"


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_grad_weight_of_many_filters_on_im2col(machine):
    """NCHW grad_weight with 512 filters or more per group goes to im2col (VGG-16's
    512-channel layers); 256 filters keep direct, and so does NHWC."""
    m = MACHINES[machine]

    def choice(x_shape, w_shape, layout=0):
        g = geometry(x_shape, w_shape, 1, 1, 1, 1, layout)
        return fastconv.choose_backend(g, np.float32, 2, machine=m)["grad_weight"]

    assert choice((8, 512, 28, 28), (512, 512, 3, 3)) == "im2col"
    assert choice((8, 256, 28, 28), (512, 256, 3, 3)) == "im2col"
    assert choice((8, 256, 56, 56), (256, 256, 3, 3)) == "direct"
    assert choice((8, 28, 28, 512), (3, 3, 512, 512), layout=1) == "direct"


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_strided_small_maps_on_im2col(machine):
    """Strided NCHW layers onto 7x7 maps with 256 channels or more, on two images or
    more, take forward and grad_input to im2col (ResNet-18's 256 -> 512 3x3/2 from
    14x14); one image, stride 1, fewer channels and larger maps keep direct."""
    m = MACHINES[machine]

    def choice(x_shape, w_shape, stride, layout=0):
        g = geometry(x_shape, w_shape, stride, 1, 1, 1, layout)
        c = fastconv.choose_backend(g, np.float32, 2, precision="highest", machine=m)
        return c["forward"], c["grad_input"]

    assert choice((8, 256, 14, 14), (512, 256, 3, 3), 2) == ("im2col", "im2col")
    assert choice((2, 256, 13, 13), (512, 256, 3, 3), 2) == ("im2col", "im2col")
    assert choice((1, 256, 14, 14), (512, 256, 3, 3), 2) == ("direct", "direct")
    assert choice((8, 128, 14, 14), (256, 128, 3, 3), 2) == ("direct", "direct")
    assert choice((8, 256, 7, 7), (256, 256, 3, 3), 1) == ("direct", "direct")
    assert choice((8, 128, 28, 28), (256, 128, 3, 3), 2) == ("direct", "direct")


@pytest.mark.parametrize("machine", sorted(MACHINES))
@pytest.mark.parametrize("name", sorted(EXPECTED_CHOICES))
def test_choose_backend_on_the_suite(name, machine):
    from fastconv.suite import LAYERS
    layer = LAYERS[name]
    g = geometry(layer.x_shape, layer.w_shape, layer.stride, layer.pad, 1, layer.groups, 0)
    m = MACHINES[machine]
    choice = fastconv.choose_backend(g, np.float32, 2, precision="highest", machine=m)
    expected = EXPECTED_CHOICES[name]
    if m.simd != "avx512":
        expected = EXPECTED_WITHOUT_AVX512.get(name, expected)
    assert tuple(choice[p] for p in ("forward", "grad_input", "grad_weight")) == expected
    # simd= says the same as a machine of that variant; the machine's wins over it
    assert choice == fastconv.choose_backend(g, np.float32, 2, simd=m.simd,
                                             precision="highest")
    other = "avx2" if m.simd == "avx512" else "avx512"
    assert choice == fastconv.choose_backend(g, np.float32, 2, simd=other,
                                             precision="highest", machine=m)


# The decoder suite's transposed passes (forward, grad_input, grad_weight), each run by
# a convolution pass (forward by its grad_input, grad_input by its forward): pinned for
# the AVX2 and the AVX-512 machine (fastconv/_dispatch.py, revised 2026-12-03 and 2026-12-06).
EXPECTED_DECODER = {
    "avx2": {
        "dcgan_project": ("direct", "im2col", "im2col"),  # whole window: one product
        "dcgan_up8": ("im2col", "im2col", "im2col"),      # 4x4 maps, 1024 positions
        "dcgan_up16": ("direct", "direct", "direct"),
        "dcgan_up32": ("direct", "direct", "direct"),
        "dcgan_up64": ("im2col", "direct", "im2col"),     # into 3 channels, batch 64
        "unet_up": ("im2col", "direct", "im2col"),        # 2x2/2: windows tile the input
        "fcn_up16": ("direct", "im2col", "im2col"),       # stride 16; 1024 positions
    },
    "avx512": {  # the tiny-map, tiling and large-stride rules too (2026-12-06, Zen 4),
        # and the few-channel grad_weight rule (2026-12-08, Emerald Rapids)
        "dcgan_project": ("direct", "im2col", "im2col"),
        "dcgan_up8": ("im2col", "im2col", "im2col"),
        "dcgan_up16": ("direct", "direct", "direct"),
        "dcgan_up32": ("direct", "direct", "direct"),
        "dcgan_up64": ("im2col", "direct", "im2col"),
        "unet_up": ("im2col", "direct", "im2col"),
        "fcn_up16": ("direct", "im2col", "im2col"),
    },
}


@pytest.mark.parametrize("machine", ["zen3_avx2", "xeon_avx512"])
def test_stride_phases_forward_only_without_avx512(machine):
    """Under precision "high", DCGAN's 4x4/2 layers send grad_input to Winograd through
    stride phases on every ISA, and forward only without AVX-512 (2026-12-08)."""
    m = MACHINES[machine]
    for x_shape, w_shape in (((64, 128, 16, 16), (256, 128, 4, 4)),
                             ((64, 64, 32, 32), (128, 64, 4, 4))):
        g = geometry(x_shape, w_shape, 2, 1, 1, 1, 0)
        c = fastconv.choose_backend(g, np.float32, 2, precision="high", machine=m)
        assert c["grad_input"] == "winograd", x_shape
        assert c["forward"] == ("direct" if m.simd == "avx512" else "winograd"), x_shape
    # stride 1 keeps Winograd's forward with AVX-512 (resnet_c4_3x3)
    g = geometry((8, 256, 14, 14), (256, 256, 3, 3), 1, 1, 1, 1, 0)
    assert fastconv.choose_backend(g, np.float32, 2, precision="high",
                                   machine=m)["forward"] == "winograd"


@pytest.mark.parametrize("machine", ["zen3_avx2", "xeon_avx512"])
def test_choose_backend_on_the_decoder_suite(machine):
    from fastconv import _validate
    from fastconv.suite import DECODER
    m = MACHINES[machine]
    got = {}
    for layer in DECODER:
        g = _validate.transposed_geometry(layer.x_shape, layer.w_shape, layer.stride,
                                          layer.pad, 0, 1, 1, 0)
        c = fastconv.choose_backend(g, np.float32, 2, precision="highest", machine=m)
        got[layer.name] = (c["grad_input"], c["forward"], c["grad_weight"])
    assert got == EXPECTED_DECODER[m.simd]


def test_this_machine_is_described():
    m = fastconv.machine()
    assert m.simd == fastconv._dispatch.simd_variant()
    assert m.cores == fastconv._threads.available_cores() and m.l2_bytes >= 0


# float32 under precision "high" (the default): Winograd's forward and grad_input on the
# 3x3 stride-1 layers with at least WINOGRAD_MIN_CHANNELS channels and
# WINOGRAD_MIN_TILES output tiles; grad_weight as the exact rules have it.
WINOGRAD_CHOICES = {
    "vgg_conv1_2": True, "resnet_c2_3x3": True, "resnet_c4_3x3": True,
    "resnet_c5_3x3": False,  # 8 images of 7x7: 32 tiles
    "batch1_c4": False,      # one 14x14 image: 16 tiles
    "resnet_c3_3x3s2": False, "lenet_c1": False, "cs231n": False, "resnet_stem": False,
}


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("name", sorted(WINOGRAD_CHOICES))
def test_winograd_choices_on_the_suite(name, layout):
    from fastconv.suite import LAYERS
    layer = LAYERS[name]
    n, c, h, w = layer.x_shape
    k, cg, r, s = layer.w_shape
    xs, ws = ((n, h, w, c), (r, s, cg, k)) if layout else (layer.x_shape, layer.w_shape)
    g = geometry(xs, ws, layer.stride, layer.pad, 1, layer.groups, layout)
    exact = fastconv.choose_backend(g, np.float32, 2, precision="highest")
    high = fastconv.choose_backend(g, np.float32, 2, precision="high")
    assert fastconv.choose_backend(g, np.float32, 2) == high  # the default is "high"
    want = "winograd" if WINOGRAD_CHOICES[name] else None
    for p in ("forward", "grad_input"):
        assert high[p] == (want or exact[p]), p
        assert exact[p] != "winograd"
    assert high["grad_weight"] == exact["grad_weight"] != "winograd"
    # float64 keeps the exact engines; "highest" from the switch as from the argument
    assert fastconv.choose_backend(g, np.float64, 2) == fastconv.choose_backend(
        g, np.float64, 2, precision="highest")
    with fastconv.float32_precision("highest"):
        assert fastconv.choose_backend(g, np.float32, 2) == exact
    with pytest.raises(ValueError, match="precision must be None, 'highest' or 'high'"):
        fastconv.choose_backend(g, np.float32, 2, precision="medium")


@pytest.mark.parametrize("x_shape, w_shape, stride, expected", [
    ((8, 2048, 7, 7), (512, 2048, 1, 1), 1, "direct"),   # 7x7 maps, 8 images
    ((1, 512, 7, 7), (2048, 512, 1, 1), 1, "im2col"),    # 7x7, one image
    ((8, 512, 14, 14), (1024, 512, 1, 1), 2, "direct"),  # a strided projection
    ((8, 256, 14, 14), (512, 256, 3, 3), 2, "im2col"),   # strided onto 7x7 maps (2026-12-08)
    ((1, 256, 14, 14), (512, 256, 3, 3), 2, "direct"),   # ... of one image
    ((8, 128, 56, 56), (128, 128, 3, 3), 2, "direct"),   # strided onto 28x28 maps
    ((8, 3, 224, 224), (32, 3, 3, 3), 2, "im2col"),      # a stem: 3 channels, 224x224
    ((32, 3, 64, 64), (32, 3, 3, 3), 2, "im2col"),       # 3 channels, 64x64: im2col too
    ((8, 256, 14, 14), (1024, 256, 1, 1), 1, "direct"),  # pointwise onto 14x14 maps
    ((1, 256, 7, 7), (1024, 256, 1, 1), 1, "im2col"),    # pointwise onto 7x7, one image
    ((8, 512, 28, 28), (128, 512, 1, 1), 1, "direct"),   # pointwise onto 28x28 maps
])
def test_grad_input_choices_without_avx512(x_shape, w_shape, stride, expected):
    pad = 1 if w_shape[2] == 3 else 0
    g = geometry(x_shape, w_shape, stride, pad, 1, 1, 0)
    assert fastconv.choose_backend(g, np.float32, 2, simd="avx2",
                                   precision="highest")["grad_input"] == expected


@pytest.mark.parametrize("x_shape, stride, expected", [
    ((8, 56, 56, 64), 1, "im2col"),    # resnet_c2_3x3 in NHWC
    ((8, 56, 56, 128), 2, "im2col"),   # onto 28x28: 784 positions
    ((8, 14, 14, 256), 1, "direct"),   # 14x14
    ((8, 7, 7, 512), 1, "direct"),
])
def test_nhwc_choices_without_avx512(x_shape, stride, expected):
    """NHWC forward and grad_input go to im2col on large maps without AVX-512; with it
    they stay direct, and so does grad_weight (from DIRECT_MIN_POSITIONS on)."""
    C = x_shape[3]
    g = geometry(x_shape, (3, 3, C, C), stride, 1, 1, 1, 1)
    for simd, want in (("avx2", expected), ("baseline", expected), ("avx512", "direct")):
        choice = fastconv.choose_backend(g, np.float32, 2, simd=simd, precision="highest")
        assert (choice["forward"], choice["grad_input"]) == (want, want), simd
        assert choice["grad_weight"] == ("direct" if g.N * g.P * g.Q >= 1024 else "im2col")


@pytest.mark.parametrize("name, expected", [
    # layer: (forward, grad_input, grad_weight) in NHWC, without AVX-512
    ("alexnet_conv1", ("direct", "im2col", "direct")),  # 3 channels: forward stays direct
    ("resnet_stem", ("direct", "im2col", "direct")),
    ("lenet_c1", ("direct", "direct", "direct")),
    ("cs231n", ("direct", "direct", "direct")),  # small images keep direct grad_input (NCHW rule)
    ("resnet_c2_3x3", ("im2col", "im2col", "direct")),
])
def test_nhwc_choices_on_the_suite(name, expected):
    from fastconv.suite import LAYERS
    layer = LAYERS[name]
    n, c, h, w = layer.x_shape
    k, cg, r, s = layer.w_shape
    g = geometry((n, h, w, c), (r, s, cg, k), layer.stride, layer.pad, 1, layer.groups, 1)
    choice = fastconv.choose_backend(g, np.float32, 2, simd="avx2", precision="highest")
    assert tuple(choice[p] for p in ("forward", "grad_input", "grad_weight")) == expected


@pytest.mark.parametrize("layout, x_shape, stride, expected", [
    (0, (8, 64, 56, 56), 1, "direct"),   # NCHW: the direct engine's pointwise products
    (0, (8, 64, 56, 56), 2, "direct"),   # on the stride grid, 28x28 out
    (0, (8, 64, 14, 14), 1, "direct"),   # NCHW stride 1 onto 14x14: still products
    (0, (8, 64, 7, 7), 1, "im2col"),     # NCHW onto a 7x7 map
    (0, (8, 64, 14, 14), 2, "direct"),   # strided onto 7x7: a small product (below)
    (1, (8, 56, 56, 64), 1, "direct"),   # NHWC: products with positions as rows
    (1, (8, 56, 56, 64), 2, "im2col"),   # NHWC strided: no products
    (1, (8, 14, 14, 64), 1, "im2col"),   # NHWC onto a 14x14 map
])
def test_pointwise_forward_choice(layout, x_shape, stride, expected):
    """By the positions of the output: NCHW stride 1 direct from 14x14, strided from
    28x28 out (400 positions); NHWC only at stride 1, from 400 positions."""
    w_shape = (256, 64, 1, 1) if layout == 0 else (1, 1, 64, 256)
    g = geometry(x_shape, w_shape, stride, 0, 1, 1, layout)
    for simd in ("avx512", "avx2", "baseline"):
        choice = fastconv.choose_backend(g, np.float32, 2, simd=simd)
        assert choice["forward"] == expected
        # grad_weight: the NHWC products; NCHW stride 1 by the rule tested below
        nchw_narrow = layout == 0 and stride == 1 and x_shape[2] in (14, 7)
        assert choice["grad_weight"] == ("direct" if (layout == 1 and expected == "direct")
                                         or nchw_narrow or (layout == 0 and stride == 2)
                                         else "im2col")


@pytest.mark.parametrize("C, K, HW, expected", [
    (64, 128, 56, ("direct",) * 3),                  # ResNet-18's projections: small
    (256, 512, 14, ("direct",) * 3),                 # products (Cg*Kg <= 2^18) all direct
    (512, 1024, 56, ("direct", "direct", "im2col")),  # larger: forward by its 784 positions
    (512, 1024, 28, ("im2col", "direct", "im2col")),  # onto 14x14
    (1024, 2048, 14, ("im2col",) * 3),               # from 2^21: grad_input to im2col too
])
def test_strided_projection_choice(C, K, HW, expected):
    """NCHW 1x1 stride 2 (ResNet's downsample projections), on every SIMD set."""
    g = geometry((8, C, HW, HW), (K, C, 1, 1), 2, 0, 1, 1, 0)
    for simd in ("avx512", "avx2", "baseline"):
        choice = fastconv.choose_backend(g, np.float32, 2, simd=simd)
        assert tuple(choice[p] for p in ("forward", "grad_input", "grad_weight")) == expected


@pytest.mark.parametrize("C, K, HW, N, expected", [
    (256, 64, 56, 8, "direct"),    # resnet_c2_1x1: narrows by 4
    (1024, 512, 14, 8, "direct"),  # narrows by 2
    (256, 128, 56, 1, "direct"),   # batch 1, 3136 positions
    (2048, 512, 7, 8, "direct"),   # narrows, 392 positions over the batch
    (256, 64, 7, 4, "im2col"),     # narrows, but only 196 positions
    (32, 192, 28, 8, "direct"),    # widens, 4.8M multiply-adds per image on 28x28
    (160, 960, 7, 8, "direct"),
    (128, 512, 28, 8, "im2col"),   # widens, 51M per image
    (320, 1280, 7, 8, "im2col"),   # widens, 20M per image
    (24, 144, 56, 8, "im2col"),    # widens on a 56x56 map
])
def test_pointwise_grad_weight_choice(C, K, HW, N, expected):
    """NCHW stride-1 1x1 grad_weight (measured in _dispatch): direct when the layer
    narrows by half, or its product is small on a map of at most 28x28; on every ISA.
    Strided ones follow their own rule (above): direct up to 2^18 weights."""
    for simd in ("avx512", "avx2", "baseline"):
        g = geometry((N, C, HW, HW), (K, C, 1, 1), 1, 0, 1, 1, 0)
        assert fastconv.choose_backend(g, np.float32, 2, simd=simd)["grad_weight"] == expected
        g = geometry((N, C, 2 * HW, 2 * HW), (K, C, 1, 1), 2, 0, 1, 1, 0)
        assert fastconv.choose_backend(g, np.float32, 2, simd=simd)["grad_weight"] == (
            "direct" if C * K <= 1 << 18 else "im2col")


def test_tune_transposed_stores_each_pass_as_its_convolution_pass(cache):
    from fastconv._transpose import CONV_PASS
    from fastconv._validate import transposed_geometry
    winners = fastconv.tune((2, 6, 5, 5), (6, 4, 4, 4), 2, 1, transposed=True, repeat=1)
    assert set(winners) == {"forward", "grad_input", "grad_weight"}
    assert len(json.loads(cache.read_text())["entries"]) == 3
    g = transposed_geometry((2, 6, 5, 5), (6, 4, 4, 4), 2, 1, 0, 1, 1, 0)
    threads = fastconv.get_num_threads()
    for p, conv_pass in CONV_PASS.items():
        assert _tune.lookup(g, np.float32, threads, conv_pass) == winners[p]
        assert fastconv._api.auto_engine(g, np.float32, conv_pass) == winners[p]
    # the candidates were the convolution passes': Winograd for the two 4x4/2 phase passes
    assert set(_tune.candidates(g, np.float32, "grad_input")) == {"direct", "im2col",
                                                                   "winograd"}
    with pytest.raises(ValueError, match="output_padding is an option of transposed"):
        fastconv.tune((1, 2, 4, 4), (2, 2, 3, 3), output_padding=1, repeat=1)
    op = fastconv.tune((1, 2, 4, 4), (2, 2, 3, 3), 2, 1, transposed=True, output_padding=1,
                       repeat=1, passes=("forward",))
    assert set(op) == {"forward"}


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_whole_window_grad_input_on_the_direct_product(machine):
    """A fully connected layer's NCHW grad_input goes to the direct engine's single
    product on at most 64 images; more images, NHWC, groups and 1x1 windows keep
    im2col, as do forward and grad_weight."""
    m = MACHINES[machine]

    def choice(x_shape, w_shape, groups=1, layout=0):
        g = geometry(x_shape, w_shape, 1, 0, 1, groups, layout)
        assert g.covers_input
        return fastconv.choose_backend(g, np.float32, 2, machine=m)

    for n in (1, 8, 64):
        assert choice((n, 16, 5, 5), (120, 16, 5, 5)) == {
            "forward": "im2col", "grad_input": "direct", "grad_weight": "im2col"}
    assert choice((8, 512, 7, 7), (4096, 512, 7, 7))["grad_input"] == "direct"  # fc6
    assert choice((65, 16, 5, 5), (120, 16, 5, 5))["grad_input"] == "im2col"
    assert choice((8, 16, 5, 5), (120, 8, 5, 5), groups=2)["grad_input"] == "im2col"
    assert choice((8, 5, 5, 16), (5, 5, 16, 120), layout=1)["grad_input"] == "im2col"
    assert choice((64, 512, 1, 1), (10, 512, 1, 1))["grad_input"] == "im2col"
