/* The pointwise product C (m x n) = A (m x k) . B (k x n) + bias, for one element type;
 * included by direct_kernels.c after direct_kernels_tmpl.h (which defines V, VL, LOAD,
 * STORE, SPLAT for T). Not a public header.
 *
 * A pointwise (1x1, stride 1, unpadded) NCHW convolution is one such product per image
 * and group: forward y_n (K x HW) = W (K x C) . x_n (C x HW), grad_input
 * dx_n (C x HW) = W^T (C x K) . dy_n (K x HW). A is the filters, packed once per call
 * by fc_pw_pack into blocks of FC_PW_MR rows; B is the image, read in place.
 * The direct engine's tiled correlation (_direct.pyx, _corr_item_gemm) is the same
 * product with B's rows at arbitrary offsets (rowoff: a tile's channel and tap rows)
 * and its reduction cut into chunks that accumulate into C.
 *
 * Blocking (measured on a 2-core AMD EPYC Zen 3, AVX2, float32, K=66 C=256 HW=3136,
 * GFLOP/s of one core unless stated; the host is noisy, +-10%):
 *   - Register block FC_PW_MR rows x FC_PW_NV vectors of columns, BLIS's shape: 6 x 2
 *     (12 of the 16 ymm) with AVX2, 12 x 2 (24 of 32 zmm) with AVX-512. On data in L1,
 *     6 x 2 ran at 74, 4 x 3 at 70, 3 x 4 at 39 (the ratio of loads to FMAs).
 *   - B read in place by the micro-kernel: 50, and no better with any prefetch hint or
 *     reduction block: the rows of one column sliver are HW*4 bytes apart, so they fall
 *     in a few L1 sets and evict each other between the m-blocks that reuse them.
 *   - So each sliver of NR columns is first copied into a contiguous per-thread buffer
 *     (k x NR, in L1), which every m-block then reads: 55.
 *   - The next sliver's source rows are prefetched (into L2) a few at a time from
 *     inside the micro-kernels of this one, so the memory reads overlap the FMAs
 *     instead of stalling the copy.
 *   - Results are streamed to C with non-temporal stores when the output is larger than
 *     the caches will keep (the caller says): no read-for-ownership of C's lines and no
 *     eviction of B. With both: 61-67 on one core, 110-127 on two, in a C harness with
 *     64-byte aligned arrays (OpenBLAS's sgemm on the same product: 53 on one core).
 *   - NumPy aligns large arrays to 16 bytes only. A sliver row that starts mid-line
 *     spans two lines, and prefetching only the first left the engine at 57-63 GFLOP/s
 *     on two cores (resnet_c2_1x1 forward); prefetching both and giving the outputs
 *     64-byte aligned rows (engines/direct.py) took it to 95-115.
 * Every element of C is one dot product taken in a fixed order, whatever the split of
 * the columns between threads: results are bitwise the same for any thread count.
 */

#define PW_NR (FC_PW_NV * VL)
#define PW_BLOCK FC_CAT3(fc_pw_block, TS, FC_SUFFIX)
#define PW_STREAM FC_CAT3(fc_pw_stream, TS, FC_SUFFIX)

/* A non-temporal store of one vector (fc_stream_f32/f64: direct_kernels.c, per ISA). */
FC_INLINE void PW_STREAM(T *p, V v) { FC_CAT2(fc_stream_, TS)(p, v); }

/* One step of the reduction: acc += a[i*ars] (broadcast, i < MR) x bp[0..NR); ars is 1
 * for a packed column of A (or one read by columns), lda for rows read in place. */
#define PW_STEP_BODY(a, ars, bp)                                                  \
    do {                                                                          \
        V b_[FC_PW_NV];                                                           \
        for (int j_ = 0; j_ < FC_PW_NV; j_++) b_[j_] = LOAD((bp) + j_ * VL);      \
        for (int i_ = 0; i_ < FC_PW_MR; i_++) {                                   \
            const V a_ = SPLAT((a)[i_ * (ars)]);                                  \
            for (int j_ = 0; j_ < FC_PW_NV; j_++) acc[i_][j_] += a_ * b_[j_];     \
        }                                                                         \
    } while (0)

