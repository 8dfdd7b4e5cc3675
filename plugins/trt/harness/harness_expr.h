// A minimal IExprBuilder / IDimensionExpr for driving IPluginV3OneBuild::getOutputShapes outside TensorRT.
// Every expression carries its value (the harness knows all input dims); input dims are marked non-constant
// like TensorRT's runtime dims, builder constants are constant, and an operation is constant iff both operands
// are. TensorRT's public headers allow this only through the apiv::V* implementation classes, used here.
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

namespace tq::harness {

class Expr : public nvinfer1::IDimensionExpr {
 public:
  Expr(int64_t value, bool constant) : impl_(value, constant) { mImpl = &impl_; }
  ~Expr() noexcept override = default;
  int64_t value() const { return impl_.value; }
  bool constant() const { return impl_.constant; }

 private:
  struct Impl : nvinfer1::apiv::VDimensionExpr {
    Impl(int64_t v, bool c) : value(v), constant(c) {}
    bool isConstant() const override { return constant; }
    int64_t getConstantValue() const override {
      return constant ? value : std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override { return false; }
    int64_t value;
    bool constant;
  } impl_;
};

class ExprBuilder : public nvinfer1::IExprBuilder {
 public:
  ExprBuilder() : impl_(this) { mImpl = &impl_; }
  ~ExprBuilder() noexcept override = default;

  // A runtime (non-constant) dim with a known value, as TensorRT passes input dims.
  const Expr* input_dim(int64_t value) { return make(value, false); }

  static int64_t eval(const nvinfer1::IDimensionExpr* e) {
    const Expr* x = dynamic_cast<const Expr*>(e);
    if (x == nullptr) throw std::runtime_error("expression not made by this builder");
    return x->value();
  }

 private:
  const Expr* make(int64_t v, bool c) {
    owned_.push_back(std::make_unique<Expr>(v, c));
    return owned_.back().get();
  }

  struct Impl : nvinfer1::apiv::VExprBuilder {
    explicit Impl(ExprBuilder* owner) : owner(owner) {}
    const nvinfer1::IDimensionExpr* constant(int64_t value) override { return owner->make(value, true); }
    const nvinfer1::IDimensionExpr* operation(nvinfer1::DimensionOperation op, const nvinfer1::IDimensionExpr& a,
                                              const nvinfer1::IDimensionExpr& b) override {
      const Expr* x = dynamic_cast<const Expr*>(&a);
      const Expr* y = dynamic_cast<const Expr*>(&b);
      if (x == nullptr || y == nullptr) return nullptr;
      const int64_t u = x->value();
      const int64_t v = y->value();
      int64_t r = 0;
      using Op = nvinfer1::DimensionOperation;
      switch (op) {
        case Op::kSUM: r = u + v; break;
        case Op::kPROD: r = u * v; break;
        case Op::kMAX: r = u > v ? u : v; break;
        case Op::kMIN: r = u < v ? u : v; break;
        case Op::kSUB: r = u - v; break;
        case Op::kEQUAL: r = u == v; break;
        case Op::kLESS: r = u < v; break;
        case Op::kFLOOR_DIV: r = v == 0 ? 0 : (u / v - ((u % v != 0) && ((u < 0) != (v < 0)))); break;
        case Op::kCEIL_DIV: r = v == 0 ? 0 : (u / v + ((u % v != 0) && ((u < 0) == (v < 0)))); break;
        default: return nullptr;
      }
      return owner->make(r, x->constant() && y->constant());
    }
    const nvinfer1::IDimensionExpr* declareSizeTensor(int32_t, const nvinfer1::IDimensionExpr&,
                                                      const nvinfer1::IDimensionExpr&) override {
      return nullptr;  // our plugins have no size-tensor outputs
    }
    ExprBuilder* owner;
  } impl_;
  std::vector<std::unique_ptr<Expr>> owned_;
};

}  // namespace tq::harness
