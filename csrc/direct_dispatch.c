/* Run-time choice of the micro-kernel set (compiled without any -m flag). The AVX
 * sets exist only in x86 builds (FC_HAVE_AVX512 / FC_HAVE_AVX2, set by meson). */
#include <string.h>

#include "direct_kernels.h"

extern const fc_kernels fc_table_baseline;
#ifdef FC_HAVE_AVX2
extern const fc_kernels fc_table_avx2;
#endif
#ifdef FC_HAVE_AVX512
extern const fc_kernels fc_table_avx512;
#endif

static int cpu_has_avx512(void)
{
#if defined(FC_HAVE_AVX512) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

static int cpu_has_avx2(void)
{
#if defined(FC_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

const fc_kernels *fc_select(const char *request)
{
    const int any = request == NULL || request[0] == '\0';
#ifdef FC_HAVE_AVX512
    if ((any || strcmp(request, "avx512") == 0) && cpu_has_avx512()) return &fc_table_avx512;
#endif
#ifdef FC_HAVE_AVX2
    if ((any || strcmp(request, "avx2") == 0) && cpu_has_avx2()) return &fc_table_avx2;
#endif
    if (any || strcmp(request, "baseline") == 0) return &fc_table_baseline;
    return NULL;
}

const char *fc_supported(void)
{
    if (cpu_has_avx512()) return "avx512,avx2,baseline";
    if (cpu_has_avx2()) return "avx2,baseline";
    return "baseline";
}

/* Flush-to-zero and denormals-are-zero for the duration of a kernel call. Chosen for
 * speed (issue 7): with subnormal operands x86 cores take a ~100x microcode assist
 * per operation. Each OpenMP thread of a direct-engine parallel region sets MXCSR
 * bits FTZ|DAZ (0x8040) on entry and restores its own previous MXCSR on exit, so the
 * caller's thread and the OpenMP workers are left as they were. Semantics: subnormal
 * inputs read as zero and subnormal results are written as zero inside the direct
 * engine only; the error this adds is below float32's smallest normal (1.2e-38), far
 * inside the tests' tolerance relative to max(|ref|, 1). Elsewhere a no-op. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
unsigned fc_ftz_enter(void)
{
    const unsigned old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
}
void fc_ftz_leave(unsigned old) { _mm_setcsr(old); }
#else
unsigned fc_ftz_enter(void) { return 0; }
void fc_ftz_leave(unsigned old) { (void)old; }
#endif
