#include <algorithm>
#include <cstring>
#include <map>

#include "bindery/communicator.h"
#include "bindery/error.h"
#include "runtime/cpu/kernels.h"
#include "runtime/engine_impl.h"

namespace bindery {

struct ExecutionContext::Impl {
  Engine* engine = nullptr;
  std::map<int, Weights> bound;          // input tensor -> caller view
  std::map<int, Dims> input_shapes;      // input tensor -> concrete dims
  std::vector<TensorDesc> descs;         // per tensor, concrete, of the last run
  std::vector<HostTensor> buffers;       // per activation tensor, reused while large enough
  std::vector<void*> data;               // per tensor, of the last run
  cpu::KvCache kv_cache;                 // attention layers' keys and values, across runs
  Communicator* communicator = nullptr;  // borrowed; runs collective layers
  uint64_t weights_version = 0;          // of the last run
  std::unique_ptr<DeviceRunner> device;  // CUDA engines: runs the graph on the GPU
  bool ran = false;
  std::map<int, TokenSelection> selections;      // output tensor -> selection after each run
  std::map<int, std::vector<int32_t>> selected;  // CPU contexts: the last run's ids

  const Graph& graph() const { return engine->impl_->meta.graph; }
  int input_index(const std::string& name) const {
    for (int t : graph().inputs)
      if (graph().tensors[t].name == name) return t;
    std::string names;
    for (int t : graph().inputs)
      names += (names.empty() ? "'" : ", '") + graph().tensors[t].name + "'";
    throw Error(ErrorCode::kNOT_FOUND,
                "no input named '" + name + "'; the engine's inputs are " + names);
  }
  int output_index(const std::string& name) const {
    for (int t : graph().outputs)
      if (graph().tensors[t].name == name) return t;
    throw Error(ErrorCode::kNOT_FOUND, "no output named '" + name + "'");
  }
  void run();
  void select_tokens();
  void run_collective(const GraphNode& n, const cpu::TensorRef& in, const cpu::TensorRef& out);
  Weights view_of(int t) const { return Weights(descs[t].dtype, descs[t].dims, data[t]); }
};

ExecutionContext::ExecutionContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ExecutionContext::~ExecutionContext() = default;

std::unique_ptr<ExecutionContext> Engine::create_execution_context() {
  auto impl = std::make_unique<ExecutionContext::Impl>();
  impl->engine = this;
  if (impl_->device_slots)
    impl->device = make_device_runner(impl_->device, impl_->meta, *impl_->device_slots);
  return std::unique_ptr<ExecutionContext>(new ExecutionContext(std::move(impl)));
}

const Engine& ExecutionContext::engine() const { return *impl_->engine; }

void ExecutionContext::set_input_shape(const std::string& name, const Dims& dims) {
  const int t = impl_->input_index(name);
  const Dims& declared = impl_->graph().tensors[t].desc.dims;
  bool ok = declared.size() == dims.size();
  for (size_t i = 0; ok && i < dims.size(); ++i)
    ok = dims[i] >= 0 && (declared[i] == kDYNAMIC || declared[i] == dims[i]);
  check(ok, ErrorCode::kSHAPE_MISMATCH,
        "input '" + name + "': shape " + to_string(dims) + " does not fit the declared " +
            to_string(declared));
  impl_->input_shapes[t] = dims;
}

void ExecutionContext::set_input(const std::string& name, const Weights& view) {
  const int t = impl_->input_index(name);
  const TensorDesc& declared = impl_->graph().tensors[t].desc;
  check(view.dtype == declared.dtype, ErrorCode::kDTYPE_MISMATCH,
        "input '" + name + "': expected " + std::string(dtype_name(declared.dtype)) + ", got " +
            describe(view));
  check(view.on_host(), ErrorCode::kDEVICE,
        "input '" + name + "' must be host memory, got " + describe(view));
  set_input_shape(name, view.shape);
  impl_->bound[t] = view;
}

void ExecutionContext::Impl::run() {
  Engine::Impl& e = *engine->impl_;
  const std::shared_lock<std::shared_mutex> weights(e.weights_mutex);
  weights_version = e.version.load();
  const auto missing = e.empty_slots();
  check(missing.empty(), ErrorCode::kMISSING_WEIGHTS,
        "the engine still misses weights for " + std::to_string(missing.size()) +
            " slot(s), e.g. '" + (missing.empty() ? "" : missing[0]) +
            "': refit it before running");
  const Graph& g = graph();
  if (device) {
    for (int t : g.inputs)
      check(bound.count(t), ErrorCode::kINVALID_ARGUMENT,
            "input '" + g.tensors[t].name + "' is not bound (set_input)");
    device->run(bound);
    ran = true;
    return;
  }
  descs.assign(g.tensors.size(), {});
  data.assign(g.tensors.size(), nullptr);
  buffers.resize(g.tensors.size());
  for (int t : g.inputs) {
    auto it = bound.find(t);
    check(it != bound.end(), ErrorCode::kINVALID_ARGUMENT,
          "input '" + g.tensors[t].name + "' is not bound (set_input)");
    descs[t] = {it->second.dtype, it->second.shape};
    data[t] = const_cast<void*>(it->second.values);
  }
  for (size_t t = 0; t < g.tensors.size(); ++t)
    if (g.tensors[t].kind == TensorKind::kWEIGHT) {
      descs[t] = e.meta.slots[g.tensors[t].slot].desc;
      data[t] = e.slot_ptr(g.tensors[t].slot);
    }
  std::vector<cpu::TensorRef> in, out;
  std::vector<TensorDesc> in_descs;
  for (const GraphNode& n : g.nodes) {
    in.clear();
    in_descs.clear();
    for (int t : n.inputs) {
      in_descs.push_back(t < 0 ? kABSENT_DESC : descs[t]);
      in.push_back(t < 0 ? cpu::TensorRef{}
                         : cpu::TensorRef{descs[t].dtype, descs[t].dims, data[t]});
    }
    std::vector<TensorDesc> od;
    try {
      od = infer_outputs(n.type, n.params, in_descs);
    } catch (const Error& err) {
      throw Error(ErrorCode::kSHAPE_MISMATCH, "node '" + n.name + "': " + err.what());
    }
    out.clear();
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      const int t = n.outputs[k];
      descs[t] = od[k];
      HostTensor& b = buffers[t];
      const int64_t need = dtype_bytes(od[k].dtype, volume(od[k].dims));
      if (b.empty() || b.size_bytes() < need)
        b = HostTensor(DataType::kUINT8, {std::max<int64_t>(need, 1)});
      data[t] = b.data();
      out.push_back({od[k].dtype, od[k].dims, data[t]});
    }
    if (n.type == LayerType::kALL_REDUCE || n.type == LayerType::kALL_GATHER)
      run_collective(n, in[0], out[0]);
    else
      cpu::run_node(n, in, out, &kv_cache);
  }
  select_tokens();
  ran = true;
}