/* AVX2: the whole reduction loop of a block in assembly (6 x 2 ymm accumulators, two B
 * loads into ymm12-13, broadcasts alternating in ymm14-15, four steps per iteration, the
 * pointers and counts in registers). GCC 12's own schedule of PW_STEP_BODY copied
 * accumulators between registers and spilled one inside the loop (54 GFLOP/s on one core
 * with B in L2; peak 93, measured with a loop of independent FMAs); an asm step inside a
 * C loop (82 in that harness) still left the loop's pointers, counts and prefetch state
 * on the stack in the engine's build, where fc_pw_gemm serves every A layout: stores to
 * the stack in the hot loop, and the tiled vgg_conv1_2 pattern through the built library
 * 41-47 against 64-72 for the same source specialised by the compiler for packed A.
 * FC_ASM_SFX (ps or pd), FC_ASM_BCAST and FC_ASM_ESZ name the element type's
 * instructions and size (direct_kernels.c); a step of B is always 64 bytes (2 ymm). */
#if defined(FC_ISA_AVX2) && defined(__GNUC__) && defined(__x86_64__) && FC_PW_MR == 6 && \
    FC_PW_NV == 2
#define PW_ASM_FMA2(r, addr, i)                                                     \
    FC_ASM_BCAST " " addr ", %%" r "\n\t"                                             \
    "vfmadd231" FC_ASM_SFX " %%ymm12, %%" r ", %[c" #i "0]\n\t"                        \
    "vfmadd231" FC_ASM_SFX " %%ymm13, %%" r ", %[c" #i "1]\n\t"
#define PW_ASM_OUT                                                                      \
    [c00] "+x"(acc[0][0]), [c01] "+x"(acc[0][1]), [c10] "+x"(acc[1][0]),                \
    [c11] "+x"(acc[1][1]), [c20] "+x"(acc[2][0]), [c21] "+x"(acc[2][1]),                \
    [c30] "+x"(acc[3][0]), [c31] "+x"(acc[3][1]), [c40] "+x"(acc[4][0]),                \
    [c41] "+x"(acc[4][1]), [c50] "+x"(acc[5][0]), [c51] "+x"(acc[5][1])
/* Inside the loops the pointers and counts live in fixed registers (a r8, a3 r9, b r10,
 * iterations r11, remainder rax), copied from inputs: twelve in-out accumulators and
 * in-out pointers would pass asm's limit of 30 operands. */
#define PW_ASM_HEAD                                                                     \
    "mov %[a0], %%r8\n\t"                                                                \
    "mov %[b0], %%r10\n\t"                                                               \
    "mov %[n], %%r11\n\t"                                                                \
    "mov %%r11, %%rax\n\t"                                                               \
    "and $3, %%rax\n\t"                                                                  \
    "shr $2, %%r11\n\t"                                                                  \
    "jz 2f\n\t"                                                                          \
    ".p2align 5\n\t"                                                                     \
    "1:\n\t"
#define PW_ASM_MID                                                                      \
    "add $256, %%r10\n\t"                                                                \
    "dec %%r11\n\t"                                                                      \
    "jnz 1b\n\t"                                                                         \
    "2:\n\t"                                                                             \
    "test %%rax, %%rax\n\t"                                                              \
    "jz 4f\n\t"                                                                          \
    "3:\n\t"
#define PW_ASM_TAIL                                                                     \
    "add $64, %%r10\n\t"                                                                 \
    "dec %%rax\n\t"                                                                      \
    "jnz 3b\n\t"                                                                         \
    "4:\n\t"
#define PW_ASM_CLOBBER "r8", "r9", "r10", "r11", "rax", "xmm12", "xmm13", "xmm14", "xmm15", \
    "cc", "memory"
/* A packed (row i of a step at a + i elements) or read by columns: the next step's
 * column is as bytes further on. */
#define PW_ASM_STEPC(bd0, bd1)                                                          \
    "vmovups " bd0 "(%%r10), %%ymm12\n\t"                                                \
    "vmovups " bd1 "(%%r10), %%ymm13\n\t"                                                \
    PW_ASM_FMA2("ymm14", "(%%r8)", 0)                                                    \
    PW_ASM_FMA2("ymm15", FC_ASM_ESZ "(%%r8)", 1)                                         \
    PW_ASM_FMA2("ymm14", FC_ASM_ESZ "*2(%%r8)", 2)                                       \
    PW_ASM_FMA2("ymm15", FC_ASM_ESZ "*3(%%r8)", 3)                                       \
    PW_ASM_FMA2("ymm14", FC_ASM_ESZ "*4(%%r8)", 4)                                       \
    PW_ASM_FMA2("ymm15", FC_ASM_ESZ "*5(%%r8)", 5)                                       \
    "add %[as], %%r8\n\t"
