// CUDA kernels of wick's fused NADE op (see nade_op.rs for the math and nade_op/cuda.rs for
// the launches). All f32, all inputs contiguous row-major:
//   x, dz   [B, D]          w_tilde [H, D+1] = [c | W]     v_tilde [D, H+1] = [V | b]
//   wt      [D+1, H]        w_tilde transposed (row 0 = c, row j+1 = W[:, j]), by nade_transpose
// Every sum is taken in a fixed order (no atomics), so results are bit-identical run to run.

#define FWD_TILE 64   // logits reduced per __syncthreads in the forward
#define MAX_WARPS 32

__device__ __forceinline__ float nade_sigmoid(float a) { return 1.0f / (1.0f + expf(-a)); }

// out[c, r] = in[r, c] for in [rows, cols]; block (32, 8), grid (⌈cols/32⌉, ⌈rows/32⌉).
extern "C" __global__ void nade_transpose(const float* __restrict__ in, float* __restrict__ out, int rows,
                                          int cols) {
    __shared__ float tile[32][33];
    const int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int r = r0 + i, c = c0 + threadIdx.x;
        if (r < rows && c < cols) tile[i][threadIdx.x] = in[(long long)r * cols + c];
    }
    __syncthreads();
    for (int i = threadIdx.y; i < 32; i += blockDim.y) {
        const int c = c0 + i, r = r0 + threadIdx.x;
        if (c < cols && r < rows) out[(long long)c * rows + r] = tile[threadIdx.x][i];
    }
}

// ---------------------------------------------------------------------------------------------
// Forward: one block per sample, thread t owns hidden units k = t + i·blockDim (i < KPT) and
// keeps a[k], h[k] = σ(a[k]) in registers. For each d: each warp sums V[d, k]·h[k] over its
// units by shuffles (fixed tree) into part[warp][d mod FWD_TILE]; then, where x_d ≠ 0,
// a += W[:, d] x_d and h is recomputed (x_d = 0 leaves h unchanged). Every FWD_TILE steps one
// __syncthreads and z_d = b_d + Σ_warp part (warps in order). Nothing B×D×H is stored.
template <int KPT>
__device__ void nade_fwd(const float* __restrict__ x, const float* __restrict__ wt, const float* __restrict__ v,
                         float* __restrict__ z, int D, int H) {
    __shared__ float part[MAX_WARPS][FWD_TILE];
    const int T = blockDim.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = T >> 5;
    const long long b = blockIdx.x;
    const float* xb = x + b * D;
    const long long H1 = H + 1;
    float a[KPT], h[KPT], vc[KPT];
#pragma unroll
    for (int i = 0; i < KPT; i++) {
        const int k = tid + i * T;
        a[i] = k < H ? wt[k] : 0.f;
        h[i] = nade_sigmoid(a[i]);
        vc[i] = k < H ? v[k] : 0.f;  // V[0, k]
    }
    for (int d0 = 0; d0 < D; d0 += FWD_TILE) {
        const int dn = min(FWD_TILE, D - d0);
        for (int dd = 0; dd < dn; dd++) {
            const int d = d0 + dd;
            // Prefetch V[d+1, :] while this step reduces.
            float vn[KPT];
            const float* vnext = v + (long long)(d + 1) * H1;
#pragma unroll
            for (int i = 0; i < KPT; i++) {
                const int k = tid + i * T;
                vn[i] = (k < H && d + 1 < D) ? vnext[k] : 0.f;
            }
            float p = 0.f;
#pragma unroll
            for (int i = 0; i < KPT; i++) p = fmaf(vc[i], h[i], p);  // padding units have vc = 0
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) p += __shfl_down_sync(0xffffffffu, p, o);
            if (lane == 0) part[warp][dd] = p;
            const float xd = xb[d];
            if (xd != 0.f) {
                const float* wd = wt + (long long)(d + 1) * H;
#pragma unroll
                for (int i = 0; i < KPT; i++) {
                    const int k = tid + i * T;
                    if (k < H) {
                        a[i] = fmaf(wd[k], xd, a[i]);
                        h[i] = nade_sigmoid(a[i]);
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < KPT; i++) vc[i] = vn[i];
        }
        __syncthreads();
        for (int dd = tid; dd < dn; dd += T) {
            const int d = d0 + dd;
            float s = v[(long long)d * H1 + H];
            for (int w = 0; w < nw; w++) s += part[w][dd];
            z[b * D + d] = s;
        }
        __syncthreads();
    }
}

#define NADE_FWD(K)                                                                             \
    extern "C" __global__ void __launch_bounds__(512)                                           \
        nade_fwd_k##K(const float* __restrict__ x, const float* __restrict__ wt,                \
                      const float* __restrict__ v, float* __restrict__ z, int D, int H) {       \
        nade_fwd<K>(x, wt, v, z, D, H);                                                         \
    }
