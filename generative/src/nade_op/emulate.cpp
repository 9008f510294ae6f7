// Host emulation of nade_op.cu, to check the kernels' logic on a machine without a GPU:
// one std::thread per CUDA thread, std::barrier for __syncthreads and for warp shuffles, blocks
// one at a time. The launch shapes (fwd_shape, bwd_chunks, grids) copy nade_op/cuda.rs's; keep
// them in step. Compares z, dw_tilde, dv_tilde with f64 evaluations of the module doc's
// formulas (scaled error ≤ 1e-4, as the CUDA tests) and exits 1 on a mismatch.
//
//   g++ -std=c++20 -O1 -pthread -o /tmp/nade_emu generative/src/nade_op/emulate.cpp
//   /tmp/nade_emu B D H            # SCRATCH=n caps the backward's partials (n f32s)
//
// scripts/nade_cuda_emulate.sh runs it on the CUDA tests' small shapes. It checks indexing,
// synchronisation and the order of operations, not the CUDA compiler or the Rust launches.
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>
using std::max;
using std::min;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
thread_local dim3 threadIdx, blockIdx;
dim3 blockDim, gridDim;
std::barrier<>* blk_bar;
std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
float wbuf[64][32];
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(x)
#define __shared__ static
inline void __syncthreads() { blk_bar->arrive_and_wait(); }
inline float __shfl_down_sync(unsigned, float v, int o) {
    int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    warp_bar[w]->arrive_and_wait();
    wbuf[w][lane] = v;
    warp_bar[w]->arrive_and_wait();
    return lane + o < 32 ? wbuf[w][lane + o] : v;
}
#include "nade_op.cu"

