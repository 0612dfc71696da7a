"""Which engine runs each pass of a convolution when ``backend="auto"``.

:func:`choose_backend` is a pure function of the problem, in the manner of SciPy's
``choose_conv_method``: the same geometry, dtype and thread count always give the same
answer. ``backend=`` on every call overrides it, and :func:`fastconv.tune` replaces it
with measured winners for the caller's own shapes.

The rules are a cost model read off ``fastconv bench`` on the layer suite (2-core
AVX-512 Xeon, float32, NCHW, 2026-11-23, after the im2col engine moved to per-thread
pieces; spot checks of NHWC and float64 follow the same pattern). What they assume:

* The direct engine needs no workspace and, with its two micro-kernels (one vectorised
  along output columns, one across filters for small images), beats im2col in forward
  on every suite layer but one (direct / im2col ms: vgg_conv1_2 26.6 / 50.5,
  resnet_c2_3x3 7.0 / 12.0, resnet_c4_3x3 6.7 / 10.0, resnet_c5_3x3 9.9 / 12.1,
  batch1_c4 1.13 / 1.72, the pointwise resnet_c2_1x1 5.0 / 10.1), and in grad_input
  at stride 1 (resnet_c2_3x3 6.7 / 12.1, lenet_c1 0.42 / 2.1).
* The exception is a kernel that covers the whole input (lenet_c5): a fully connected
  layer, which im2col runs as one matrix product with no unrolling, 2-25x faster.
* Strided grad_input into few channels (Cg <= FEW_CHANNELS: the RGB stems) is where
  the direct engine is weakest: each output pixel gathers taps from every stride phase
  for only 3 channels. im2col's product plus col2im wins there (alexnet_conv1 24.0 /
  13.4 ms, resnet_stem 22.4 / 18.4, cs231n 1.13 / 0.95), and loses on wide strided
  layers (resnet_c3_3x3s2, 128 channels: 9.4 / 12.4).
* grad_weight reduces over N*P*Q. Below ``DIRECT_MIN_POSITIONS`` of them each filter
  block of the direct engine has too little to sum, and im2col's products, split over
  the columns of dW, win (resnet_c5_3x3, 392 positions: 12.1 / 8.3 ms; batch1_c4, 196:
  2.5 / 1.3). From resnet_c4_3x3's 1568 up, direct wins (6.9 / 8.2).
* grad_weight with a short reduction per filter (Cg*R*S < SMALL_REDUCTION, the RGB
  3x3 layers) and at least ``WGRAD_MIN_FILTERS`` filters goes to im2col, once its
  small-filter chunks were cut to ~1024 positions. Measured on the Zen 4 EPYC
  (2 threads, direct / im2col ms): cs231n (K=25) 1.50 / 0.72; the same with K=16
  1.18 / 0.61, K=64 2.21 / 2.04; N=32, 64x64, K=25 1.42 / 0.76; stride 1, K=25
  2.80 / 1.86. Fewer filters keep direct: lenet_c1 (1 channel, K=6) 0.37 / 0.51.
* Depthwise and thin grouped layers (reduction Cg*R*S < SMALL_REDUCTION): each group's
  product is a sliver BLAS runs far below peak, and im2col copies the input R*S times
  for almost no arithmetic. im2col is the wrong tool there (mobilenet_dw: 3-8x slower
  than direct); they always go to the direct engine.

Added 2026-12-01 on a 2-core AMD EPYC (Zen 3, AVX2 only; float32, 2 threads, medians
of 7; direct / im2col ms), after the im2col engine's pointwise passes moved onto its
own threads (``engines/_products``):

* 1x1 layers (pointwise, and the strided 1x1 projections of ResNet) go to im2col: its
  products are single-threaded OpenBLAS gemms, which beat the direct engine's AVX2
  kernels in every pass: resnet_c2_1x1 20.5 / 12.1, 19.3 / 8.4, 14.1 / 9.4; the 1x1/2
  projection 64->128 at 56x56 3.6 / 2.4, 8.5 / 3.2, 4.1 / 2.3; MobileNetV2's 32->192 at
  28x28 2.6 / 1.5 (forward), 3.6 / 1.6 (grad_weight). On the Zen 4 EPYC (AVX-512) the two
  were even on resnet_c2_1x1 (8.6 / 8.7 ms forward, with the im2col products then on
  NumPy's matmul). The exception is grad_input of a stride-1 1x1 layer with fewer than
  ``POINTWISE_FEW_POSITIONS`` positions per image and several images: each image's
  product packs the whole filter matrix for a 7x7 map (2048 <- 512 channels, N=8:
  14.1 / 19.4; at N=1 im2col still wins, 512 <- 2048: 4.8 / 2.5).
* Then the direct engine got products of its own for NCHW pointwise layers (1x1,
  stride 1, unpadded; csrc/pointwise_kernels_tmpl.h), and their forward and grad_input
  came back to it on maps of at least ``POINTWISE_DIRECT_POSITIONS`` positions (direct /
  im2col ms, best of two medians of 7): resnet_c2_1x1 8.3 / 10.3 forward, 8.4 / 10.9
  grad_input; 64->256 at 56x56 8.5 / 10.0, 10.3 / 11.7; 128->512 at 28x28 7.6 / 9.1,
  8.4 / 9.7; MobileNetV2's 144->24 at 56x56 2.8 / 3.2, 2.1 / 2.9. On 14x14 they are even
  (256->1024: 8.7 / 7.6, 8.3 / 8.5) and on 7x7 im2col's forward wins (512->2048:
  10.6 / 9.5), where a filter matrix larger than L2 streams once per column sliver;
  grad_input there stays direct through the few-positions rule above (2048 <- 512:
  12.4 / 18.4). grad_weight stayed with im2col (but see 2026-12-06 below).
* NHWC pointwise layers at stride 1 got products too (positions as rows, the filters
  as they are), and the same positions rule sends their forward and grad_input to the
  direct engine (2026-12-02, Zen 3, medians of 7 paired runs, direct / im2col ms):
  256->64 at 56x56 9.5 / 11.5 forward, 8.8 / 14.9 grad_input; 64->256 9.0 / 15.4,
  9.7 / 10.8; 144->24 4.2 / 5.9, 3.0 / 7.6; 32->192 at 28x28 1.4 / 2.2, 1.5 / 1.9; onto
  14x14 im2col keeps them (256->1024: 7.4 / 8.1, 9.3 / 7.1), and onto 7x7 (512->2048:
  14.1 / 8.4, 11.8 / 7.7), the few-positions rule being NCHW's alone. Their
  grad_weight (a reduction over the positions, in fixed ranges) goes there by the same
  rule: 256->64 at 56x56 14.4 / 23.0, 64->256 12.3 / 17.7, 144->24 3.1 / 9.6, 32->192
  at 28x28 1.5 / 2.6; 256->1024 at 14x14 12.1 / 10.3. Strided NHWC 1x1 layers stay
  with im2col.
* The strided 1x1 projections (NCHW, unpadded) got the same products on the stride
  grid: their grad_input goes to the direct engine at every size (64->128 at 56x56/2:
  2.0 / 2.7 ms; 512->1024 at 28x28/2: 17.3 / 23.6; 1024->2048 at 14x14/2, 7x7 out:
  32.3 / 48.6) and their forward by the same ``POINTWISE_DIRECT_POSITIONS`` rule
  (64->128 at 56x56/2: 2.3 / 2.8; 512->1024 onto 14x14: 17.4 / 15.8; onto 7x7:
  25.7 / 18.4).
* Measured again with the products on the OpenMP team (2026-12-07, Zen 4, KVM, float32,
  batch 8, medians of 15 interleaved calls, direct / im2col ms, alone and right after a
  direct call): the strided projections of ResNet-18 (Cg*Kg <= 2^17, 7x7 to 28x28 out)
  run faster on the direct engine in every pass, with AVX-512 and with its AVX2 kernels
  (forward onto 7x7 0.80 / 1.25, after a direct call 1.03 / 1.70; grad_weight 0.85 / 1.26
  and 1.00 / 1.74; AVX2 0.75 / 1.21, 1.05 / 1.23), and so does ResNet-50's 256->512
  (grad_weight 10.6 / 10.3 alone, 11.2 / 12.7 after): from
  ``STRIDED_POINTWISE_DIRECT_MACS`` = 2^18 down, all three passes go to direct. Its
  1024->2048 onto 7x7 (``STRIDED_POINTWISE_IM2COL_MACS``) now runs grad_input faster on
  im2col (14.1 / 10.4 alone, 14.0 / 13.1 after; AVX2 12.4 / 9.5), where the figures above
  were taken before the im2col engine's products moved onto our threads.
* On machines without AVX-512, strided grad_input onto maps of at least
  ``STRIDED_GRAD_INPUT_POSITIONS`` output positions goes to im2col as well (its col2im
  beats the AVX2 direct kernels there): resnet_c3_3x3s2 39.3 / 24.5, ResNet-18's
  3x3/2 64->128 at 56x56 22.4 / 12.6, 128->256 at 28x28 15.6 / 13.6; onto 7x7 maps
  direct still wins (256->512 at 14x14: 17.4 / 31.2). With AVX-512 the direct engine
  wins them (Zen 4: resnet_c3_3x3s2 15.3 / 18.4).
* NHWC, without AVX-512 (2026-12-02, Zen 3, ``fastconv bench --layout NHWC``, one run,
  direct / im2col ms): the direct engine's tiles transpose every input row into channel
  planes, and im2col's columns (contiguous channel runs in NHWC) win forward and
  grad_input onto maps of at least ``NHWC_IM2COL_POSITIONS`` positions: vgg_conv1_2
  98.1 / 67.9 and 93.0 / 69.1, resnet_c2_3x3 23.5 / 17.9 and 23.1 / 17.6,
  resnet_c3_3x3s2 (28x28 out) 28.9 / 16.8 and 26.1 / 18.6; on 14x14 they tie
  (resnet_c4_3x3 20.4 / 21.2, 22.4 / 22.0) and on 7x7 direct wins (resnet_c5_3x3
  23.1 / 26.8). Their grad_weight stays direct (vgg_conv1_2 68.1 / 174.2). Layers with
  few channels keep the direct engine's forward (the stems: alexnet_conv1 18.9 / 28.9,
  resnet_stem 26.1 / 44.1; lenet_c1 0.72 / 6.29), and in NHWC the short-reduction
  grad_weight rule above does not hold: cs231n 1.58 / 4.29.

Revised 2026-12-03 on a 2-core AMD EPYC (Zen 3, AVX2 only, KVM; float32, 2 threads;
``fastconv bench`` three times, then the rows it missed and their neighbours in blocks
of calls as the bench times them, medians of 15, direct / im2col ms), after the direct
engine's AVX2 kernels of the issue before had landed:

* Strided grad_input onto large maps no longer goes to im2col without AVX-512 (the
  rule above with ``STRIDED_GRAD_INPUT_POSITIONS`` is gone): resnet_c3_3x3s2
  18.7 / 22.6 (bench medians 18.9 / 24.4), ResNet-18's 3x3/2 64->128 at 56x56
  10.2 / 11.5, 256->512 at 14x14 12.0 / 12.5; 128->256 at 28x28 is im2col's by
  11.5 / 10.1.
* Strided grad_input into few channels goes to im2col only from input images of
  ``FEW_CHANNELS_IM2COL_PIXELS`` pixels without AVX-512: the stems (alexnet_conv1
  41.4 / 23.8 and resnet_stem 37.1 / 32.6 in the bench; MobileNetV2's 3->32 3x3/2 at
  224x224 10.1 / 6.8; 7x7/2 3->64 at 112x112 8.8 / 8.7) and not the small images
  (cs231n 3.05 / 3.38, bench 2.72 / 3.49; 3->32 3x3/2 at 64x64 2.9 / 4.4; 5x5/2 at
  128x128 4.1 / 5.2; 7x7/2 3->64 at 64x64 3.3 / 4.2). Two small-image layers go the
  other way (11x11/4 at 63x63 5.4 / 4.6; cs231n with 64 filters 5.8 / 3.9): autotune
  is the remedy there.
* The short-reduction grad_weight rule holds with AVX-512 only: on AVX2 the direct
  engine wins or ties (cs231n 2.41 / 2.42, bench 1.57 / 2.49; with 16 filters
  0.97 / 2.07; with 64, 3.12 / 4.16). (Undone on 2026-12-07, below.)
* Forward onto maps of at most ``SMALL_MAP_POSITIONS`` positions with at least
  ``SMALL_MAP_IM2COL_CHANNELS`` channels per group goes to im2col without AVX-512,
  where 8-lane vectors over 7 columns waste an eighth of every register
  (resnet_c5_3x3 23.3 / 18.3, bench 17.2 / 15.7; at N=4 10.2 / 8.5); 256 channels on
  7x7 stay direct (4.7 / 5.0), as does their grad_input, and NHWC's (the NHWC note
  below: resnet_c5_3x3 23.1 / 26.8).

The machine enters through :class:`Machine` (``machine()`` reads this one): the SIMD
variant decides every rule above that names AVX-512; the core count and the L2 cache
size are part of the description, and of what a test pins, but no rule uses them yet,
none having been measured on machines that differ in them (every figure here is from a
2-core machine, with 512 KiB (Zen 3) to 2 MiB (the Xeon) of L2 per core).

Revised 2026-12-03 again, on a 2-core AMD EPYC 7001 VM (Zen 1, family 23 model 1: AVX2
at half the Zen 3's rate, SGEMM ceiling 73 GFLOP/s against 143-170), with the decoder
suite of transposed convolutions, whose passes are convolution passes of shapes the
layer suite lacks (``fastconv bench --suite decoder``, two runs, direct / im2col ms;
the transposed pass in brackets):

* grad_weight below ``DIRECT_MIN_POSITIONS`` = 1536 positions (it was 1024) goes to
  im2col: 1024 positions with 32x32 filters at stride 16 (fcn_up16) 190 / 42 and
  271 / 67, and DCGAN's 4x4 maps at batch 64 (dcgan_up8) 105 / 98 and 99 / 68;
  resnet_c4_3x3's 1568 stay direct (41 / 45, 38 / 47).
* Strided grad_input into few channels counts the input pixels over the batch: 3
  channels at 64x64, N=64 (dcgan_up64 [forward], 262144 pixels) 17.8 / 10.2 and
  23.0 / 15.7, where 64x64 at N=32 stays direct (2.9 / 4.4, above) and the stems
  (N=8 at 224x224) stay im2col.
* Forward onto maps of at most ``TINY_MAP_POSITIONS`` = 16 positions with
  ``TINY_MAP_IM2COL_CHANNELS`` channels: 256 -> 512 onto 4x4 at N=64 (dcgan_up8
  [grad_input]) 124 / 105 and 150 / 107; 8x8 maps stay direct (dcgan_up16 [grad_input]
  109 / 145, 100 / 118). Strided grad_input from such maps too, once im2col multiplies
  several small images' dY at once (dcgan_up8 [forward] 86 / 77; 8x8 maps even:
  119 / 117).
* Windows that tile the input (kernel = stride, no dilation: U-Net's 2x2/2 up-
  convolution, unet_up) go to im2col for grad_weight (94 / 76, 118 / 105) and
  grad_input (89 / 83, 132 / 112): its columns are a reshuffle and col2im a scatter
  with no sums; their forward stays direct (73 / 81, 107 / 101).
* grad_weight into few channels with at least ``WGRAD_FEW_CHANNELS_FILTERS`` = 64
  filters over maps of at most ``WGRAD_FEW_CHANNELS_POSITIONS`` = 1024 positions: 3 <- 64
  channels, 4x4/2 onto 32x32 at N=64 (dcgan_up64 [grad_weight]) 18.1 / 10.8 and
  23.5 / 14.3; cs231n (25 filters) keeps direct (3.1 / 3.9), as do the stems onto
  55x55 and 112x112 maps (alexnet_conv1 34.7 / 47.2 and 41.4 / 32.3: a tie within the
  noise; resnet_stem 52.9 / 61.4).

* Forward at a stride of ``LARGE_STRIDE`` = 8 or more goes to im2col, whose unrolling
  gathers each tap's strided input once: 21 -> 21 channels, 32x32 filters at stride 16
  (fcn_up16 [grad_input]) 94 / 81, 53 / 48, 63 / 47 and 51 / 46 in four runs;
  alexnet_conv1 (stride 4) stays direct (38 / 36, 42 / 54).

* Winograd through stride phases (``PHASE_MIN_SAVING``, ``PHASE_MIN_TILES``; 2026-12-03,
  Zen 1, AVX2, 2 threads, medians of 7, ms, transposed forward / grad_input, which are
  the convolution's grad_input / forward), DCGAN's 4x4 stride-2 layers at batch 64:
  256 -> 128 on 8x8 (256 tiles) auto 77.7 / 67.6, winograd 54.0 / 56.3; 128 -> 64 on
  16x16 (1024 tiles) 79.5 / 65.3 and 58.9 / 55.4; but 512 -> 256 on 4x4 (64 tiles, one
  a map) 75.2 / 81.4 and 87.1 / 122.1 (its 1024 x 512 transformed filters overflow one
  filter chunk and its 16-tile batches starve the products). Any ISA and layout: the
  products are the stride-1 engine's. grad_input alone with ``PHASE_MANY`` phases or
  more (its call has phases x C filters), from ``PHASE_FEW_MIN_CHANNELS`` channels:
  fcn_up16's 256 phases of 21 channels, transposed forward, direct / winograd 45.4 /
  34.9, 45.3 / 36.5 and 70.4 / 53.8 (three runs); its transposed grad_input (the
  phases in the reduction) stays im2col (46.5 / 58.2).

These rules were measured without AVX-512 and for NCHW only; on this machine the
Winograd engine also won resnet_c5_3x3 (32 tiles, below ``WINOGRAD_MIN_TILES``) by
1.4x, which the Zen 3 had the other way (19.5 / 24.2 direct / winograd): autotune is
the remedy there.

Revised 2026-12-06 on a 2-core AMD EPYC (Zen 4, family 25 model 17, AVX-512; KVM;
float32, 2 threads), from ``fastconv bench --suite decoder`` (12:58, 7 of its 21 rows
missed) and then direct / im2col in interleaved rounds (5 x 0.3 s, medians, ms):
three of the decoder rules above hold with AVX-512 as well and now apply to every NCHW
call. Windows that tile the input (unet_up: [forward], the convolution's grad_input,
42.3 / 29.3; grad_weight 36.0 / 31.8; its [grad_input], the convolution's forward,
stays direct: 32.6 / 39.7); a stride of ``LARGE_STRIDE`` or more (fcn_up16
[grad_input], the convolution's forward, 35.9 / 23.8); maps of at most
``TINY_MAP_POSITIONS`` positions (dcgan_up8 [grad_input] 31.5 / 26.5; its [forward], a
strided grad_input from those maps, ties at 32.7 / 33.7). The other AVX2-only rules
were not measured against this machine's AVX-512 kernels and keep their condition.

Added 2026-12-02, Zen 3 (AVX2), float32, 2 threads, medians of 7, per call (filters
transformed every call), direct / winograd ms, forward then grad_input:

* The Winograd engine (F(4x4, 3x3), 3x3 stride 1 dilation 1) wins once both channel
  counts per group reach ``WINOGRAD_MIN_CHANNELS`` and the output has at least
  ``WINOGRAD_MIN_TILES`` 4x4 tiles over the batch: 64 -> 64 on 28x28, N=8 (392 tiles)
  5.26 / 4.37 and 5.35 / 4.23; 128 -> 128 on 28x28, N=1 (49 tiles) 3.63 / 2.25 and
  3.42 / 2.22; 256 -> 256 on 14x14, N=8 (128 tiles) 17.8 / 12.5 and 18.6 / 12.0;
  512 -> 512 on 7x7, N=16 (64 tiles) 41.6 / 30.5 and 47.0 / 29.6. Below them the
  per-call filter transform and the input transforms cost more than the products save:
  32 -> 32 on 56x56 5.70 / 7.25; 256 -> 256 on 14x14, N=2 (32 tiles) 4.57 / 4.76
  (batch1_c4, 16 tiles: 3.6 / 5.2; resnet_c5_3x3, 32 tiles: 19.5 / 24.2); 3 -> 64
  2.25 / 6.58. NHWC wins as NCHW does (64 -> 64 on 56x56, N=8: im2col 32.1, winograd
  19.8). Only for float32 under ``set_float32_precision("high")`` (the default), and
  only for finite inputs (``_api``); float64 keeps the exact engines.

Added 2026-12-06 on the Zen 4 EPYC (AVX-512, and ``FASTCONV_SIMD=avx2`` on the same
machine; float32, 2 threads, medians of 9 in three blocks of 3 calls per engine),
after the direct engine's grad_weight of NCHW stride-1 1x1 layers began reading x in
place (no tile packing) and staging grad_y in 16-position blocks:

* NCHW stride-1 pointwise grad_weight goes to the direct engine (from
  ``POINTWISE_WGRAD_MIN_POSITIONS`` positions over the batch) when the layer narrows by half or
  more (C >= 2K per group: the staged grad_y is then cheap beside the products), or
  when its product per image is small (C*K*P*Q <= ``POINTWISE_WGRAD_SMALL_MACS``) on
  maps of at most ``POINTWISE_WGRAD_MAX_POSITIONS`` positions, where OpenBLAS's packing
  costs more than the product. Ratios direct / im2col at N=8, AVX-512 then AVX2: resnet_c2_1x1 (256->64
  at 56x56) 0.87, 1.05; 1024->256 at 14x14 0.89, 0.96; 2048->512 at 7x7 0.84, 0.99;
  MobileNetV2's 192->32 at 28x28 0.36, 0.37; 96->576 at 14x14 0.58, 0.60; 160->960 at
  7x7 0.55, 0.60. The widening ResNet-50 layers stay with im2col (128->512 at 28x28
  1.27, 1.51; 256->1024 at 14x14 1.33, 1.42; 64->256 at 56x56 2.10, 1.10; 512->2048 at
  7x7 1.32, 1.30), as do MobileNetV2's 320->1280 at 7x7 (1.19, 1.08) and its widening
  layers on large maps (16->96 at 112x112 2.10, 1.23; 24->144 at 56x56 1.85, 1.10).
  Batch 1 (AVX-512): 28x28 wins (192->32 0.55, 32->192 0.64), 14x14 loses (192->64
  2.02, 64->384 1.35), hence the floor of 392 positions, which 8 images of 7x7 pass
  (960->160 0.45, 2048->512 0.84).
* In the same session's network runs (``fastconv bench --network mobilenet_v2
  --engines direct,auto``, batch 8, medians of 3 sequences, per-call ms in the network,
  direct / im2col), the direct engine's pointwise products beat im2col forward and
  grad_input on every 14x14 layer of MobileNetV2, AVX-512 then AVX2: 576->96 forward
  1.20 / 2.38, 1.30 / 2.56; 384->64 forward 0.63 / 1.83, 0.68 / 1.44; 96->576
  grad_input 1.22 / 2.68, 1.36 / 2.54; 64->384 grad_input 0.68 / 1.52, 0.66 / 1.29;
  64->384 forward even (0.73 / 0.70, 0.88 / 1.00). On 7x7 im2col's forward wins or
  ties (160->960 1.13 / 0.94, 1.18 / 1.53 after a direct call; 960->320 1.88 / 1.61,
  2.19 / 1.70). So NCHW stride-1 1x1 forward and grad_input go to the direct engine
  from ``POINTWISE_STRIDE1_DIRECT_POSITIONS`` = 196 positions (14x14); strided and
  NHWC layers keep the 400 of ``POINTWISE_DIRECT_POSITIONS``.

Revised 2026-12-07 on the Zen 4 EPYC, with ``FASTCONV_SIMD=avx2`` and
``OPENBLAS_CORETYPE=Zen`` (OpenBLAS's AVX2 kernels, so that both engines run as on an
AVX2 machine; float32, 2 threads, medians of 9 interleaved calls, direct / im2col ms),
after the im2col engine's NCHW pieces moved onto the OpenMP team: the short-reduction
grad_weight rule now holds on AVX2 too. VGG-16's first layer (3->64 3x3 at 224x224,
N=8) 88.4 / 19.3 (with OpenBLAS's AVX-512 kernels 74.1 / 17.6; it was 57-85 ms of the
network's avx2 grad_weight on the direct engine), MobileNetV2's stem (3->32 3x3/2)
10.1 / 4.4, cs231n 2.29 / 1.41, 3->16 3x3 at 64x64 (N=32) 8.5 / 3.1.

* The same layers' forward goes to im2col with AVX-512 onto maps of at most
  ``SHORT_REDUCTION_FORWARD_POSITIONS`` positions (forward, medians of 11 interleaved
  calls, direct / im2col ms): cs231n (16x16 out) 0.79 / 0.47, with 64 filters
  1.26 / 0.80, at stride 1 (31x31 out) 2.03 / 1.16; 3->32 3x3/2 at 64x64 (N=32)
  0.93 / 0.53. Larger maps keep direct (3->16 3x3 at 64x64 1.68 / 2.06; MobileNetV2's
  stem, 112x112 out, 2.73 / 2.37 is close), as do fewer filters (lenet_c1 0.25 / 0.28).
  With the AVX2 kernels (and OpenBLAS's) the same layers are even (cs231n
  0.67 / 0.62, the 64x64 one 0.87 / 0.78): the rule stays AVX-512's.

Revised 2026-12-07 again (same machine and settings; medians of 15 interleaved calls,
direct / im2col ms, AVX-512 then the AVX2 kernels with OpenBLAS's), after three layer
suite runs per ISA found two misses in every run:

* NCHW strided grad_input into few channels goes to im2col at any size on every ISA
  (the ``FEW_CHANNELS_IM2COL_PIXELS`` floor stays NHWC's): with the pieces on the
  team, im2col now wins the small images the Zen 3 figures above kept direct: cs231n
  (N=100) 1.32 / 0.52 and 1.13 / 0.71, at N=8 0.21 / 0.11 and 0.18 / 0.15, at N=1
  0.057 / 0.047 and 0.054 / 0.050; 3->32 3x3/2 at 64x64 (N=32) 1.57 / 0.70 and
  1.28 / 0.91; 7x7/2 3->64 at 112x112 6.90 / 3.65 and 4.36 / 3.63. One channel is even
  (1->8 5x5/2 at 28x28, N=64: 0.37 / 0.33 and 0.375 / 0.40).
* Whole-window NCHW grad_input (one group, a window larger than 1x1) on at most
  ``WINDOW_GRAD_INPUT_MAX_IMAGES`` images goes to the direct engine's one product:
  lenet_c5 (N=64) 0.105 / 0.115 and 0.095 / 0.120 (suite medians 0.15 / 0.18 and
  0.09 / 0.12), VGG's fc6 as a 7x7 convolution (512 -> 4096, N=8) 28.3 / 48.8 and
  25.3 / 34.5, 256 -> 1024 on 4x4 (N=32) 2.22 / 2.23 and 2.28 / 2.43; lenet_c5 at N=1
  0.041 / 0.036 and 0.033 / 0.065. More images go to im2col (lenet_c5 at N=256
  0.20 / 0.17 and 0.20 / 0.18; 64 -> 10 on 3x3 at N=128 0.054 / 0.049 and
  0.053 / 0.058), as do forward and grad_weight everywhere (lenet_c5 forward
  0.19 / 0.12, fc6 grad_weight 309 / 56) and 1x1 windows (512 -> 10 at N=64:
  0.38 / 0.06).
* The ``SMALL_MAP_POSITIONS`` forward rule (512 channels onto 7x7 maps to im2col) holds
  with AVX-512 too, now that im2col's pieces run on the team: resnet_c5_3x3 was
  auto's one AVX-512 miss in the medians of three suite runs (im2col 10.9, direct
  12.3) and in the README command's run (10.9 / 12.0); A/B, two runs: N=8
  11.42 / 10.49 and 11.54 / 10.69, N=4 7.04 / 5.80 and 7.63 / 6.02, N=1 3.33 / 2.20 and
  3.34 / 2.62; 256 channels stay direct (2.60 / 2.82, 3.09 / 2.88).

Added 2026-12-08 on a 2-core Intel Xeon (Emerald Rapids, AVX-512, 2 MiB of L2 per core;
KVM; float32, 2 threads, medians of 5 interleaved rounds of 5 calls, direct / im2col
ms, AVX-512 then ``FASTCONV_SIMD=avx2 OPENBLAS_CORETYPE=Haswell``):

* NCHW strided layers onto maps of at most ``SMALL_MAP_POSITIONS`` positions with at
  least ``STRIDED_SMALL_MAP_CHANNELS`` channels per group, on at least
  ``STRIDED_SMALL_MAP_MIN_IMAGES`` images, go to im2col for forward and grad_input:
  their stride-phase tiles (1 MiB for 4 images of 256 channels) miss the direct
  engine's held-tile bound, so every filter chunk packs the images again. ResNet-18's
  256 -> 512 3x3/2 from 14x14, N=8: forward 7.32 / 5.67 and 11.16 / 9.25, grad_input
  7.07 / 5.67 and 11.42 / 9.44; N=4 3.64 / 3.28, 4.44 / 3.87; N=2 2.39 / 1.97,
  3.00 / 2.39; N=32 20.7 / 16.4 and 42.0 / 35.0, 20.4 / 19.0 and 45.2 / 37.8; from 13x13
  forward 7.85 / 6.13, grad_input even (6.43 / 6.60); 512 -> 1024 from 14x14 grad_input
  33.5 / 28.4 (its forward went to im2col already). One image stays direct (forward
  1.00 / 1.09, grad_input 1.81 / 1.66 and 2.55 / 3.02), as do stride-1 layers of 256
  channels on 7x7 (forward 2.08 / 2.99, grad_input 2.08 / 2.46) and 14x14 outputs
  (128 -> 256 from 28x28: forward 4.20 / 4.55; its grad_input, 5.67 / 6.28 and
  11.34 / 9.89, is left). On the Zen 3 this layer's grad_input was the direct
  engine's by 12.0 / 12.5 (2026-12-03, above): within the 10% a miss allows.
* NCHW grad_weight with at least ``WGRAD_IM2COL_FILTERS`` filters per group goes to
  im2col (two runs with AVX-512, medians of 4 interleaved rounds, then one with the AVX2
  kernels; 3x3, N=8): VGG-16's 512 -> 512 on 28x28 111.2 / 102.4, 107.0 / 101.9 and
  201.7 / 195.7; on 14x14 29.4 / 26.2, 27.1 / 25.8 and 50.6 / 47.9; 256 -> 512 on 28x28
  65.9 / 52.1, 65.4 / 50.8 and 106.3 / 95.8; 512 -> 1024 on 14x14 63.9 / 49.0; 1024 ->
  512 on 14x14 even (55.5 / 55.2). The direct engine keeps dW as (C*R*S) x K sums, 9.4
  MB and more at these sizes, past L2. 256 filters stay direct: 256 -> 256 on 56x56
  109.0 / 113.0 and 198.8 / 206.1, on 14x14 6.87 / 7.43 and 12.6 / 13.1; 128 -> 256 on
  56x56 57.5 / 57.8 (AVX2 111.3 / 102.4: a miss within the 10%).
* The few-channel grad_weight rule above (``WGRAD_FEW_CHANNELS_FILTERS``) holds with
  AVX-512 too, and applies on every ISA: the decoder suite's dcgan_up64 [grad_weight]
  was a miss in three bench runs (direct / im2col 5.72 / 4.68, 3.98 / 3.34,
  5.52 / 4.26); interleaved (medians of 5 rounds), 3 <- 64 channels 4x4/2 onto 32x32 at
  N=64 4.24 / 3.26, at N=16 1.07 / 0.92, with 128 filters 8.72 / 5.46, 3x3/2 3.54 / 2.90;
  one channel with 64 filters 5x5/2 onto 28x28 even (1.01 / 1.01).
* With AVX-512, forward no longer goes to Winograd through stride phases (its
  grad_input still does): DCGAN's 4x4/2 layers at batch 64 (medians of 5 interleaved
  rounds, winograd / direct / im2col ms), 128 -> 256 from 16x16 (dcgan_up16
  [grad_input]) 23.9 / 17.8 / 20.8, a miss in two bench runs (28.5 and 27.8 against
  26.6 and 21.4); 64 -> 128 from 32x32 (dcgan_up32 [grad_input]) 19.1 / 18.2 / 24.4.
  With the AVX2 kernels the phases keep it: 31.7 / 31.3 / 34.7 and 26.3 / 30.8 / 38.8.
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import numpy as np

from ._geometry import ConvGeometry
from ._precision import PRECISIONS, get_float32_precision

PASSES = ("forward", "grad_input", "grad_weight")

# Below this reduction length a group's matrix product is too thin for BLAS to pay off.
SMALL_REDUCTION = 32
# grad_weight: output positions per call (N*P*Q) from which the direct engine wins.
DIRECT_MIN_POSITIONS = 1536
# ... but not (NCHW) from this many filters per group: im2col's products win there.
WGRAD_IM2COL_FILTERS = 512
# Whole-window (fully connected) NCHW grad_input on at most this many images goes to
# the direct engine's single product.
WINDOW_GRAD_INPUT_MAX_IMAGES = 64
# Strided grad_input into at most this many channels per group goes to im2col.
FEW_CHANNELS = 8
# grad_weight with a short reduction per filter goes to im2col from this many filters.
WGRAD_MIN_FILTERS = 16
# ...and so does their forward with AVX-512, onto maps of at most this many positions.
SHORT_REDUCTION_FORWARD_POSITIONS = 1024
# Stride-1 1x1 grad_input with fewer output positions per image than this, over at
# least POINTWISE_FEW_IMAGES images, stays with the direct engine.
POINTWISE_FEW_POSITIONS = 64
POINTWISE_FEW_IMAGES = 4
# NCHW 1x1 (unpadded, any stride) forward and grad_input with at least this many output
# positions per image go to the direct engine's pointwise products (strided grad_input
# goes there at any size).
POINTWISE_DIRECT_POSITIONS = 400
# NCHW strided 1x1 layers with at most this many filter weights per group (Cg*Kg) go to
# the direct engine in every pass; from STRIDED_POINTWISE_IM2COL_MACS, grad_input goes
# to im2col.
STRIDED_POINTWISE_DIRECT_MACS = 1 << 18
STRIDED_POINTWISE_IM2COL_MACS = 1 << 21
# ... and NCHW stride-1 1x1 forward and grad_input from this many (14x14).
POINTWISE_STRIDE1_DIRECT_POSITIONS = 196
# NCHW stride-1 1x1 grad_weight of a layer that does not narrow by half goes to the
# direct engine when its product per image, Cg*Kg*P*Q multiply-adds, is at most this,
# on maps of at most POINTWISE_WGRAD_MAX_POSITIONS positions.
POINTWISE_WGRAD_SMALL_MACS = 1 << 24
POINTWISE_WGRAD_MAX_POSITIONS = 784
# ... and from this many output positions over the batch (N*P*Q): 8 images of 7x7.
POINTWISE_WGRAD_MIN_POSITIONS = 392
# Without AVX-512, in NHWC: strided grad_input into few channels goes to im2col from
# this many input pixels over the batch (N*H*W); NCHW's goes there at any size.
FEW_CHANNELS_IM2COL_PIXELS = 1 << 18
# Without AVX-512: forward onto maps of at most this many positions, with at least
# TINY_MAP_IM2COL_CHANNELS channels per group, goes to im2col (DCGAN's 4x4 maps), as does
# strided grad_input from such maps.
TINY_MAP_POSITIONS = 16
TINY_MAP_IM2COL_CHANNELS = 128
# NCHW grad_weight into few channels (Cg <= FEW_CHANNELS) with at least this many
# filters, over maps of at most WGRAD_FEW_CHANNELS_POSITIONS positions, goes to im2col
# (without AVX-512 before 2026-12-08; on every ISA since).
WGRAD_FEW_CHANNELS_FILTERS = 64
WGRAD_FEW_CHANNELS_POSITIONS = 1024
# Without AVX-512: forward at a stride of at least this much goes to im2col.
LARGE_STRIDE = 8
# NCHW forward onto maps of at most this many positions, with at least this many
# channels per group, goes to im2col (on every ISA since 2026-12-07; AVX2's before).
SMALL_MAP_POSITIONS = 49
SMALL_MAP_IM2COL_CHANNELS = 512
# ... and strided NCHW forward and grad_input onto such maps from this many channels per
# group, on at least this many images.
STRIDED_SMALL_MAP_CHANNELS = 256
STRIDED_SMALL_MAP_MIN_IMAGES = 2
# Without AVX-512: NHWC forward and grad_input (not pointwise, not thin groups) with at
# least this many output positions per image go to im2col.
NHWC_IM2COL_POSITIONS = 784
# Winograd (float32, precision "high"): channels per group (in and out) and 4x4 output
# tiles over the batch from which it wins.
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_TILES = 48
# Winograd through stride phases (fastconv/_phases.py): the phases' windows must save at
# least this factor of multiplies (DCGAN's 4x4 / 2: 16 / 9), and both the output and the
# input's phase sub-grids hold at least PHASE_MIN_TILES 4x4 tiles over the batch.
PHASE_MIN_SAVING = 1.5
PHASE_MIN_TILES = 256
# ... and grad_input alone (its filters come in phases: PHASES x C of them) from this
# many phases, with at least PHASE_FEW_MIN_CHANNELS channels each way.
PHASE_MANY = 64
PHASE_FEW_MIN_CHANNELS = 16


class Machine(NamedTuple):
    """What :func:`choose_backend` knows of the machine: the direct engine's SIMD
    variant ("avx512", "avx2", "baseline"), the cores this process may use, and the L2
    cache per core in bytes (0 when the OS does not say)."""
    simd: str
    cores: int
    l2_bytes: int


def _l2_bytes() -> int:
    try:
        return max(int(os.sysconf("SC_LEVEL2_CACHE_SIZE")), 0)
    except (AttributeError, ValueError, OSError):
        return 0


def machine() -> Machine:
    """This machine's description (the default of :func:`choose_backend`)."""
    from ._threads import available_cores
    return Machine(simd_variant(), available_cores(), _l2_bytes())


