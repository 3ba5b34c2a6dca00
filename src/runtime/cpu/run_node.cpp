// run_node: checks a node's concrete inputs and outputs, then dispatches to its kernel.
//
// Kernels index memory from dims alone, so a wrong shape would read or write out of bounds.
// Before any kernel runs, the inputs' dtypes are checked (kUNSUPPORTED for combinations no
// kernel handles), shape inference is re-run on the concrete dims, and the outputs the caller
// allocated must match it exactly. The cost is a few small vectors per node; the messages of
// the checks are only built when one fails.

#include "bindery/error.h"
#include "runtime/cpu/kernel_common.h"

namespace bindery::cpu {

namespace {

bool computes_floats(LayerType type) {
  switch (type) {
    case LayerType::kMATMUL:
    case LayerType::kELEMENTWISE:
    case LayerType::kUNARY:
    case LayerType::kSOFTMAX:
    case LayerType::kREDUCE:
    case LayerType::kRMSNORM:
    case LayerType::kLAYERNORM:
    case LayerType::kCONVOLUTION:
    case LayerType::kBATCHNORM:
    case LayerType::kPOOLING:
    case LayerType::kMOE: return true;
    default: return false;
  }
}

std::string desc_text(const TensorRef& t) { return to_string(TensorDesc{t.dtype, t.dims}); }

void check_dtypes(const GraphNode& node, std::span<const TensorRef> inputs) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorRef& t = inputs[i];
    if (t.data == nullptr && is_optional_input(node.type, i)) continue;
    const bool index_input = node.type == LayerType::kGATHER && i == 1;
    bool ok = t.dtype != DataType::kINT4;
    if (computes_floats(node.type)) ok = is_floating(t.dtype);
    if (index_input) ok = t.dtype == DataType::kINT32 || t.dtype == DataType::kINT64;
    if (node.type == LayerType::kCONCAT) ok = ok && t.dtype == inputs[0].dtype;
    if (!ok)
      detail::unsupported(
          node, "no kernel for input " + std::to_string(i) + " of dtype " +
                    std::string(dtype_name(t.dtype)) +
                    (node.type == LayerType::kCONCAT
                         ? " (input 0 is " + std::string(dtype_name(inputs[0].dtype)) + ")"
                         : ""));
  }
}

}  // namespace

void run_node(const GraphNode& node, std::span<const TensorRef> inputs,
              std::span<const TensorRef> outputs, KvCache* kv_cache) {
  using detail::node_label;
  if (node.type == LayerType::kCONSTANT)
    detail::unsupported(node, "constants are weights bound by the engine, not executed");
  check_dtypes(node, inputs);

  std::vector<TensorDesc> descs;
  descs.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorRef& t = inputs[i];
    if (t.data == nullptr && is_optional_input(node.type, i)) {
      descs.push_back(kABSENT_DESC);
      continue;
    }
    if (is_dynamic(t.dims))
      throw Error(ErrorCode::kINVALID_ARGUMENT, node_label(node) + ": input " + std::to_string(i) +
                                                    " " + desc_text(t) +
                                                    " has dynamic dims at run time");
    if (t.data == nullptr && volume(t.dims) != 0)
      throw Error(ErrorCode::kINVALID_ARGUMENT, node_label(node) + ": input " + std::to_string(i) +
                                                    " " + desc_text(t) + " has no data");
    descs.push_back({t.dtype, t.dims});
  }
  std::vector<TensorDesc> expected;
  try {
    expected = infer_outputs(node.type, node.params, descs);
  } catch (const Error& e) {
    throw Error(ErrorCode::kSHAPE_MISMATCH, node_label(node) + ": " + e.what());
  }
  if (outputs.size() != expected.size())
    throw Error(ErrorCode::kINVALID_ARGUMENT,
                node_label(node) + ": expected " + std::to_string(expected.size()) +
                    " output(s), got " + std::to_string(outputs.size()));
  for (size_t i = 0; i < outputs.size(); ++i) {
    const TensorRef& o = outputs[i];
    if (o.dims != expected[i].dims)
      throw Error(ErrorCode::kSHAPE_MISMATCH, node_label(node) + ": output " + std::to_string(i) +
                                                  " is " + desc_text(o) + ", expected " +
                                                  to_string(expected[i]));
    if (o.dtype != expected[i].dtype)
      throw Error(ErrorCode::kDTYPE_MISMATCH, node_label(node) + ": output " + std::to_string(i) +
                                                  " is " + desc_text(o) + ", expected " +
                                                  to_string(expected[i]));
    if (o.data == nullptr && volume(o.dims) != 0)
      throw Error(ErrorCode::kINVALID_ARGUMENT, node_label(node) + ": output " + std::to_string(i) +
                                                    " " + desc_text(o) + " has no data");
  }

  const TensorRef& out = outputs[0];
  switch (node.type) {
    case LayerType::kCONSTANT: break;
    case LayerType::kMATMUL: return detail::run_matmul(node, inputs, out);
    case LayerType::kELEMENTWISE: return detail::run_elementwise(node, inputs, out);
    case LayerType::kUNARY: return detail::run_unary(node, inputs, out);
    case LayerType::kSOFTMAX: return detail::run_softmax(node, inputs, out);
    case LayerType::kREDUCE: return detail::run_reduce(node, inputs, out);
    case LayerType::kRMSNORM: return detail::run_rmsnorm(node, inputs, out);
    case LayerType::kLAYERNORM: return detail::run_layernorm(node, inputs, out);
    case LayerType::kGATHER: return detail::run_gather(node, inputs, out);
    case LayerType::kRESHAPE: return detail::run_reshape(node, inputs, out);
    case LayerType::kTRANSPOSE: return detail::run_transpose(node, inputs, out);
    case LayerType::kCONCAT: return detail::run_concat(node, inputs, out);
    case LayerType::kSLICE: return detail::run_slice(node, inputs, out);
    case LayerType::kCAST: return detail::run_cast(node, inputs, out);
    case LayerType::kCONVOLUTION: return detail::run_conv(node, inputs, out);
    case LayerType::kBATCHNORM: return detail::run_batchnorm(node, inputs, out);
    case LayerType::kPOOLING: return detail::run_pooling(node, inputs, out);
    case LayerType::kROTARY: return detail::run_rotary(node, inputs, out);
    case LayerType::kATTENTION:
      if (!kv_cache) detail::unsupported(node, "attention runs only in an execution context");
      return detail::run_attention(node, inputs, out, *kv_cache);
    case LayerType::kMOE: return detail::run_moe(node, inputs, out);
    case LayerType::kMATMUL_INT4: return detail::run_matmul_int4(node, inputs, out);
    case LayerType::kALL_REDUCE:
    case LayerType::kALL_GATHER:
      detail::unsupported(node, "collectives run only in an execution context with a communicator");
  }
  detail::unsupported(node, "unknown layer type");
}

}  // namespace bindery::cpu