#define PW_LOOP_COLS(ap, astep, bp, n)                                                    \
    __asm__(PW_ASM_HEAD                                                                   \
            PW_ASM_STEPC("0", "32") PW_ASM_STEPC("64", "96")                              \
            PW_ASM_STEPC("128", "160") PW_ASM_STEPC("192", "224")                         \
            PW_ASM_MID                                                                    \
            PW_ASM_STEPC("0", "32")                                                       \
            PW_ASM_TAIL                                                                   \
            : PW_ASM_OUT                                                                  \
            : [a0] "r"(ap), [b0] "r"(bp), [n] "r"((ptrdiff_t)(n)),                       \
              [as] "r"((ptrdiff_t)(astep))                                                \
            : PW_ASM_CLOBBER)
/* A read in place by rows: rows 0..5 at a, a+s, a+2s, a3 = a+3s, a+4s, a3+2s (s = lda in
 * bytes, x86's scaled addressing); step d of an iteration d elements further on. */
#define PW_ASM_STEPR(bd0, bd1, d)                                                       \
    "vmovups " bd0 "(%%r10), %%ymm12\n\t"                                                \
    "vmovups " bd1 "(%%r10), %%ymm13\n\t"                                                \
    PW_ASM_FMA2("ymm14", FC_ASM_ESZ "*" d "(%%r8)", 0)                                   \
    PW_ASM_FMA2("ymm15", FC_ASM_ESZ "*" d "(%%r8,%[s],1)", 1)                            \
    PW_ASM_FMA2("ymm14", FC_ASM_ESZ "*" d "(%%r8,%[s],2)", 2)                            \
    PW_ASM_FMA2("ymm15", FC_ASM_ESZ "*" d "(%%r9)", 3)                                   \
    PW_ASM_FMA2("ymm14", FC_ASM_ESZ "*" d "(%%r8,%[s],4)", 4)                            \
    PW_ASM_FMA2("ymm15", FC_ASM_ESZ "*" d "(%%r9,%[s],2)", 5)
#define PW_LOOP_ROWS(ap, lda, bp, n)                                                      \
    __asm__("mov %[a3], %%r9\n\t"                                                         \
            PW_ASM_HEAD                                                                   \
            PW_ASM_STEPR("0", "32", "0") PW_ASM_STEPR("64", "96", "1")                    \
            PW_ASM_STEPR("128", "160", "2") PW_ASM_STEPR("192", "224", "3")               \
            "add $" FC_ASM_ESZ "*4, %%r8\n\t"                                             \
            "add $" FC_ASM_ESZ "*4, %%r9\n\t"                                             \
            PW_ASM_MID                                                                    \
            PW_ASM_STEPR("0", "32", "0")                                                  \
            "add $" FC_ASM_ESZ ", %%r8\n\t"                                               \
            "add $" FC_ASM_ESZ ", %%r9\n\t"                                               \
            PW_ASM_TAIL                                                                   \
            : PW_ASM_OUT                                                                  \
            : [a0] "r"(ap), [a3] "r"((ap) + 3 * (lda)), [b0] "r"(bp),                   \
              [n] "r"((ptrdiff_t)(n)), [s] "r"((lda) * (ptrdiff_t)sizeof(T))              \
            : PW_ASM_CLOBBER)
#else
/* Elsewhere the C step, four to an iteration (the unrolling the AVX-512 blocking was
 * measured with). */