@functools.cache
def simd_variant() -> str:
    """The direct engine's SIMD variant in use ("avx512", "avx2", "baseline"), as the
    compiled module reports it: the machine input of :func:`choose_backend`. The module
    picks its kernels once, at import (FASTCONV_SIMD), so the answer is kept."""
    try:
        from . import _direct
        return str(_direct.simd_info()["simd"])
    except (ImportError, AttributeError, KeyError):
        return "generic"


def _winograd_allowed(dtype, precision: str | None) -> bool:
    """float32 under precision "high" (the argument, else the setting): the only calls
    ``auto`` may give the Winograd engine."""
    return np.dtype(dtype) == np.float32 and (precision or get_float32_precision()) == "high"


def winograd_wins(g: ConvGeometry, dtype, precision: str | None = None) -> bool:
    """Whether ``auto`` sends this layer's forward and grad_input to the Winograd engine."""
    if not _winograd_allowed(dtype, precision):
        return False
    from .engines.winograd import TILE, stride_one

    def tiles(P, Q):
        return g.N * -(-P // TILE) * -(-Q // TILE)

    if min(g.Cg, g.Kg) < WINOGRAD_MIN_CHANNELS or not winograd_candidate(g):
        return False
    if stride_one(g):
        return tiles(g.P, g.Q) >= WINOGRAD_MIN_TILES
    return (min(tiles(g.P, g.Q), tiles(g.H // g.stride_h, g.W // g.stride_w))
            >= PHASE_MIN_TILES)


def phase_grad_input_wins(g: ConvGeometry, dtype, precision: str | None = None) -> bool:
    """Whether grad_input alone goes to Winograd's stride phases although the layer has
    too few channels or tiles for winograd_wins: many phases make many filters."""
    if not _winograd_allowed(dtype, precision):
        return False
    from .engines.winograd import stride_one
    return (not stride_one(g) and winograd_candidate(g)
            and g.stride_h * g.stride_w >= PHASE_MANY
            and min(g.Cg, g.Kg) >= PHASE_FEW_MIN_CHANNELS)


def winograd_candidate(g: ConvGeometry) -> bool:
    """Whether the Winograd engine can do this layer with fewer multiplies than the
    exact engines: 3x3 stride 1, or stride phases that save ``PHASE_MIN_SAVING``
    (what autotune times it on; ``backend="winograd"`` takes more)."""
    from . import _phases
    from .engines.winograd import TILE, stride_one
    if stride_one(g):
        return True
    return (_phases.plan(g) is not None
            and _phases.multiplies_saved(g, TILE) >= PHASE_MIN_SAVING)


def choose_backend(g: ConvGeometry, dtype, num_threads: int, simd: str | None = None,
                   precision: str | None = None, machine: Machine | None = None
                   ) -> dict[str, str]:
    """Return ``{"forward": engine, "grad_input": engine, "grad_weight": engine}``.

    ``engine`` is "direct", "im2col" or (forward and grad_input of float32 3x3 stride-1
    layers, under ``precision`` "high", default: :func:`fastconv.get_float32_precision`)
    "winograd". ``dtype`` and ``num_threads`` are part of the
    signature because a crossover can depend on them; the rules measured so far hold for
    float32 and float64 on 1 and 2 threads alike. ``simd`` is the direct engine's SIMD
    variant ("avx512", "avx2", "baseline"; default: the one in use, ``simd_variant()``);
    ``machine``, a :class:`Machine`, describes the whole machine instead (its ``simd``
    wins over the argument).
    """
    dtype = np.dtype(dtype)  # validates
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be None, 'highest' or 'high', got {precision!r}")
    simd = (machine.simd if machine is not None else simd) or simd_variant()
    # The rules are a pure function of these: keep each answer (a copy is returned, so
    # the caller may change it). Measured with the engine modules and the SIMD variant
    # also kept (2026-12-08, Emerald Rapids, 1 thread, a 1x8x8x8 3x3 layer, interleaved
    # blocks, medians): forward 58.0 -> 40.8 us, forward + backward 171.6 -> 147.8 us.
    return dict(_rules(g, dtype, num_threads, simd,
                       precision or get_float32_precision()))


@functools.lru_cache(maxsize=4096)
def _rules(g: ConvGeometry, dtype: np.dtype, num_threads: int, simd: str, precision: str
           ) -> dict[str, str]:
    """choose_backend's answer, its arguments resolved (the SIMD variant and the float32
    precision given)."""
    if g.groups > 1 and g.Cg * g.R * g.S < SMALL_REDUCTION:
        return dict.fromkeys(PASSES, "direct")
    if g.covers_input:
        # one product dy (N x K) . W (K x C*R*S) on the direct engine beats im2col's
        # per-image pieces for a few images; a 1x1 "window" is a plain product either way
        window_gi = (not g.nhwc and g.groups == 1 and g.R * g.S > 1
                     and g.N <= WINDOW_GRAD_INPUT_MAX_IMAGES)
        return {"forward": "im2col", "grad_input": "direct" if window_gi else "im2col",
                "grad_weight": "im2col"}
    strided = g.stride_h > 1 or g.stride_w > 1
    positions = g.P * g.Q
    if g.R == g.S == 1 and not (g.pad_top or g.pad_bottom or g.pad_left or g.pad_right):
        few = (not g.nhwc and not strided and positions < POINTWISE_FEW_POSITIONS
               and g.N >= POINTWISE_FEW_IMAGES)
        products = (positions >= (POINTWISE_STRIDE1_DIRECT_POSITIONS
                                  if not (g.nhwc or strided) else POINTWISE_DIRECT_POSITIONS)
                    and not (g.nhwc and strided))
        wgrad_direct = (products and g.nhwc) or (
            not g.nhwc and not strided and g.N * positions >= POINTWISE_WGRAD_MIN_POSITIONS
            and (g.Cg >= 2 * g.Kg
                 or (g.Cg * g.Kg * positions <= POINTWISE_WGRAD_SMALL_MACS
                     and positions <= POINTWISE_WGRAD_MAX_POSITIONS)))
        # the strided NCHW projections: small products go to the direct engine in
        # every pass, the largest grad_input to im2col
        strided_nchw = strided and not g.nhwc
        small = strided_nchw and g.Cg * g.Kg <= STRIDED_POINTWISE_DIRECT_MACS
        large = strided_nchw and g.Cg * g.Kg >= STRIDED_POINTWISE_IM2COL_MACS
        return {"forward": "direct" if products or small else "im2col",
                "grad_input": "direct" if few or products or (strided_nchw and not large)
                else "im2col",
                "grad_weight": "direct" if wgrad_direct or small else "im2col"}
    wino = winograd_wins(g, dtype, precision)
    avx512 = simd == "avx512"
    # with AVX-512 the direct engine's forward beats Winograd through stride phases
    wino_forward = wino and not (avx512 and strided)
    nhwc_wide = (g.nhwc and positions >= NHWC_IM2COL_POSITIONS and g.Cg > FEW_CHANNELS
                 and not avx512)
    small_map = (not g.nhwc and positions <= SMALL_MAP_POSITIONS
                 and g.Cg >= SMALL_MAP_IM2COL_CHANNELS)
    strided_small_map = (not g.nhwc and strided and positions <= SMALL_MAP_POSITIONS
                         and g.Cg >= STRIDED_SMALL_MAP_CHANNELS
                         and g.N >= STRIDED_SMALL_MAP_MIN_IMAGES)
    few_channels = strided and g.Cg <= FEW_CHANNELS and (
        avx512 or not g.nhwc or g.N * g.H * g.W >= FEW_CHANNELS_IM2COL_PIXELS)
    short_reduction = (not g.nhwc and g.Cg * g.R * g.S < SMALL_REDUCTION
                       and g.Kg >= WGRAD_MIN_FILTERS)
    short_reduction_forward = (avx512 and short_reduction
                               and positions <= SHORT_REDUCTION_FORWARD_POSITIONS)
    nchw = not g.nhwc
    tiny_map = (nchw and positions <= TINY_MAP_POSITIONS
                and g.Cg >= TINY_MAP_IM2COL_CHANNELS)
    # windows that tile the input without overlap (kernel = stride): im2col's columns
    # are a reshuffle of the input and col2im a scatter with no sums
    tiling = (nchw and strided and (g.R, g.S) == (g.stride_h, g.stride_w)
              and g.dil_h == g.dil_w == 1)
    few_channels_wgrad = (nchw and g.Cg <= FEW_CHANNELS
                          and g.Kg >= WGRAD_FEW_CHANNELS_FILTERS
                          and positions <= WGRAD_FEW_CHANNELS_POSITIONS)
    large_stride = nchw and max(g.stride_h, g.stride_w) >= LARGE_STRIDE
    return {
        "forward": "winograd" if wino_forward else (
            "im2col" if nhwc_wide or small_map or strided_small_map or tiny_map
            or large_stride or short_reduction_forward else "direct"),
        "grad_input": "winograd" if wino or phase_grad_input_wins(g, dtype, precision) else (
            "im2col" if nhwc_wide or few_channels or tiling or (strided and tiny_map)
            or strided_small_map else "direct"),
        "grad_weight": "im2col" if g.N * g.P * g.Q < DIRECT_MIN_POSITIONS
        or short_reduction or tiling or few_channels_wgrad
        or (nchw and g.Kg >= WGRAD_IM2COL_FILTERS) else "direct",
    }