NADE_FWD(1)
NADE_FWD(2)
NADE_FWD(4)
NADE_FWD(8)
NADE_FWD(16)

// ---------------------------------------------------------------------------------------------
// Backward, pass 1: separable over hidden units. Thread = unit k, blockIdx.y = a chunk of
// `per_chunk` consecutive samples, processed in tiles of TB with per-sample state in registers.
// Per tile: rebuild a_D = c + Σ_j W[k, j] x_j in the forward's order (bit-identical to it), then
// walk d downwards. h is constant between the ones of x, so (as in the CPU kernel) the step
// keeps r = Σ dz_d' V[d', k] over the current run and flushes g += h(1−h)·r at each one:
//   at x_d ≠ 0:  g += u r, r = 0;  dW[k, d] += x_d g;  a −= W[k, d] x_d;  h = σ(a), u = h(1−h)
//   always:      dV[d, k] += dz_d h;  r += dz_d V[d, k]
// and at the end dc[k] += g + u r. The tile's sums go to the chunk's own partial buffers
// pw [D+1, H] (row 0 = dc) and pv [D, H] (written on the first tile, added to after), so every
// entry has one writer and a fixed summation order.
template <int TB>
__device__ void nade_bwd(const float* __restrict__ x, const float* __restrict__ dz, const float* __restrict__ wt,
                         const float* __restrict__ v, float* __restrict__ pw, float* __restrict__ pv, int B, int D,
                         int H, int per_chunk) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= H) return;  // no block-level synchronisation below
    const long long LH = H, H1 = H + 1, LD = D;
    const int b0 = blockIdx.y * per_chunk;
    const int b1 = min(B, b0 + per_chunk);
    float* pwc = pw + (long long)blockIdx.y * (LD + 1) * LH + k;
    float* pvc = pv + (long long)blockIdx.y * LD * LH + k;
    const float c = wt[k];
    bool first = true;
    for (int t0 = b0; t0 < b1; t0 += TB) {
        const int n = min(TB, b1 - t0);
        const float* xt = x + (long long)t0 * LD;
        const float* dzt = dz + (long long)t0 * LD;
        float a[TB], h[TB], u[TB], g[TB], r[TB];
#pragma unroll
        for (int s = 0; s < TB; s++) a[s] = c;
        for (int j = 0; j < D; j++) {
            const float w = wt[(j + 1) * LH + k];
#pragma unroll
            for (int s = 0; s < TB; s++) {
                if (s < n) {
                    const float xv = xt[s * LD + j];
                    if (xv != 0.f) a[s] = fmaf(w, xv, a[s]);
                }
            }
        }
#pragma unroll
        for (int s = 0; s < TB; s++) {
            h[s] = nade_sigmoid(a[s]);
            u[s] = h[s] * (1.f - h[s]);
            g[s] = 0.f;
            r[s] = 0.f;
        }
        // Software pipeline: the loads of step d−1 are issued before step d computes.
        float vk = v[(LD - 1) * H1 + k], wk = wt[LD * LH + k];
        float xs[TB], ds[TB];
#pragma unroll
        for (int s = 0; s < TB; s++) {
            xs[s] = s < n ? xt[s * LD + D - 1] : 0.f;
            ds[s] = s < n ? dzt[s * LD + D - 1] : 0.f;
        }
        for (int d = D - 1; d >= 0; d--) {
            const int dp = d > 0 ? d - 1 : 0;
            const float vk_n = v[dp * H1 + k], wk_n = wt[(dp + 1) * LH + k];
            float xs_n[TB], ds_n[TB];
#pragma unroll
            for (int s = 0; s < TB; s++) {
                xs_n[s] = s < n ? xt[s * LD + dp] : 0.f;
                ds_n[s] = s < n ? dzt[s * LD + dp] : 0.f;
            }
            float accv = 0.f, accw = 0.f;
#pragma unroll
            for (int s = 0; s < TB; s++) {
                if (s < n) {
                    if (xs[s] != 0.f) {
                        g[s] = fmaf(u[s], r[s], g[s]);
                        r[s] = 0.f;
                        accw = fmaf(xs[s], g[s], accw);
                        a[s] = fmaf(-wk, xs[s], a[s]);
                        h[s] = nade_sigmoid(a[s]);
                        u[s] = h[s] * (1.f - h[s]);
                    }
                    accv = fmaf(ds[s], h[s], accv);
                    r[s] = fmaf(ds[s], vk, r[s]);
                }
            }
            float* pvd = pvc + d * LH;
            float* pwd = pwc + (d + 1) * LH;
            if (first) {
                *pvd = accv;
                *pwd = accw;
            } else {
                *pvd += accv;
                *pwd += accw;
            }
            vk = vk_n;
            wk = wk_n;
#pragma unroll
            for (int s = 0; s < TB; s++) {
                xs[s] = xs_n[s];
                ds[s] = ds_n[s];
            }
        }
        float accc = 0.f;
#pragma unroll
        for (int s = 0; s < TB; s++) {
            if (s < n) accc += fmaf(u[s], r[s], g[s]);
        }
        if (first) *pwc = accc;
        else *pwc += accc;
        first = false;
    }
    if (first) {  // an empty chunk (the launcher avoids them) still defines its partials
        for (int j = 0; j <= D; j++) pwc[j * LH] = 0.f;
        for (int d = 0; d < D; d++) pvc[d * LH] = 0.f;
    }
}

