/* Linear layers with block-quantized weights on the CPU, compiled once per machine by
 * heylook.engine.quantized_kernel (cc -O3 -march=native -fopenmp) and called through ctypes.
 *
 * Weights are kept as llama.cpp keeps them: blocks of 32 along the input axis, each with its own
 * scale (and, for 4-bit, its own offset):
 *   Q8: int8 q, w = d * q                       (GGUF Q8_0; any other type requantized to it)
 *   Q4: 4-bit q in 0..15, w = d * q + m         (GGUF Q4_0 with m = -8d, Q4_1, Q4_K's sub-blocks)
 *       16 bytes a block: byte j holds element j (low nibble) and element j + 16 (high nibble).
 * Each input row is quantized to int16 per block of 32 (scale = absmax / 32767), so a block's
 * product is an integer dot product (AVX2: madd_epi16), exact in int32 and in its float32 sum
 * (four products a lane, under 2^24). llama.cpp rounds the input to int8 instead, 256 times
 * coarser: on the demo model that tips near-tied tokens its float weights would not (its Q4_1
 * GGUF answers "What is the capital of France?" in French); int16 costs about as much here.
 * Every output value is one row's dot product with one weight row, over the blocks in order: a
 * row gets the same outputs alone or among other rows, whatever the number of rows or threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define BLOCK 32
#define KIND_Q8 0
#define KIND_Q4 1
#define ROW_TILE 4

static void quantize_rows(const float *x, int64_t blocks, int16_t *xq, float *xd, float *xs, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < blocks; i++) {
        const float *src = x + i * BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < BLOCK; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float d = amax / 32767.0f;
        const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < BLOCK; j++) {
            int v = (int)nearbyintf(src[j] * inverse);
            v = v > 32767 ? 32767 : v < -32767 ? -32767 : v;
            xq[i * BLOCK + j] = (int16_t)v;
            sum += v;
        }
        xd[i] = d;
        xs[i] = d * (float)sum;
    }
}

#ifdef __AVX2__
static inline float horizontal_sum(__m256 v) {
    __m128 low = _mm256_castps256_ps128(v), high = _mm256_extractf128_ps(v, 1);
    low = _mm_add_ps(low, high);
    low = _mm_add_ps(low, _mm_movehl_ps(low, low));
    low = _mm_add_ss(low, _mm_movehdup_ps(low));
    return _mm_cvtss_f32(low);
}

/* The 32 products of one weight block (widened to int16, two halves) and one input block, summed
 * in 8 int32 lanes of four products each. */
static inline __m256 block_dot(__m256i low, __m256i high, const int16_t *x) {
    const __m256i first = _mm256_madd_epi16(low, _mm256_loadu_si256((const __m256i *)x));
    const __m256i second = _mm256_madd_epi16(high, _mm256_loadu_si256((const __m256i *)(x + 16)));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(first, second));
}
#endif

/* Rows r0 .. r0 + rows - 1 of the output, column n. */
static void output_tile(int kind, int64_t n, int64_t r0, int rows, int64_t blocks, int64_t N, const uint8_t *wq,
                        const float *wd, const float *wm, const int16_t *xq, const float *xd, const float *xs,
                        const float *bias, float *y) {
    const int64_t row_bytes = kind == KIND_Q8 ? blocks * BLOCK : blocks * BLOCK / 2;
    const uint8_t *w = wq + n * row_bytes;
    const float *d = wd + n * blocks;
    float offsets[ROW_TILE] = {0};
#ifdef __AVX2__
    __m256 sums[ROW_TILE];
    for (int r = 0; r < ROW_TILE; r++) sums[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; b++) {
        __m256i low, high;
        if (kind == KIND_Q8) {
            low = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + b * BLOCK)));
            high = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + b * BLOCK + 16)));
        } else {
            const __m128i packed = _mm_loadu_si128((const __m128i *)(w + b * BLOCK / 2));
            const __m128i nibble = _mm_set1_epi8(0x0F);
            low = _mm256_cvtepu8_epi16(_mm_and_si128(packed, nibble));
            high = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), nibble));
        }
        for (int r = 0; r < rows; r++) {
            const int64_t at = (r0 + r) * blocks + b;
            const __m256 dot = block_dot(low, high, xq + at * BLOCK);
            sums[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * xd[at]), dot, sums[r]);
            if (kind == KIND_Q4) offsets[r] += wm[n * blocks + b] * xs[at];
        }
    }
    for (int r = 0; r < rows; r++) {
        y[(r0 + r) * N + n] = horizontal_sum(sums[r]) + offsets[r] + (bias ? bias[n] : 0.0f);
    }
