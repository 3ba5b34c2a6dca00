#include <algorithm>
#include <chrono>
#include <cstring>

#include "bindery/error.h"
#include "bindery/logging.h"
#include "core/hash.h"
#include "core/mapped_file.h"
#include "core/parallel.h"
#include "runtime/engine_impl.h"

namespace bindery {

std::vector<std::string> Engine::Impl::empty_slots() const {
  std::vector<std::string> names;
  for (size_t i = 0; i < slot_filled.size(); ++i)
    if (!slot_filled[i]) names.push_back(meta.slots[i].name);
  return names;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

Weights Engine::Impl::slot_weights(int i) const {
  const Slot& s = meta.slots[i];
  if (on_device()) return Weights(s.desc.dtype, s.desc.dims, device_slots->slot_ptr(i), device);
  return Weights(s.desc.dtype, s.desc.dims, slot_ptr(i));
}

HostTensor Engine::Impl::slot_to_host(int i) const {
  if (!on_device()) return HostTensor::copy_of(slot_weights(i));
  const Slot& s = meta.slots[i];
  HostTensor t(s.desc.dtype, s.desc.dims);
  device_slots->download(i, t.data());
  return t;
}

// The slots go straight from the plan (its mapping or the builder's blob) to the device,
// staged through pinned buffers by many threads: no host copy of the weights is kept.
void Engine::Impl::upload(const Plan& plan) {
  const auto start = std::chrono::steady_clock::now();
  device_slots = make_device_slots(device, meta);
  device_slots->zero_all();  // padding and empty slots read as zeros, as on the host
  const auto allocated = std::chrono::steady_clock::now();
  std::vector<DeviceCopy> copies;
  for (size_t i = 0; i < meta.slots.size(); ++i)
    if (const std::byte* src = plan.slot_data(static_cast<int>(i))) {
      copies.push_back(DeviceCopy::contiguous(device_slots->slot_ptr(static_cast<int>(i)), src,
                                              meta.slots[i].size_bytes));
      slot_filled[i] = true;
    }
  device_slots->copy(copies, "copying the engine's weights to " + device.to_string());
  if (log_level() <= LogLevel::kINFO) {
    int64_t bytes = 0;
    for (const DeviceCopy& c : copies) bytes += c.bytes();
    const auto seconds = [](auto a, auto b) {
      return std::chrono::duration<double>(b - a).count();
    };
    const double copy_s = seconds(allocated, std::chrono::steady_clock::now());
    log_info("engine on " + device.to_string() + ": " + std::to_string(meta.blob_size) +
             " bytes allocated and cleared in " + std::to_string(seconds(start, allocated)) +
             " s; " + std::to_string(bytes) + " bytes copied in " + std::to_string(copy_s) +
             " s (" + std::to_string(copy_s > 0 ? static_cast<double>(bytes) / copy_s / 1e9 : 0) +
             " GB/s)");
  }
}

std::unique_ptr<Engine> Engine::create(Plan plan, Device device) {
  auto impl = std::make_unique<Impl>();
  impl->device = device;
  impl->meta = plan.metadata();
  impl->version = impl->meta.weights_version;
  const PlanMetadata& m = impl->meta;
  check(m.blob_size >= 0, ErrorCode::kCORRUPT_FILE, "plan blob size is negative");
  for (const Slot& s : m.slots)
    check(s.offset >= 0 && s.size_bytes >= 0 && s.offset + s.size_bytes <= m.blob_size,
          ErrorCode::kCORRUPT_FILE, "slot '" + s.name + "' lies outside the weight blob");
  impl->slot_filled.assign(m.slots.size(), false);
  for (const SourceWeight& sw : m.sources)
    if (sw.identical_hash) impl->source_hashes[sw.name] = *sw.identical_hash;
  if (!device.is_cpu()) {
    impl->upload(plan);
    return std::unique_ptr<Engine>(new Engine(std::move(impl)));
  }
  // Slots get memory of their own so a refit can rewrite them while the plan's mapping is
  // left untouched. Filled in one parallel copy; only the bytes no slot holds are zeroed
  // (alignment padding, slots a stripped plan left empty), so saved plans stay deterministic.
  impl->arena = HostTensor(DataType::kUINT8, {std::max<int64_t>(m.blob_size, 1)});
  auto* arena = static_cast<std::byte*>(impl->arena.data());
  std::vector<CopyTask> copies;
  std::vector<std::pair<int64_t, int64_t>> held;  // [begin, end) of the slots' bytes
  for (size_t i = 0; i < m.slots.size(); ++i) {
    const Slot& s = m.slots[i];
    if (const std::byte* src = plan.slot_data(static_cast<int>(i))) {
      copies.push_back({arena + s.offset, src, s.size_bytes});
      held.emplace_back(s.offset, s.offset + s.size_bytes);
      impl->slot_filled[i] = true;
    }
  }
  std::sort(held.begin(), held.end());
  int64_t at = 0;
  for (const auto& [begin, end] : held) {
    if (begin > at) std::memset(arena + at, 0, static_cast<size_t>(begin - at));
    at = std::max(at, end);
  }
  if (impl->arena.size_bytes() > at)
    std::memset(arena + at, 0, static_cast<size_t>(impl->arena.size_bytes() - at));
  parallel_memcpy(copies);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

std::unique_ptr<Engine> Engine::load(const std::string& plan_path, Device device) {
  return create(Plan::load(plan_path), device);
}

Device Engine::device() const { return impl_->device; }
const PlanMetadata& Engine::metadata() const { return impl_->meta; }

std::vector<TensorInfo> Engine::inputs() const {
  std::vector<TensorInfo> v;
  for (int t : impl_->meta.graph.inputs)
    v.push_back({impl_->meta.graph.tensors[t].name, impl_->meta.graph.tensors[t].desc});
  return v;
}

std::vector<TensorInfo> Engine::outputs() const {
  std::vector<TensorInfo> v;
  for (int t : impl_->meta.graph.outputs)
    v.push_back({impl_->meta.graph.tensors[t].name, impl_->meta.graph.tensors[t].desc});
  return v;
}

bool Engine::is_refittable() const {
  for (const SourceWeight& s : impl_->meta.sources)
    if (s.refittable) return true;
  return false;
}

bool Engine::weights_complete() const { return impl_->empty_slots().empty(); }
uint64_t Engine::weights_version() const { return impl_->version.load(); }

uint64_t Engine::slot_checksum(int i) const {
  check(i >= 0 && i < static_cast<int>(impl_->meta.slots.size()), ErrorCode::kNOT_FOUND,
        "slot " + std::to_string(i) + " does not exist");
  if (impl_->on_device()) {
    const HostTensor t = impl_->slot_to_host(i);
    return hash64(t.data(), static_cast<size_t>(t.size_bytes()));
  }
  return hash64(impl_->slot_ptr(i), static_cast<size_t>(impl_->meta.slots[i].size_bytes));
}

Weights Engine::slot_view(int i) const {
  check(i >= 0 && i < static_cast<int>(impl_->meta.slots.size()), ErrorCode::kNOT_FOUND,
        "slot " + std::to_string(i) + " does not exist");
  return impl_->slot_weights(i);
}

std::vector<std::byte> Engine::serialize(const SerializationOptions& options) const {
  PlanMetadata meta = impl_->meta;
  meta.weights_version = impl_->version.load();
  if (!options.exclude_weights) {
    const auto empty = impl_->empty_slots();
    check(empty.empty(), ErrorCode::kMISSING_WEIGHTS,
          "cannot save the weights of an engine that still misses " + std::to_string(empty.size()) +
              " slot(s), e.g. '" + (empty.empty() ? "" : empty[0]) +
              "': refit it first or exclude weights");
  }
  HostTensor blob;
  if (impl_->on_device()) {
    blob = HostTensor::zeros(DataType::kUINT8, {meta.blob_size});
    for (size_t i = 0; i < meta.slots.size(); ++i)
      if (impl_->slot_filled[i])
        impl_->device_slots->download(static_cast<int>(i),
                                      static_cast<std::byte*>(blob.data()) + meta.slots[i].offset);
  } else {
    blob = HostTensor(DataType::kUINT8, {meta.blob_size});
    if (meta.blob_size)
      std::memcpy(blob.data(), impl_->arena.data(), static_cast<size_t>(meta.blob_size));
  }
  for (size_t i = 0; i < meta.slots.size(); ++i)
    if (impl_->slot_filled[i])
      meta.slots[i].checksum =
          hash64(static_cast<const std::byte*>(blob.data()) + meta.slots[i].offset,
                 static_cast<size_t>(meta.slots[i].size_bytes));
  return Plan(std::move(meta), std::move(blob)).serialize(options);
}

void Engine::save(const std::string& path, const SerializationOptions& options) const {
  const auto bytes = serialize(options);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace bindery