void ExecutionContext::Impl::select_tokens() {
  selected.clear();
  for (const auto& [t, s] : selections) {
    const Weights logits = view_of(t);
    const std::string what = "token selection from output '" + graph().tensors[t].name + "'";
    check(logits.dtype == DataType::kFLOAT && !logits.shape.empty(), ErrorCode::kDTYPE_MISMATCH,
          what + ": expected f32 logits [rows, vocab], got " + describe(logits));
    const int64_t vocab = logits.shape.back(), rows = vocab ? volume(logits.shape) / vocab : 0;
    check_token_selection(s, rows, what);
    std::vector<int32_t>& ids = selected[t];
    for (int64_t r = 0; r < rows; ++r)
      ids.push_back(select_token({logits.data<float>() + r * vocab, static_cast<size_t>(vocab)}, s,
                                 selection_uniform(s, r)));
  }
}

void ExecutionContext::Impl::run_collective(const GraphNode& n, const cpu::TensorRef& in,
                                            const cpu::TensorRef& out) {
  const auto& p = std::get<CollectiveParams>(n.params);
  check(communicator != nullptr, ErrorCode::kINVALID_ARGUMENT,
        "layer '" + n.name + "' is a collective of a " + std::to_string(p.group_size) +
            "-rank tensor-parallel group: this engine is one rank of a split model; run its "
            "ranks together (TensorParallelExecutor) or give the context a Communicator");
  check(communicator->size() == p.group_size, ErrorCode::kINVALID_ARGUMENT,
        "layer '" + n.name + "' is a collective of a " + std::to_string(p.group_size) +
            "-rank group, but the context's communicator has " +
            std::to_string(communicator->size()) + " ranks");
  const auto* x = static_cast<const float*>(in.data);
  auto* y = static_cast<float*>(out.data);
  if (n.type == LayerType::kALL_REDUCE) {
    communicator->all_reduce_sum(x, y, volume(in.dims));
  } else {
    const int axis = p.axis < 0 ? p.axis + static_cast<int>(in.dims.size()) : p.axis;
    communicator->all_gather(x, in.dims, axis, y);
  }
}

