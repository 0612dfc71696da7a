/* The direct engine's micro-kernels, written once with GCC/Clang vector extensions and
 * compiled once per instruction set (csrc/meson.build):
 *
 *   FC_ISA_AVX512  -mavx512f            64-byte vectors, 32 registers, FC_KB_ISA = 8
 *   FC_ISA_AVX2    -mavx2 -mfma         32-byte vectors, 16 registers, FC_KB_ISA = 4
 *   (neither)      the target's default 16-byte vectors (SSE2, NEON, or emulated)
 *
 * -ffp-contract=fast lets a*b + c become one FMA where the ISA has it.
 *
 * Blocking of fc_conv (forward and grad_input, measured on a 2-core Sapphire Rapids):
 *   the output block is FC_KB_ISA channels x nvec vectors of flattened output positions
 *   m, held in FC_KB_ISA*nvec accumulators (24 of 32 zmm with AVX-512: 8 x 3). The
 *   reduction runs over input channels x taps; each step loads nvec input vectors
 *   (unaligned, contiguous because the tile is phase-split), broadcasts FC_KB_ISA
 *   weights (packed once per call so they are read in order) and issues KB*nvec FMAs:
 *   11 loads for 24 FMAs, which keeps both FMA ports busy while the loads hit L1/L2.
 *   Fewer accumulators (8 x 1) leave the ports half idle behind the 4-cycle FMA
 *   latency, which is why nvec = 1 is only used for the last block of a tile.
 * fc_conv1 is the one-output-channel variant (depthwise, Kg = 1): FC_NV1 vectors along
 *   m, one broadcast weight per tap, load-bound by design (a load per FMA).
 * fc_wgrad reduces over m: FC_KW channels x 4 (channel, tap) pairs = 16 accumulators,
 *   8 loads per 16 FMAs, then one horizontal sum per pair per tile.
 * fc_kvec vectorises over output channels instead: FC_MR broadcast rows x FC_NVK
 *   weight vectors (8 x 3 = 24 zmm with AVX-512, 6 x 2 with AVX2/baseline). Rows are
 *   arbitrary offsets, so the forward lists only valid output positions (across
 *   images: no empty lanes on 7x7 or 1x1 outputs) and grad_weight uses (channel, tap)
 *   rows with the positions as the reduction (no horizontal sums). Measured (2 threads,
 *   float32): lenet_c5 forward 8 -> 40 GFLOP/s, grad_weight 1 -> 52; resnet_c5_3x3
 *   forward 124 -> 143, grad_weight 41 -> 106; resnet_c4_3x3 grad_weight 115 -> 175.
 *   With `accumulate` it resumes from out, so the forward cuts the reduction into
 *   L1-sized weight chunks and grad_weight cuts the positions into L2-sized chunks
 *   (it now also takes row blocks: resnet_c3_3x3s2 grad_weight 74 -> 210 GFLOP/s).
 * Every broadcast is SPLAT(s) = ones * s, one vbroadcastss from memory. The earlier
 *   (V){0} + s compiled to vaddss + a register broadcast on the FMA ports; removing
 *   them (round 3) took the forward from 227 to 270 GFLOP/s on resnet_c2_3x3 (85% of
 *   the 2-core SGEMM ceiling), 193 -> 240 on resnet_c4_3x3, 148 -> 206 on resnet_c5.
 */
#include <stdint.h>
#include <string.h>

#include "direct_kernels.h"

#if defined(FC_ISA_AVX512)
#define FC_SUFFIX avx512
#define FC_VBYTES 64
#define FC_KB_ISA 8
#define FC_MR 8
#define FC_NVK 3
#define FC_PW_MR 12
#define FC_PW_NV 2
#elif defined(FC_ISA_AVX2)
#define FC_SUFFIX avx2
#define FC_VBYTES 32
#define FC_KB_ISA 4
#define FC_MR 6
#define FC_NVK 2
#define FC_PW_MR 6
#define FC_PW_NV 2
#else
#define FC_SUFFIX baseline
#define FC_VBYTES 16
#define FC_KB_ISA 4
#define FC_MR 6
#define FC_NVK 2
#define FC_PW_MR 6
#define FC_PW_NV 2
#endif

/* Non-temporal vector stores (fc_pw_gemm streams large outputs past the caches) and the
 * fence that orders them; plain stores where the ISA has none. p is vector-aligned. */