#define NADE_BWD_TB 8
extern "C" __global__ void __launch_bounds__(64) nade_bwd_partial(const float* __restrict__ x, const float* __restrict__ dz,
                                            const float* __restrict__ wt, const float* __restrict__ v,
                                            float* __restrict__ pw, float* __restrict__ pv, int B, int D, int H,
                                            int per_chunk) {
    nade_bwd<NADE_BWD_TB>(x, dz, wt, v, pw, pv, B, D, H, per_chunk);
}

// Backward, pass 2: sums the chunks' partials in chunk order. Element i of
//   [0, (D+1)H)            → accw[i] = Σ_chunk pw  (dW̃ transposed, [D+1, H]; transposed after)
//   [(D+1)H, (2D+1)H)      → dv[d, k] = Σ_chunk pv[d, k]   (dv is v_tilde-shaped, [D, H+1])
//   [(2D+1)H, (2D+1)H + D) → dv[d, H] = db_d = Σ_b dz[b, d], samples in order
extern "C" __global__ void nade_bwd_reduce(const float* __restrict__ pw, const float* __restrict__ pv,
                                           const float* __restrict__ dz, float* __restrict__ accw,
                                           float* __restrict__ dv, int B, int D, int H, int nchunks) {
    const long long nw = (long long)(D + 1) * H, nv = (long long)D * H, total = nw + nv + D;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        if (i < nw) {
            float s = pw[i];
            for (int q = 1; q < nchunks; q++) s += pw[q * nw + i];
            accw[i] = s;
        } else if (i < nw + nv) {
            const long long e = i - nw;
            float s = pv[e];
            for (int q = 1; q < nchunks; q++) s += pv[q * nv + e];
            dv[(e / H) * (H + 1) + e % H] = s;
        } else {
            const long long d = i - nw - nv;
            float s = 0.f;
            for (int b = 0; b < B; b++) s += dz[(long long)b * D + d];
            dv[d * (H + 1) + H] = s;
        }
    }
}