template <class F> void launch(dim3 g, dim3 b, F f) {
    gridDim = g; blockDim = b;
    int nt = b.x * b.y;
    for (unsigned by = 0; by < g.y; by++)
        for (unsigned bx = 0; bx < g.x; bx++) {
            std::barrier<> bar(nt);
            blk_bar = &bar;
            warp_bar.clear();
            for (int w = 0; w < (nt + 31) / 32; w++) warp_bar.emplace_back(new std::barrier<>(min(32, nt - 32 * w)));
            std::vector<std::thread> ts;
            for (unsigned ty = 0; ty < b.y; ty++)
                for (unsigned tx = 0; tx < b.x; tx++)
                    ts.emplace_back([=] { threadIdx = {tx, ty, 1}; blockIdx = {bx, by, 1}; f(); });
            for (auto& t : ts) t.join();
        }
}
size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }
size_t npow2(size_t x) { size_t p = 1; while (p < x) p <<= 1; return p; }
// The launch shapes of cuda.rs.
void fwd_shape(size_t h, size_t& t, size_t& k) {
    t = std::clamp<size_t>(cdiv(h, 32), 1, 8) * 32; k = npow2(cdiv(h, t));
    if (k > 16) { t = 512; k = npow2(cdiv(h, 512)); }
}
void bwd_chunks(size_t bsz, size_t d, size_t h, size_t& per, size_t& n) {
    size_t cap = getenv("SCRATCH") ? atol(getenv("SCRATCH")) : (size_t(1) << 26);
    size_t maxc = std::clamp<size_t>(cap / ((2 * d + 1) * h), 1, 65535);
    size_t tiles = cdiv(bsz, 8);
    per = cdiv(tiles, min(maxc, tiles)) * 8; n = cdiv(bsz, per);
}
void transpose(const float* in, float* out, size_t rows, size_t cols) {
    launch({(unsigned)cdiv(cols, 32), (unsigned)cdiv(rows, 32)}, {32, 8}, [=] { nade_transpose(in, out, rows, cols); });
}
int main(int argc, char** argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s B D H\n", argv[0]);
        return 2;
    }
    int B = atoi(argv[1]), D = atoi(argv[2]), H = atoi(argv[3]);
    std::mt19937 rng(B * 1000 + D * 10 + H);
    std::uniform_real_distribution<float> U(-1, 1);
    std::vector<float> x(B * D), w(H * (D + 1)), v(D * (H + 1)), dz(B * D);
    for (auto& e : x) e = (U(rng) < -0.3f) ? 1.f : 0.f;
    for (auto& e : w) e = 1.5f * U(rng);
    for (auto& e : v) e = U(rng);
    for (auto& e : dz) e = 0.5f * U(rng);
    // Emulated kernels.
    std::vector<float> wt(H * (D + 1)), z(B * D);
    transpose(w.data(), wt.data(), H, D + 1);
    size_t T, K; fwd_shape(H, T, K);
    auto fwdk = K == 1 ? nade_fwd_k1 : K == 2 ? nade_fwd_k2 : K == 4 ? nade_fwd_k4 : K == 8 ? nade_fwd_k8 : nade_fwd_k16;
    launch({(unsigned)B}, {(unsigned)T}, [&] { fwdk(x.data(), wt.data(), v.data(), z.data(), D, H); });
    size_t per, nc; bwd_chunks(B, D, H, per, nc);
    std::vector<float> pw(nc * (D + 1) * H, NAN), pv(nc * D * H, NAN);
    launch({(unsigned)cdiv(H, 64), (unsigned)nc}, {64}, [&] {
        nade_bwd_partial(x.data(), dz.data(), wt.data(), v.data(), pw.data(), pv.data(), B, D, H, per); });
    size_t nw = H * (D + 1), n = nw + D * (H + 1);
    std::vector<float> out(n, NAN), accw(nw, NAN);
    size_t total = (2 * D + 1) * H + D;
    launch({(unsigned)min<size_t>(cdiv(total, 256), 1 << 16)}, {256}, [&] {
        nade_bwd_reduce(pw.data(), pv.data(), dz.data(), accw.data(), out.data() + nw, B, D, H, nc); });
    transpose(accw.data(), out.data(), D + 1, H);
    // f64 reference.
    std::vector<double> rz(B * D), rdw(nw, 0), rdv(D * (H + 1), 0);
    auto sig = [](double a) { return 1 / (1 + std::exp(-a)); };
    for (int b = 0; b < B; b++) {
        std::vector<std::vector<double>> hs(D, std::vector<double>(H));
        std::vector<double> a(H);
        for (int k = 0; k < H; k++) a[k] = w[k * (D + 1)];
        for (int d = 0; d < D; d++) {
            double s = v[d * (H + 1) + H];
            for (int k = 0; k < H; k++) { hs[d][k] = sig(a[k]); s += v[d * (H + 1) + k] * hs[d][k]; }
            rz[b * D + d] = s;
            for (int k = 0; k < H; k++) a[k] += w[k * (D + 1) + 1 + d] * x[b * D + d];
        }
        std::vector<double> g(H, 0);  // Σ_{d' > d} da_d'
        for (int d = D - 1; d >= 0; d--) {
            double e = dz[b * D + d];
            rdv[d * (H + 1) + H] += e;
            for (int k = 0; k < H; k++) {
                rdw[k * (D + 1) + 1 + d] += x[b * D + d] * g[k];
                rdv[d * (H + 1) + k] += e * hs[d][k];
                g[k] += e * v[d * (H + 1) + k] * hs[d][k] * (1 - hs[d][k]);
            }
        }
        for (int k = 0; k < H; k++) rdw[k * (D + 1)] += g[k];
    }
    auto cmp = [](const char* what, const float* a, const double* b, size_t n) {
        double scale = 0, worst = 0;
        for (size_t i = 0; i < n; i++) scale = max(scale, std::fabs(b[i]));
        for (size_t i = 0; i < n; i++) {
            double e = std::fabs(a[i] - b[i]) / (1 + std::fabs(b[i]) + 0.01 * scale);
            if (!(e <= 1e-4)) { printf("FAIL %s[%zu]: %g vs %g\n", what, i, a[i], b[i]); exit(1); }
            worst = max(worst, e);
        }
        printf("  %s: worst %.1e\n", what, worst);
    };
    printf("B=%d D=%d H=%d (T=%zu K=%zu, per_chunk=%zu chunks=%zu)\n", B, D, H, T, K, per, nc);
    cmp("z", z.data(), rz.data(), B * D);
    cmp("dw_tilde", out.data(), rdw.data(), nw);
    cmp("dv_tilde", out.data() + nw, rdv.data(), D * (H + 1));
}
