// nmt's fused additive-attention scores for CPUs (built and loaded by nmt/model/fused.py).
//
//   NmtAdditiveScores:     scores[b, t, s] = sum_u v[u] * tanh(q[b, t, u] + k[b, s, u])
//   NmtAdditiveScoresGrad: dq, dk, dv of those scores given ds [B, T, S]
//
// TensorFlow's own ops materialise the [B, T, S, U] sum and its tanh and stream them through
// memory some eleven times (forward and backward); here each (b, t, s) row of U values lives
// in registers: the forward is one tanh and a dot product, the backward recomputes the tanh.
// Work is sharded over sentences (b) on the op's intra-op threads; every shard writes its own
// rows, and dv is summed over b in order afterwards, so results do not depend on the threads.
#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using Row = Eigen::Array<float, Eigen::Dynamic, 1>;
using ConstRowMap = Eigen::Map<const Row>;
using RowMap = Eigen::Map<Row>;

void CheckShapes(OpKernelContext* ctx, const Tensor& q, const Tensor& k, const Tensor& v) {
  OP_REQUIRES(ctx, q.dims() == 3 && k.dims() == 3 && v.dims() == 1,
              tensorflow::errors::InvalidArgument("expected q [B, T, U], k [B, S, U] and v [U]"));
  OP_REQUIRES(ctx, q.dim_size(0) == k.dim_size(0) && q.dim_size(2) == k.dim_size(2) && v.dim_size(0) == q.dim_size(2),
              tensorflow::errors::InvalidArgument("q, k and v disagree on B or U"));
}

void Shard(OpKernelContext* ctx, int64_t units, int64_t cost_per_unit, std::function<void(int64_t, int64_t)> fn) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  tensorflow::Shard(workers->num_threads, workers->workers, units, cost_per_unit, std::move(fn));
}

class AdditiveScoresOp : public OpKernel {
 public:
  explicit AdditiveScoresOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &q = ctx->input(0), &k = ctx->input(1), &v = ctx->input(2);
    CheckShapes(ctx, q, k, v);
    if (!ctx->status().ok()) return;
    const int64_t B = q.dim_size(0), T = q.dim_size(1), S = k.dim_size(1), U = q.dim_size(2);
    Tensor* scores = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, T, S}), &scores));
    const float *qp = q.flat<float>().data(), *kp = k.flat<float>().data();
    float* out = scores->flat<float>().data();
    const ConstRowMap vr(v.flat<float>().data(), U);
    Shard(ctx, B * T, S * U * 20, [&](int64_t begin, int64_t end) {
      for (int64_t bt = begin; bt < end; ++bt) {
        const ConstRowMap qr(qp + bt * U, U);
        const float* kb = kp + (bt / T) * S * U;
        for (int64_t s = 0; s < S; ++s) out[bt * S + s] = ((qr + ConstRowMap(kb + s * U, U)).tanh() * vr).sum();
      }
    });
  }
};

class AdditiveScoresGradOp : public OpKernel {
 public:
  explicit AdditiveScoresGradOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &q = ctx->input(0), &k = ctx->input(1), &v = ctx->input(2), &ds = ctx->input(3);
    CheckShapes(ctx, q, k, v);
    if (!ctx->status().ok()) return;
    const int64_t B = q.dim_size(0), T = q.dim_size(1), S = k.dim_size(1), U = q.dim_size(2);
    OP_REQUIRES(ctx, ds.dims() == 3 && ds.dim_size(0) == B && ds.dim_size(1) == T && ds.dim_size(2) == S,
                tensorflow::errors::InvalidArgument("expected ds [B, T, S] to match q and k"));
    Tensor *dq = nullptr, *dk = nullptr, *dv = nullptr, dv_rows;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, q.shape(), &dq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, k.shape(), &dk));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, v.shape(), &dv));
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({B, U}), &dv_rows));
    const float *qp = q.flat<float>().data(), *kp = k.flat<float>().data(), *gp = ds.flat<float>().data();
    float *dqp = dq->flat<float>().data(), *dkp = dk->flat<float>().data(), *dvb = dv_rows.flat<float>().data();
    const ConstRowMap vr(v.flat<float>().data(), U);
    Shard(ctx, B, T * S * U * 30, [&](int64_t begin, int64_t end) {
      Row y(U), g(U), dq_row(U);
      for (int64_t b = begin; b < end; ++b) {
        RowMap dv_b(dvb + b * U, U);
        dv_b.setZero();
        RowMap(dkp + b * S * U, S * U).setZero();
        for (int64_t t = 0; t < T; ++t) {
          const int64_t bt = b * T + t;
          const ConstRowMap qr(qp + bt * U, U);
          dq_row.setZero();
          for (int64_t s = 0; s < S; ++s) {
            const float d = gp[bt * S + s];
            if (d == 0.0f) continue;  // masked (or unused) positions add nothing
            y = (qr + ConstRowMap(kp + (b * S + s) * U, U)).tanh();
            dv_b += d * y;
            g = d * vr * (1.0f - y * y);
            dq_row += g;
            RowMap(dkp + (b * S + s) * U, U) += g;
          }
          RowMap(dqp + bt * U, U) = dq_row;
        }
      }
    });
    RowMap dv_sum(dv->flat<float>().data(), U);
    dv_sum.setZero();
    for (int64_t b = 0; b < B; ++b) dv_sum += ConstRowMap(dvb + b * U, U);
  }
};

}  // namespace

REGISTER_OP("NmtAdditiveScores")
    .Input("q: float")
    .Input("k: float")
    .Input("v: float")
    .Output("scores: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->MakeShape({c->Dim(c->input(0), 0), c->Dim(c->input(0), 1), c->Dim(c->input(1), 1)}));
      return tensorflow::OkStatus();
    });

REGISTER_OP("NmtAdditiveScoresGrad")
    .Input("q: float")
    .Input("k: float")
    .Input("v: float")
    .Input("ds: float")
    .Output("dq: float")
    .Output("dk: float")
    .Output("dv: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      for (int i = 0; i < 3; ++i) c->set_output(i, c->input(i));
      return tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("NmtAdditiveScores").Device(tensorflow::DEVICE_CPU), AdditiveScoresOp);
REGISTER_KERNEL_BUILDER(Name("NmtAdditiveScoresGrad").Device(tensorflow::DEVICE_CPU), AdditiveScoresGradOp);
