// The fused kernels' entry points (rnn.cpp, lstm.cpp, gru.cpp, step.cpp), declared once for the
// files that call them: register.cpp (torch.ops.rnnlab.*) and layer_train.cpp (the C++ nodes).
// Argument order as in register.cpp's schemas.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace rnnlab {
using at::Tensor;

Tensor rnn_fwd(const Tensor&, const c10::optional<Tensor>&, const Tensor&, const Tensor&,
               const Tensor&, const c10::optional<Tensor>&, const c10::optional<Tensor>&, bool, bool,
               const c10::optional<Tensor>&);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_bwd(const Tensor&, const Tensor&,
    const c10::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, bool,
    bool, bool, const c10::optional<Tensor>&, const c10::optional<Tensor>&);
std::tuple<Tensor, Tensor, Tensor> lstm_fwd(const Tensor&, const c10::optional<Tensor>&,
    const Tensor&, const Tensor&, const Tensor&, const Tensor&, const c10::optional<Tensor>&,
    const c10::optional<Tensor>&, const c10::optional<Tensor>&, bool, const c10::optional<Tensor>&);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_bwd(
    const c10::optional<Tensor>&, const c10::optional<Tensor>&, const Tensor&,
    const c10::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const c10::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, bool, bool,
    const c10::optional<Tensor>&, const c10::optional<Tensor>&);
std::tuple<Tensor, Tensor> gru_fwd(const Tensor&, const c10::optional<Tensor>&, const Tensor&,
    const Tensor&, const Tensor&, const c10::optional<Tensor>&, const c10::optional<Tensor>&, bool,
    bool, bool, const c10::optional<Tensor>&);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_bwd(const Tensor&, const Tensor&,
    const c10::optional<Tensor>&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, bool, bool, bool, const c10::optional<Tensor>&, const c10::optional<Tensor>&);
Tensor rnn_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                const c10::optional<Tensor>&, const c10::optional<Tensor>&, bool);
std::tuple<Tensor, Tensor> lstm_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
    const Tensor&, const c10::optional<Tensor>&, const c10::optional<Tensor>&,
    const c10::optional<Tensor>&);
Tensor gru_step(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                const c10::optional<Tensor>&, const c10::optional<Tensor>&, bool);

}  // namespace rnnlab