#if defined(FC_ISA_AVX512)
#include <immintrin.h>
#define fc_stream_f32(p, v) _mm512_stream_ps((p), (__m512)(v))
#define fc_stream_f64(p, v) _mm512_stream_pd((p), (__m512d)(v))
#define FC_SFENCE() _mm_sfence()
#elif defined(FC_ISA_AVX2)
#include <immintrin.h>
#define fc_stream_f32(p, v) _mm256_stream_ps((p), (__m256)(v))
#define fc_stream_f64(p, v) _mm256_stream_pd((p), (__m256d)(v))
#define FC_SFENCE() _mm_sfence()
#elif defined(__SSE2__)
#include <emmintrin.h>
#define fc_stream_f32(p, v) _mm_stream_ps((p), (__m128)(v))
#define fc_stream_f64(p, v) _mm_stream_pd((p), (__m128d)(v))
#define FC_SFENCE() _mm_sfence()
#else
#define fc_stream_f32(p, v) memcpy((p), &(v), sizeof(v))
#define fc_stream_f64(p, v) memcpy((p), &(v), sizeof(v))
#define FC_SFENCE() ((void)0)
#endif

#define FC_CAT2_(a, b) a##b
#define FC_CAT2(a, b) FC_CAT2_(a, b)
#define FC_CAT3_(a, b, c) a##_##b##_##c
#define FC_CAT3(a, b, c) FC_CAT3_(a, b, c)
#define FC_INLINE static inline __attribute__((always_inline))

/* ---------------------------------------------------------------- float32 */
#define T float
#define TS f32
#define TI int32_t
#define FC_ASM_SFX "ps"
#define FC_ASM_BCAST "vbroadcastss"
#define FC_ASM_ESZ "4"
#include "direct_kernels_tmpl.h"
#undef T
#undef TS
#undef TI
#undef FC_ASM_SFX
#undef FC_ASM_BCAST
#undef FC_ASM_ESZ

/* ---------------------------------------------------------------- float64 */
#define T double
#define TS f64
#define TI int64_t
#define FC_ASM_SFX "pd"
#define FC_ASM_BCAST "vbroadcastsd"
#define FC_ASM_ESZ "8"
#include "direct_kernels_tmpl.h"
#undef T
#undef TS
#undef TI
#undef FC_ASM_SFX
#undef FC_ASM_BCAST
#undef FC_ASM_ESZ

/* The table entry for this ISA, read by direct_dispatch.c. */
#define FC_TABLE_NAME FC_CAT3(fc, table, FC_SUFFIX)
#define FC_STR_(x) #x
#define FC_STR(x) FC_STR_(x)
const fc_kernels FC_TABLE_NAME = {
    FC_STR(FC_SUFFIX), FC_VBYTES, FC_KB_ISA, FC_MR, FC_NVK, FC_PW_MR, FC_PW_NV,
    FC_CAT3(fc_conv, f32, FC_SUFFIX), FC_CAT3(fc_conv, f64, FC_SUFFIX),
    FC_CAT3(fc_conv1, f32, FC_SUFFIX), FC_CAT3(fc_conv1, f64, FC_SUFFIX),
    FC_CAT3(fc_wgrad, f32, FC_SUFFIX), FC_CAT3(fc_wgrad, f64, FC_SUFFIX),
    FC_CAT3(fc_kvec, f32, FC_SUFFIX), FC_CAT3(fc_kvec, f64, FC_SUFFIX),
    FC_CAT3(fc_dw, f32, FC_SUFFIX), FC_CAT3(fc_dw, f64, FC_SUFFIX),
    FC_CAT3(fc_dww, f32, FC_SUFFIX), FC_CAT3(fc_dww, f64, FC_SUFFIX),
    FC_CAT3(fc_pw_pack, f32, FC_SUFFIX), FC_CAT3(fc_pw_pack, f64, FC_SUFFIX),
    FC_CAT3(fc_pw_gemm, f32, FC_SUFFIX), FC_CAT3(fc_pw_gemm, f64, FC_SUFFIX),
    FC_CAT3(fc_wino_in, f32, FC_SUFFIX), FC_CAT3(fc_wino_in, f64, FC_SUFFIX),
    FC_CAT3(fc_wino_out, f32, FC_SUFFIX), FC_CAT3(fc_wino_out, f64, FC_SUFFIX),
    FC_CAT3(fc_wino_out_rows, f32, FC_SUFFIX), FC_CAT3(fc_wino_out_rows, f64, FC_SUFFIX),
    FC_CAT3(fc_dwl_stage, f32, FC_SUFFIX), FC_CAT3(fc_dwl_stage, f64, FC_SUFFIX),
    FC_CAT3(fc_dwl_unstage, f32, FC_SUFFIX), FC_CAT3(fc_dwl_unstage, f64, FC_SUFFIX),
    FC_CAT3(fc_dwl_corr, f32, FC_SUFFIX), FC_CAT3(fc_dwl_corr, f64, FC_SUFFIX),
    FC_CAT3(fc_dwl_wgrad, f32, FC_SUFFIX), FC_CAT3(fc_dwl_wgrad, f64, FC_SUFFIX),
};