void ExecutionContext::execute() { impl_->run(); }

uint64_t ExecutionContext::last_run_weights_version() const {
  check(impl_->ran, ErrorCode::kINVALID_ARGUMENT, "no run yet");
  return impl_->weights_version;
}

void ExecutionContext::set_communicator(Communicator* communicator) {
  impl_->communicator = communicator;
}
Communicator* ExecutionContext::communicator() const { return impl_->communicator; }

void ExecutionContext::reset_kv_cache() {
  if (impl_->device) return impl_->device->reset_kv_cache();
  impl_->kv_cache.reset();
}
void ExecutionContext::reset_sequence(int64_t seq_id) {
  if (impl_->device) return impl_->device->reset_sequence(seq_id);
  impl_->kv_cache.reset_sequence(seq_id);
}
int64_t ExecutionContext::sequence_length(int64_t seq_id) const {
  if (impl_->device) return impl_->device->sequence_length(seq_id);
  return impl_->kv_cache.length(seq_id);
}

void ExecutionContext::enqueue(Stream& stream) {
  stream.enqueue_host([impl = impl_.get()] { impl->run(); });
}

Weights ExecutionContext::output(const std::string& name) const {
  check(impl_->ran, ErrorCode::kINVALID_ARGUMENT, "output '" + name + "' read before any run");
  const int t = impl_->output_index(name);
  return impl_->device ? impl_->device->output(t) : impl_->view_of(t);
}

void ExecutionContext::set_token_selection(const std::string& name,
                                           std::optional<TokenSelection> selection) {
  const int t = impl_->output_index(name);
  if (selection)
    check_token_selection(*selection, -1, "token selection from output '" + name + "'");
  if (impl_->device) impl_->device->set_token_selection(t, selection);
  if (selection)
    impl_->selections[t] = std::move(*selection);
  else
    impl_->selections.erase(t);
}

std::span<const int32_t> ExecutionContext::selected_tokens(const std::string& name) const {
  const int t = impl_->output_index(name);
  check(impl_->ran, ErrorCode::kINVALID_ARGUMENT,
        "tokens of output '" + name + "' read before any run");
  if (impl_->device) return impl_->device->selected_tokens(t);
  auto it = impl_->selected.find(t);
  check(it != impl_->selected.end(), ErrorCode::kINVALID_ARGUMENT,
        "the last run selected no tokens from output '" + name + "' (set_token_selection)");
  return it->second;
}

Weights ExecutionContext::debug_tensor(const std::string& name) const {
  check(impl_->ran, ErrorCode::kINVALID_ARGUMENT,
        "debug tensor '" + name + "' read before any run");
  check(!impl_->device, ErrorCode::kUNSUPPORTED,
        "debug tensors are not kept by CUDA contexts yet (run the plan on the CPU to see them)");
  const Graph& g = impl_->graph();
  for (size_t t = 0; t < g.tensors.size(); ++t)
    if (g.tensors[t].is_debug && g.tensors[t].name == name)
      return impl_->view_of(static_cast<int>(t));
  throw Error(ErrorCode::kNOT_FOUND,
              "no debug tensor named '" + name + "' (mark it with Network::mark_debug)");
}

std::vector<std::string> ExecutionContext::debug_tensor_names() const {
  std::vector<std::string> names;
  for (const GraphTensor& t : impl_->graph().tensors)
    if (t.is_debug) names.push_back(t.name);
  return names;
}

}  // namespace bindery
