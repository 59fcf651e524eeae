// CUDA backend of focus_logits_ and the FocusState op (same contract as the torch reference).
//
// focus_logits_cuda_: grid (splits, B), 256 threads.  A blended row is split into column ranges so
// that B = 1 fills the GPU; each block scales its range with 16-byte vector loads, syncs, then adds
// the row's entries that fall in its range (gpuAtomicAdd: duplicated ids add up).  An unblended row
// is handled by its first block alone and touches only its entries.
// focus_state_cuda_: grid (B,), 256 threads: thread 0 walks the bytes of the row's last token through
// its automaton (the state is updated in place, so a row is never split across blocks), the block
// gives up banned attempts, scales the row if it blends, then every thread takes slots of the row's
// program.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>

#include "focus_common.h"

namespace focuskern {

TokenIds last_token_ids(const c10::optional<at::Tensor>& last_tokens);  // focus_cpu.cpp

namespace {

constexpr int kThreads = 256;
constexpr int kBlockCols = 4096;  // columns per block of a blended row, at least

template <typename scalar_t>
__device__ void scale_columns(scalar_t* row, int64_t col_stride, int64_t lo, int64_t hi, float scale) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  struct alignas(16) Pack { scalar_t v[kVec]; };
  const bool vectorized = col_stride == 1 && reinterpret_cast<uintptr_t>(row + lo) % 16 == 0;
  if (vectorized) {
    const int64_t n_packs = (hi - lo) / kVec;
    Pack* packs = reinterpret_cast<Pack*>(row + lo);
    for (int64_t i = threadIdx.x; i < n_packs; i += blockDim.x) {
      Pack p = packs[i];
#pragma unroll
      for (int e = 0; e < kVec; ++e) p.v[e] = static_cast<scalar_t>(static_cast<float>(p.v[e]) * scale);
      packs[i] = p;
    }
    lo += n_packs * kVec;
  }
  for (int64_t v = lo + threadIdx.x; v < hi; v += blockDim.x) {
    scalar_t& x = row[v * col_stride];
    x = static_cast<scalar_t>(static_cast<float>(x) * scale);
  }
}

template <typename scalar_t>
__global__ void focus_logits_kernel(scalar_t* x, int64_t s0, int64_t s1, int64_t V, const int32_t* row_offsets,
                                    const int32_t* ids, const float* bias, const float* alpha, const float* decay,
                                    const int32_t* step, int64_t cols_per_block) {
  const int64_t r = blockIdx.y, split = blockIdx.x;
  const float s = decay_strength(decay + 3 * r, step[r]);
  const float scale = 1.f - s * alpha[r];
  scalar_t* row = x + r * s0;
  int64_t lo = 0, hi = split == 0 ? V : 0;
  if (scale != 1.f) {
    lo = split * cols_per_block;
    hi = lo + cols_per_block < V ? lo + cols_per_block : V;
    scale_columns(row, s1, lo, hi, scale);
    __syncthreads();  // the entries below add onto scaled values
  }
  if (hi <= lo) return;
  for (int32_t j = row_offsets[r] + threadIdx.x; j < row_offsets[r + 1]; j += blockDim.x) {
    const int64_t v = ids[j];
    if (v < lo || v >= hi) continue;  // [lo, hi) lies in [0, V): an id outside it is skipped (issue 21)
    const float b = bias[j];
    gpuAtomicAdd(row + v * s1, static_cast<scalar_t>(b == -INFINITY ? -INFINITY : s * b));
  }
}

template <typename scalar_t>
__global__ void focus_state_kernel(scalar_t* x, int64_t s0, int64_t s1, int64_t V, TokenIds last,
                                   const int32_t* prog, int32_t* node, int32_t* sat, int32_t* step, int64_t W,
                                   const float* pf, const int32_t* pi, const int32_t* nodes, const int32_t* slots,
                                   const int32_t* clo, const int32_t* ents, TokenView tokens) {
  const int64_t r = blockIdx.x;
  const int32_t p = prog[r];
  if (p < 0) return;
  const int32_t* ip = pi + p * I_WIDTH;
  const float* fp = pf + p * F_WIDTH;
  const ProgramView view = program_view(ip, nodes, slots, clo, ents);
  int32_t* row_sat = sat + r * W;
  __shared__ int32_t shared_word;
  __shared__ int shared_open;
  __shared__ int shared_in_match;
  __shared__ int32_t shared_said;
  if (threadIdx.x == 0) {  // step 1, the byte walk: sequential by nature, one thread
    int32_t word = node[r];
    if (last.given() && in_vocab(last[r], V)) {  // a token outside [0, V) is not fed (held rows: -1)
      word = node[r] = step_row(view, tokens, word, static_cast<int32_t>(last[r]), ip[I_ONCE] != 0, row_sat);
      step[r] += 1;
    }
    shared_word = word;
    shared_open = 0;
    shared_in_match = 0;
    shared_said = 0;
  }
  __syncthreads();
  const int32_t u = word_node(shared_word), pc = push_context(word_ctx(shared_word));
  const int32_t clo_lo = view.node_row(u)[N_CLO_LO];
  const int32_t clo_hi = ip[I_PHRASE] ? view.node_row(u)[N_CLO_HI] : clo_lo;
  const float s = decay_strength(fp + F_KIND, step[r]);
  const float scale = 1.f - s * fp[F_ALPHA];
  scalar_t* row = x + r * s0;
  if (clo_hi > clo_lo) {
    // Step 2a: a banned continuation aborts its attempt; the entities through the banned entries are
    // given up only when no entry can continue and u is not inside a character.  Bits only grow
    // (atomic or): the result does not depend on the order of the threads.  The logits are read
    // before the scaling below.
    if (threadIdx.x == 0 && mid_character(view, tokens, u)) shared_open = 1;
    for (int32_t c = clo_lo + threadIdx.x; c < clo_hi; c += blockDim.x)
      if (open_continuation(view, c, row, s1, V, row_sat)) shared_open = 1;
    __syncthreads();
    if (!shared_open)
      for (int32_t c = clo_lo + threadIdx.x; c < clo_hi; c += blockDim.x)
        if (banned_continuation(view, c, row, s1, V)) {
          const int32_t* child = view.node_row(view.clo_child(c));
          for (int32_t j = child[N_THROUGH_LO]; j < child[N_THROUGH_HI]; ++j)
            atomicOr(row_sat + (ents[j] >> 5), 1 << (ents[j] & 31));
        }
    __syncthreads();  // the bits are visible; every thread has read its logits
  }
  if (scale != 1.f) scale_columns(row, s1, 0, V, scale);
  for (int32_t c = clo_lo + threadIdx.x; c < clo_hi; c += blockDim.x)
    if (entry_alive(view, c, row_sat)) shared_in_match = 1;
  const bool budgeted = ip[I_ONCE] && fp[F_BUDGET] > 0.f;
  if (budgeted) {  // entities said = set bits of the row's satisfied set, summed over the block
    int32_t said = 0;
    for (int64_t w = threadIdx.x; w < W; w += blockDim.x) said += popcount32(row_sat[w]);
    if (said) atomicAdd(&shared_said, said);
  }
  __syncthreads();  // the scaled row, in_match and the count are visible to every thread
  const bool in_match = shared_in_match != 0;
  const bool starts = ip[I_STARTS_IN_MATCH] || !in_match;
  const int32_t unsaid = budgeted ? ip[I_N_ENTITIES] - shared_said : 0;
  const float push = budget_urgency(fp, step[r], unsaid) * fp[F_FORCE];
  for (int32_t k = threadIdx.x; k < view.n_slots; k += blockDim.x) {
    const int64_t token = view.slot_row(k)[S_TOKEN];
    if (!in_vocab(token, V)) continue;
    const float val = slot_value(view, u, pc, k, row_sat, in_match, starts, fp[F_BIAS], fp[F_CONT]);
    if (val == -INFINITY) continue;
    scalar_t& out = row[token * s1];
    out = static_cast<scalar_t>(static_cast<float>(out) + s * val + push);
  }
  if (unsaid > 0) {  // end-of-text damped after the slots (it may be one)
    __syncthreads();
    if (threadIdx.x < MAX_EOS) {  // distinct ids (eos_to_damp): no two threads write the same logit
      const int64_t eos = eos_to_damp(ip, threadIdx.x, V);
      if (eos >= 0) {
        scalar_t& out = row[eos * s1];
        out = static_cast<scalar_t>(static_cast<float>(out) - fp[F_EOS_DAMP]);
      }
    }
  }
}

void focus_logits_cuda(at::Tensor logits, const at::Tensor& row_offsets, const at::Tensor& token_ids,
                       const at::Tensor& token_bias, const at::Tensor& alpha, const at::Tensor& decay,
                       const at::Tensor& step) {
  const int64_t B = logits.size(0), V = logits.size(1);
  if (B == 0) return;
  const c10::cuda::CUDAGuard guard(logits.device());
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, logits.get_device()));
  // Whether a row blends is only known on the device: every row gets the splits, and the extra
  // blocks of an unblended row exit at once.
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>((4 * sms + B - 1) / B, (V + kBlockCols - 1) / kBlockCols));
  const int64_t cols = ((V + splits - 1) / splits + 63) / 64 * 64;  // keeps 16-byte vectors aligned
  splits = (V + cols - 1) / cols;
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>(B));
  // The kernel reads the per-row and per-entry tensors as dense arrays: any strides are accepted and
  // made dense here (a no-op when already contiguous; the copies are stream-ordered like the launch).
  const auto ro = row_offsets.contiguous(), ids = token_ids.contiguous(), bias = token_bias.contiguous();
  const auto al = alpha.contiguous(), dc = decay.contiguous(), st = step.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "focus_logits_cuda", [&] {
    focus_logits_kernel<scalar_t><<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        logits.data_ptr<scalar_t>(), logits.stride(0), logits.stride(1), V, ro.data_ptr<int32_t>(),
        ids.data_ptr<int32_t>(), bias.data_ptr<float>(), al.data_ptr<float>(), dc.data_ptr<float>(),
        st.data_ptr<int32_t>(), cols);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void focus_state_cuda(at::Tensor logits, const c10::optional<at::Tensor>& last_tokens, const at::Tensor& prog,
                      at::Tensor node, at::Tensor sat, at::Tensor step, const at::Tensor& prog_f32,
                      const at::Tensor& prog_i32, const at::Tensor& node_table, const at::Tensor& slot_table,
                      const at::Tensor& closure, const at::Tensor& ents, const at::Tensor& tok_off,
                      const at::Tensor& tok_sym, const at::Tensor& byte_class, at::IntArrayRef limits, bool blend) {
  const int64_t B = logits.size(0);
  if (B == 0) return;
  TORCH_CHECK(!last_tokens.has_value() || (last_tokens->is_contiguous() && (last_tokens->scalar_type() == at::kInt ||
                                        last_tokens->scalar_type() == at::kLong)),
              "focus_state_cuda_: last_tokens must be contiguous int32 or int64");
  const c10::cuda::CUDAGuard guard(logits.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "focus_state_cuda", [&] {
    focus_state_kernel<scalar_t><<<static_cast<unsigned>(B), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        logits.data_ptr<scalar_t>(), logits.stride(0), logits.stride(1), logits.size(1),
        last_token_ids(last_tokens), prog.data_ptr<int32_t>(),
        node.data_ptr<int32_t>(), sat.data_ptr<int32_t>(), step.data_ptr<int32_t>(), sat.size(1),
        prog_f32.data_ptr<float>(), prog_i32.data_ptr<int32_t>(), node_table.data_ptr<int32_t>(),
        slot_table.data_ptr<int32_t>(), closure.data_ptr<int32_t>(), ents.data_ptr<int32_t>(),
        TokenView{tok_off.data_ptr<int32_t>(), tok_sym.data_ptr<int32_t>(), byte_class.data_ptr<int32_t>(),
                  tok_off.numel() - 1});
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

TORCH_LIBRARY_IMPL(focuskern, CUDA, m) {
  m.impl("focus_logits_cuda_", &focus_logits_cuda);
  m.impl("focus_state_cuda_", &focus_state_cuda);
}

}  // namespace focuskern