/* The step s of A at ap + s*ae, its rows ars apart. */
#define PW_LOOP_(ap, ae, ars, bp, n)                                                      \
    do {                                                                                  \
        const T *pa_ = (ap);                                                              \
        const ptrdiff_t ae_ = (ae);                                                       \
        ptrdiff_t s_ = 0;                                                                 \
        for (; s_ + 4 <= (n); s_ += 4) {                                                  \
            PW_STEP_BODY(pa_ + s_ * ae_, ars, (bp) + s_ * PW_NR);                         \
            PW_STEP_BODY(pa_ + (s_ + 1) * ae_, ars, (bp) + (s_ + 1) * PW_NR);             \
            PW_STEP_BODY(pa_ + (s_ + 2) * ae_, ars, (bp) + (s_ + 2) * PW_NR);             \
            PW_STEP_BODY(pa_ + (s_ + 3) * ae_, ars, (bp) + (s_ + 3) * PW_NR);             \
        }                                                                                 \
        for (; s_ < (n); s_++) PW_STEP_BODY(pa_ + s_ * ae_, ars, (bp) + s_ * PW_NR);      \
    } while (0)
#define PW_LOOP_COLS(ap, astep, bp, n) PW_LOOP_(ap, (astep) / (ptrdiff_t)sizeof(T), 1, bp, n)
#define PW_LOOP_ROWS(ap, lda, bp, n) PW_LOOP_(ap, 1, lda, bp, n)
#endif

/* c[i*ldc + j] = bias[i] + cbias[j] (each 0 when NULL; with accumulate, c's own value) +
 * sum_p A[i, p] * bp[p*NR + j] for i < MR, j < NR, streamed when nt, A packed
 * (A[i, p] = ap[p*MR + i], lda 0), in place by rows (ap[i*lda + p], lda > 0) or by
 * columns (ap[i - p*lda], lda < 0). Meanwhile prefetches
 * pf + (pfoff ? pfoff[q] : q*pfld), q < npf (the next sliver's rows), spread evenly over
 * the k steps, and (apf, in place: the next row block's rows, apl lines each) every line
 * of rows apf + i*lda, i < MR. */
FC_INLINE void PW_BLOCK(const T *restrict ap, const ptrdiff_t lda, const T *restrict bp,
                        ptrdiff_t k, const T *bias, const T *cbias, T *c, ptrdiff_t ldc,
                        int nt, int accumulate, const T *pf, const ptrdiff_t *pfoff,
                        ptrdiff_t pfld, ptrdiff_t npf, const T *apf, ptrdiff_t apl)
{
    const ptrdiff_t napf = apf ? FC_PW_MR * apl : 0;
    const ptrdiff_t acs = lda < 0 ? -lda : FC_PW_MR;  /* A's step, packed or by columns */
    V acc[FC_PW_MR][FC_PW_NV];
    for (int i = 0; i < FC_PW_MR; i++) {
        const V b0 = bias ? SPLAT(bias[i]) : (V){0};
        for (int j = 0; j < FC_PW_NV; j++)
            acc[i][j] = accumulate ? LOAD(c + i * ldc + j * VL)
                                   : (cbias ? b0 + LOAD(cbias + j * VL) : b0);
    }
    /* The reduction in segments, the prefetches between them: npf rows of the next
     * sliver, then napf lines of the next row block, spread evenly over the k steps.
     * Segments of about 32 steps, each a multiple of 4 but the last: each segment's
     * loop exits cost a mispredicted branch, and segments of 8-11 steps (one per
     * prefetched row) measured 7-9% slower than the C loop with a prefetch every
     * 4 steps on a quiet core. */
    const ptrdiff_t nev = npf + napf;
    ptrdiff_t nseg = k / 32 < nev ? k / 32 : nev;
    if (nseg < 1) nseg = 1;
    for (ptrdiff_t sg = 0; sg < nseg; sg++) {
        for (ptrdiff_t e = sg * nev / nseg; e < (sg + 1) * nev / nseg; e++) {
            if (e < npf) {
                /* every line of the row's NR elements: a row that does not start on a
                 * line (NumPy's large arrays are 16-byte aligned) spans one line more */
                const char *row = (const char *)(pf + (pfoff ? pfoff[e] : e * pfld));
                for (int l = 0; l < PW_NR * (int)sizeof(T); l += 64)
                    __builtin_prefetch(row + l, 0, 2);
                __builtin_prefetch(row + PW_NR * sizeof(T) - 1, 0, 2);
            } else {
                const ptrdiff_t qa = e - npf;
                __builtin_prefetch((const char *)(apf + qa / apl * lda) + qa % apl * 64, 0, 2);
            }
        }
        const ptrdiff_t p0 = (sg * k / nseg) & ~(ptrdiff_t)3;
        const ptrdiff_t n = (sg + 1 == nseg ? k : ((sg + 1) * k / nseg) & ~(ptrdiff_t)3) - p0;
        if (lda > 0)
            PW_LOOP_ROWS(ap + p0, lda, bp + p0 * PW_NR, n);
        else
            PW_LOOP_COLS(ap + p0 * acs, acs * (ptrdiff_t)sizeof(T), bp + p0 * PW_NR, n);
    }
    if (nt) {
        for (int i = 0; i < FC_PW_MR; i++)
            for (int j = 0; j < FC_PW_NV; j++) PW_STREAM(c + i * ldc + j * VL, acc[i][j]);
    } else {
        for (int i = 0; i < FC_PW_MR; i++)
            for (int j = 0; j < FC_PW_NV; j++) STORE(c + i * ldc + j * VL, acc[i][j]);
    }
}