#else
    float sums[ROW_TILE] = {0};
    for (int64_t b = 0; b < blocks; b++) {
        for (int r = 0; r < rows; r++) {
            const int64_t at = (r0 + r) * blocks + b;
            const int16_t *x = xq + at * BLOCK;
            int32_t dot = 0;
            if (kind == KIND_Q8) {
                const int8_t *q = (const int8_t *)(w + b * BLOCK);
                for (int j = 0; j < BLOCK; j++) dot += (int32_t)q[j] * x[j];
            } else {
                const uint8_t *q = w + b * BLOCK / 2;
                for (int j = 0; j < BLOCK / 2; j++) dot += (q[j] & 0x0F) * x[j] + (q[j] >> 4) * x[j + BLOCK / 2];
                offsets[r] += wm[n * blocks + b] * xs[at];
            }
            sums[r] += d[b] * xd[at] * (float)dot;
        }
    }
    for (int r = 0; r < rows; r++) y[(r0 + r) * N + n] = sums[r] + offsets[r] + (bias ? bias[n] : 0.0f);
#endif
}

/* y[M, N] = x[M, K] @ W[N, K]^T (+ bias). K is a multiple of 32. Returns 0, or -1 when out of memory. */
int heylook_quantized_linear(int kind, const float *x, int64_t M, int64_t K, const uint8_t *wq, const float *wd,
                             const float *wm, const float *bias, int64_t N, float *y, int threads) {
    const int64_t blocks = K / BLOCK;
    int16_t *xq = malloc((size_t)(M * K) * sizeof(int16_t));
    float *xd = malloc((size_t)(M * blocks) * sizeof(float));
    float *xs = malloc((size_t)(M * blocks) * sizeof(float));
    if (!xq || !xd || !xs) {
        free(xq), free(xd), free(xs);
        return -1;
    }
    quantize_rows(x, M * blocks, xq, xd, xs, threads);
    const int64_t tiles = (M + ROW_TILE - 1) / ROW_TILE;
#pragma omp parallel for num_threads(threads) schedule(static) collapse(2)
    for (int64_t t = 0; t < tiles; t++) {
        for (int64_t n = 0; n < N; n++) {
            const int64_t r0 = t * ROW_TILE;
            const int rows = (int)(M - r0 < ROW_TILE ? M - r0 : ROW_TILE);
            output_tile(kind, n, r0, rows, blocks, N, wq, wd, wm, xq, xd, xs, bias, y);
        }
    }
    free(xq), free(xd), free(xs);
    return 0;
}

/* W[N, K] as float32, for checks and for layers that need the float weight. */
void heylook_dequantize(int kind, const uint8_t *wq, const float *wd, const float *wm, int64_t N, int64_t K,
                        float *out) {
    const int64_t blocks = K / BLOCK;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t b = 0; b < blocks; b++) {
            float *dst = out + n * K + b * BLOCK;
            const float d = wd[n * blocks + b];
            if (kind == KIND_Q8) {
                const int8_t *q = (const int8_t *)(wq + (n * blocks + b) * BLOCK);
                for (int j = 0; j < BLOCK; j++) dst[j] = d * (float)q[j];
            } else {
                const uint8_t *q = wq + (n * blocks + b) * BLOCK / 2;
                const float m = wm[n * blocks + b];
                for (int j = 0; j < BLOCK / 2; j++) {
                    dst[j] = d * (float)(q[j] & 0x0F) + m;
                    dst[j + BLOCK / 2] = d * (float)(q[j] >> 4) + m;
                }
            }
        }
    }
}
