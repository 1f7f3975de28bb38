// The activation that may follow batch norm, fused into its passes (both back
// ends; the nets fuse BN + ReLU and BN + LeakyReLU): the forward writes
// act(bn(x)) in its normalising pass, and the backward takes the gradient of
// act's output and act's output and applies act' as it reads them, so neither
// direction makes a separate pass over the tensor for the activation.
//
// bn_act and bn_act_grad are, operation for operation, the activation kernels'
// own forward and backward (kernels/*/activations), so a fused op gives the
// two unfused ops' results bit for bit. Header-only, host and device.
#pragma once
#include <stdexcept>

#include "host_device.h"

namespace gannf {

enum class BnAct : int { none = 0, relu = 1, leaky_relu = 2 };

// act(v): relu: v > 0 ? v : 0; leaky_relu: v > 0 ? v : v * slope.
template <BnAct A, class T>
GANNF_HD T bn_act(T v, [[maybe_unused]] T slope) {
  if constexpr (A == BnAct::relu)
    return v > T(0) ? v : T(0);
  else if constexpr (A == BnAct::leaky_relu)
    return v > T(0) ? v : v * slope;
  else
    return v;
}

// The gradient of act's input from the gradient g of its output and the
// output itself: relu' = out > 0, leaky' = out > 0 ? 1 : slope (slope > 0).
template <BnAct A, class T>
GANNF_HD T bn_act_grad(T g, [[maybe_unused]] T out, [[maybe_unused]] T slope) {
  if constexpr (A == BnAct::relu)
    return out > T(0) ? g : T(0);
  else if constexpr (A == BnAct::leaky_relu)
    return out > T(0) ? g : mul_rn(g, slope);  // as stored by the unfused kernel
  else
    return g;
}

// A fused backward needs the activation's output (act_out; the forward passes
// its own output); a leaky slope must be positive for out > 0 to tell the
// two sides apart.
inline void check_bn_act(BnAct act, const void* act_out, double slope) {
  if (act != BnAct::none && act != BnAct::relu && act != BnAct::leaky_relu)
    throw std::invalid_argument("batchnorm2d: unknown fused activation");
  if (act != BnAct::none && !act_out)
    throw std::invalid_argument("batchnorm2d backward: a fused activation needs its output");
  if (act == BnAct::leaky_relu && !(slope > 0))
    throw std::invalid_argument("batchnorm2d: a fused LeakyReLU needs a positive slope");
}

}  // namespace gannf