/* ap[(ib*k + p)*MR + i] = a[(ib*MR + i)*rs + p*cs] for ib*MR + i < m, 0 beyond:
 * ceil(m / MR) * MR * k elements. */
void FC_CAT3(fc_pw_pack, TS, FC_SUFFIX)(const T *a, ptrdiff_t rs, ptrdiff_t cs, ptrdiff_t m,
                                        ptrdiff_t k, T *ap)
{
    const ptrdiff_t mb = (m + FC_PW_MR - 1) / FC_PW_MR;
    for (ptrdiff_t ib = 0; ib < mb; ib++)
        for (ptrdiff_t p = 0; p < k; p++)
            for (int i = 0; i < FC_PW_MR; i++) {
                const ptrdiff_t r = ib * FC_PW_MR + i;
                ap[(ib * k + p) * FC_PW_MR + i] = r < m ? a[r * rs + p * cs] : (T)0;
            }
}

/* c[i*ldc + j] = bias[i] + cbias[j] (each only if not NULL; with accumulate, c's own
 * value) + sum_{p<k} A[i, p] * B[p, j] for i < m, j < n. With lda != 0 A is read in place,
 * by rows A[i, p] = ap[i*lda + p] (lda > 0) or by columns A[i, p] = ap[i - p*lda]
 * (lda < 0), a partial last row block packed into buf; with lda 0 A is packed by
 * fc_pw_pack (row block ib at
 * ap + ib*ablock, ablock = MR*k for a whole pack; a larger one reads a chunk of a pack's
 * reduction) and row p of B at b + (rowoff ? rowoff[p] : p*ldb). buf: FC_PW_BUF(k, NR,
 * MR) elements of scratch (this thread's). nt: stream C's full blocks past the caches
 * (when C is aligned for it). */
void FC_CAT3(fc_pw_gemm, TS, FC_SUFFIX)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *ap,
                                        ptrdiff_t ablock, ptrdiff_t lda, const T *b,
                                        ptrdiff_t ldb,
                                        const ptrdiff_t *rowoff,
                                        T *c, ptrdiff_t ldc, const T *bias,
                                        const T *cbias, int accumulate, int nt, T *buf)
{
    T *bp = (T *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);  /* the sliver, k x NR */
    T *tmp = bp + k * PW_NR;                                /* a partial block, MR x NR */
    T *bz = tmp + FC_PW_MR * PW_NR;                         /* a partial block's bias */
    T *cz = bz + FC_PW_MR;                                  /* a partial sliver's cbias */
    T *az = (T *)(((uintptr_t)(cz + PW_NR) + 63) & ~(uintptr_t)63); /* lda: last block */
    const ptrdiff_t mb = (m + FC_PW_MR - 1) / FC_PW_MR;
    const ptrdiff_t per = (k + mb - 1) / mb;  /* next-sliver rows each block prefetches */
    const ptrdiff_t apl = (k * (ptrdiff_t)sizeof(T) + 63) / 64 + 1;  /* lines of an A row */
    nt = nt && (uintptr_t)c % FC_VBYTES == 0 && (ldc * (ptrdiff_t)sizeof(T)) % FC_VBYTES == 0;
    for (ptrdiff_t j = 0; j < n; j += PW_NR) {
        const ptrdiff_t w = n - j < PW_NR ? n - j : PW_NR;
        const T *src = b + j;
        if (w == PW_NR) {
            for (ptrdiff_t p = 0; p < k; p++) {
                const T *row = src + (rowoff ? rowoff[p] : p * ldb);
                for (int v = 0; v < FC_PW_NV; v++) STORE(bp + p * PW_NR + v * VL, LOAD(row + v * VL));
            }
        } else {
            for (ptrdiff_t p = 0; p < k; p++) {
                const T *row = src + (rowoff ? rowoff[p] : p * ldb);
                for (int v = 0; v < PW_NR; v++) bp[p * PW_NR + v] = v < w ? row[v] : (T)0;
            }
        }
        const int next = j + PW_NR < n;
        const T *cj = cbias ? cbias + j : NULL;
        if (cbias && w < PW_NR) {
            for (int v = 0; v < PW_NR; v++) cz[v] = v < w ? cj[v] : (T)0;
            cj = cz;
        }
        for (ptrdiff_t ib = 0; ib < mb; ib++) {
            const ptrdiff_t rows = m - ib * FC_PW_MR < FC_PW_MR ? m - ib * FC_PW_MR : FC_PW_MR;
            const T *bi = bias ? bias + ib * FC_PW_MR : NULL;
            if (bias && rows < FC_PW_MR) {
                for (int i = 0; i < FC_PW_MR; i++) bz[i] = i < rows ? bi[i] : (T)0;
                bi = bz;
            }
            const ptrdiff_t r0 = ib * per < k ? ib * per : k;
            const ptrdiff_t npf = next ? (k - r0 < per ? k - r0 : per) : 0;
            const T *pf = rowoff ? b + j + PW_NR : b + r0 * ldb + j + PW_NR;
            const ptrdiff_t *pfoff = rowoff ? rowoff + r0 : NULL;
            T *cb = c + ib * FC_PW_MR * ldc + j;
            /* In place, the first sliver reads each row block from memory: short rows
             * (lda apart) the hardware prefetcher does not follow; the next block's are
             * fetched meanwhile (prefetches never fault: a block past m is harmless). */
            const T *apf = lda > 0 && j == 0 && ib + 1 < mb ? ap + (ib + 1) * FC_PW_MR * lda
                                                          : NULL;
            const T *ai = lda > 0 ? ap + ib * FC_PW_MR * lda
                                  : (lda < 0 ? ap + ib * FC_PW_MR : ap + ib * ablock);
            ptrdiff_t ldai = lda;
            if (lda && rows < FC_PW_MR) {  /* rows past m must not be read: packed, zeros */
                if (j == 0)
                    for (ptrdiff_t p = 0; p < k; p++)
                        for (int i = 0; i < FC_PW_MR; i++)
                            az[p * FC_PW_MR + i] =
                                i >= rows ? (T)0 : (lda > 0 ? ai[i * lda + p] : ai[i - p * lda]);
                ai = az;
                ldai = 0;
            }
            if (rows == FC_PW_MR && w == PW_NR) {
                PW_BLOCK(ai, ldai, bp, k, bi, cj, cb, ldc, nt, accumulate, pf, pfoff, ldb,
                         npf, apf, apl);
            } else {
                if (accumulate)
                    for (ptrdiff_t i = 0; i < rows; i++)
                        memcpy(tmp + i * PW_NR, cb + i * ldc, w * sizeof(T));
                PW_BLOCK(ai, ldai, bp, k, bi, cj, tmp, PW_NR, 0, accumulate, pf, pfoff, ldb,
                         npf, apf, apl);
                for (ptrdiff_t i = 0; i < rows; i++)
                    memcpy(cb + i * ldc, tmp + i * PW_NR, w * sizeof(T));
            }
        }
    }
    if (nt) FC_SFENCE();  /* streamed stores are weakly ordered: done before we return */
}

#undef PW_STEP_BODY
#undef PW_ASM_FMA2
#undef PW_ASM_OUT
#undef PW_ASM_STEPC
#undef PW_ASM_STEPR
#undef PW_ASM_HEAD
#undef PW_ASM_MID
#undef PW_ASM_TAIL
#undef PW_ASM_CLOBBER
#undef PW_LOOP_
#undef PW_LOOP_COLS
#undef PW_LOOP_ROWS
#undef PW_NR
#undef PW_BLOCK
#undef PW_STREAM
