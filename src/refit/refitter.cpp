// Refitter: validate everything, stage what can fail, then write slots.
//
// set_named_weights checks name, refittability, dtype, count, shape and (kREFIT_IDENTICAL)
// hash at once. refit() works out the slots the set weights touch, evaluates every recipe
// that is not a plain copy into staging memory (a failure here leaves the engine untouched),
// and only then writes: staged slots by memcpy, sources that sit in a slot unchanged (identity
// recipes, parts of a concat) straight from the caller's view. Staging costs one slot-sized
// buffer per transformed slot being refit; plain copies cost nothing extra, which is what makes
// a refit run at memcpy speed.

#include "bindery/refitter.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>

#include "bindery/error.h"
#include "core/device_memory.h"
#include "core/hash.h"
#include "core/names.h"
#include "core/parallel.h"
#include "plan/tensor_ops.h"
#include "runtime/engine_impl.h"

namespace bindery {

namespace {

// A source copied unchanged into its region of a slot at commit (cannot fail). CUDA engines
// also copy device sources that are only cast on the way, converting on the GPU.
struct RegionCopy {
  Weights source;
  RecipeRegion region;
  bool convert = false;  // to the slot's dtype
};

struct Write {
  int slot;
  HostTensor staged;                // the slot's new bytes (written first), or empty
  std::vector<RegionCopy> regions;  // then these, on top
};

struct Staged {
  std::vector<Write> writes;
  RefitStaging staging = RefitStaging::kVALIDATE_FIRST;
  std::map<std::string, uint64_t> hashes;  // delta refit: what the engine then holds
  std::vector<std::string> applied;        // every source this refit writes
  std::vector<HostTensor> host_copies;  // device views brought to the host; regions may point here
};

// Elements before `axis` (how many separate runs a region along `axis` is made of).
int64_t outer_rows(const Dims& d, int axis) {
  int64_t outer = 1;
  for (int k = 0; k < axis && k < static_cast<int>(d.size()); ++k) outer *= d[k];
  return outer;
}

// Bytes of one index along `axis` of the slot (a row of the region).
int64_t unit_bytes(const Slot& slot, int axis) {
  const Dims& d = slot.desc.dims;
  return slot.size_bytes / std::max<int64_t>(d.empty() ? 1 : d[axis], 1) /
         std::max<int64_t>(outer_rows(d, axis), 1);
}

}  // namespace

struct Refitter::Impl {
  Engine& engine;
  std::map<std::string, Weights> pending;
  std::map<std::string, SourceBlock> blocks;  // pending names set as a block only
  bool skip_unchanged = false;
  RefitStaging staging = RefitStaging::kVALIDATE_FIRST;
  Stats stats;
  std::map<std::string, uint64_t> applied_hashes;  // delta refit: hashes of this refit's sources
  std::map<std::string, std::vector<int>> slots_of_source;
  int last_slots = 0;

  explicit Impl(Engine& e) : engine(e) {
    const auto& slots = meta().slots;
    for (size_t i = 0; i < slots.size(); ++i)
      for (const auto& n : slots[i].recipe.sources)
        slots_of_source[n].push_back(static_cast<int>(i));
  }
  Engine::Impl& eng() const { return *engine.impl_; }
  const PlanMetadata& meta() const { return engine.impl_->meta; }

  const SourceWeight& source(const std::string& name) const {
    const int i = meta().find_source(name);
    if (i >= 0) return meta().sources[i];
    std::vector<std::string> refittable;
    for (const SourceWeight& s : meta().sources)
      if (s.refittable) refittable.push_back(s.name);
    const std::vector<std::string> near = closest_names(name, refittable, 1);
    const std::string best = near.empty() ? "" : near[0];
    throw Error(ErrorCode::kNOT_FOUND, "no weights named '" + name + "' in this engine" +
                                           (best.empty() ? "" : "; did you mean '" + best + "'?"));
  }

  std::vector<TensorDesc> source_descs(const Slot& s) const {
    std::vector<TensorDesc> d;
    for (const auto& n : s.recipe.sources) d.push_back(source(n).desc);
    return d;
  }

  // The slot's recipe and its sources' descs as the pending weights give them: sources set
  // as a block are read as that block (narrowed recipe, block shape).
  std::pair<Recipe, std::vector<TensorDesc>> effective(const Slot& s) const {
    Recipe r = s.recipe;
    std::vector<TensorDesc> d = source_descs(s);
    for (size_t k = 0; k < r.sources.size(); ++k) {
      auto it = blocks.find(r.sources[k]);
      if (it == blocks.end()) continue;
      r = narrow_recipe(r, static_cast<int>(k));
      d[k].dims[it->second.axis] = it->second.length;
    }
    return {std::move(r), std::move(d)};
  }

  // The one block of `name` every recipe reading it reads, or nullopt.
  std::optional<SourceBlock> needed_block(const std::string& name) const {
    auto it = slots_of_source.find(name);
    if (it == slots_of_source.end()) return std::nullopt;
    std::optional<SourceBlock> block;
    for (int i : it->second) {
      const Recipe& r = meta().slots[i].recipe;
      const auto b = recipe_source_block(r, r.source_index(name));
      if (!b || (block && !(*block == *b))) return std::nullopt;
      block = b;
    }
    return block;
  }

  // Slots a refit now would rewrite, in index order.
  std::vector<int> affected() const {
    std::set<int> a;
    for (const auto& [name, w] : pending) {
      auto it = slots_of_source.find(name);
      if (it != slots_of_source.end()) a.insert(it->second.begin(), it->second.end());
    }
    for (size_t i = 0; i < eng().slot_filled.size(); ++i)
      if (!eng().slot_filled[i] && meta().slots[i].refittable) a.insert(static_cast<int>(i));
    return {a.begin(), a.end()};
  }

  bool all_set(const Slot& slot) const {
    for (const auto& n : slot.recipe.sources)
      if (!pending.count(n)) return false;
    return true;
  }

  bool partial_ok(int slot) const {
    return eng().slot_filled[slot] && recipe_is_separable(meta().slots[slot].recipe);
  }

  std::vector<std::string> missing() const {
    std::set<std::string> m;
    for (int s : affected()) {
      if (partial_ok(s)) continue;
      for (const auto& n : meta().slots[s].recipe.sources)
        if (!pending.count(n)) m.insert(n);
    }
    return {m.begin(), m.end()};
  }

  Staged stage() {
    const auto miss = missing();
    if (!miss.empty()) {
      std::string list;
      for (size_t i = 0; i < miss.size() && i < 8; ++i) list += (i ? ", '" : "'") + miss[i] + "'";
      if (miss.size() > 8) list += ", … (" + std::to_string(miss.size()) + " in all)";
      throw Error(ErrorCode::kMISSING_WEIGHTS, "refit needs weights that were not set: " + list +
                                                   " (see Refitter::missing_weights)");
    }
    Staged staged;
    staged.staging = staging;
    staged.hashes = applied_hashes;
    for (const auto& [name, w] : pending) staged.applied.push_back(name);
    const bool device = eng().on_device();
    // Host views of pending weights, for what the host evaluates: device views are copied to
    // the host once, so a failing copy aborts the refit before any slot is written.
    std::map<std::string, Weights> host_cache;
    const auto host_view = [&](const std::string& name) {
      const Weights& w = pending.at(name);
      if (w.on_host()) return w;
      auto it = host_cache.find(name);
      if (it != host_cache.end()) return it->second;
      staged.host_copies.emplace_back(w.dtype, w.shape);
      copy_device_to_host(w, staged.host_copies.back().data(), "weights '" + name + "'");
      return host_cache[name] = staged.host_copies.back().view();
    };
    for (int i : affected()) {
      const Slot& slot = meta().slots[i];
      const auto [recipe, descs] = effective(slot);
      Write w{i, {}, {}};
      if (recipe_is_separable(recipe) && (eng().slot_filled[i] || all_set(slot))) {
        // Each set source rewrites only its region: sources that sit in the slot unchanged
        // (identity recipes, concat parts) are copied there at commit; the others are evaluated
        // into a staged copy of the slot.
        for (size_t k = 0; k < recipe.sources.size(); ++k) {
          const std::string& name = recipe.sources[k];
          auto it = pending.find(name);
          if (it == pending.end()) continue;
          const Weights& src = it->second;
          if (auto region = recipe_direct_region(recipe, descs, static_cast<int>(k))) {
            w.regions.push_back({device || src.on_host() ? src : host_view(name), *region});
            continue;
          }
          if (device && gpu_convertible(src, slot))
            if (auto region = recipe_cast_region(recipe, descs, static_cast<int>(k));
                region && outer_rows(slot.desc.dims, region->axis) == 1) {
              w.regions.push_back({src, *region, true});
              continue;
            }
          // The old bytes matter only where some source keeps its current value.
          if (w.staged.empty())
            w.staged =
                all_set(slot) ? HostTensor(slot.desc.dtype, slot.desc.dims) : eng().slot_to_host(i);
          evaluate_recipe_region(recipe, descs, static_cast<int>(k), host_view(name),
                                 w.staged.data());
        }
      } else {
        std::vector<Weights> args;
        for (const auto& n : recipe.sources) args.push_back(host_view(n));
        w.staged = evaluate_recipe(recipe, args);
        check(w.staged.size_bytes() == slot.size_bytes, ErrorCode::kINTERNAL,
              "recipe of slot '" + slot.name + "' produced " +
                  std::to_string(w.staged.size_bytes()) + " bytes, slot has " +
                  std::to_string(slot.size_bytes));
      }
      count_written(w, slot);
      staged.writes.push_back(std::move(w));
    }
    return staged;
  }

  // A device source the GPU can convert into a slot of this engine's device.
  bool gpu_convertible(const Weights& src, const Slot& slot) const {
    return !src.on_host() && src.location == eng().device && is_floating(src.dtype) &&
           is_floating(slot.desc.dtype);
  }

  void count_written(const Write& w, const Slot& slot) {
    if (!w.staged.empty()) {
      stats.bytes_written += slot.size_bytes;
      return;
    }
    for (const RegionCopy& r : w.regions)
      stats.bytes_written += dtype_bytes(slot.desc.dtype, r.source.count());
  }

  // Every check of set_named_weights against a source of `dims` (its full shape or a block).
  void validate(const std::string& name, const Weights& w, const Dims& dims, bool whole) const {
    const SourceWeight& s = source(name);
    if (!s.refittable) {
      const BuilderFlags& f = meta().flags;
      throw Error(
          ErrorCode::kNOT_REFITTABLE,
          "weights '" + name + "' are not refittable: " +
              (f.has(BuilderFlag::kREFIT_INDIVIDUAL)
                   ? "the plan was built with REFIT_INDIVIDUAL and they were not marked with "
                     "mark_weights_refittable"
               : f.refittable() ? "the builder folded them into constants"
                                : "the plan was built without a refit flag"));
    }
    check(w.on_host() || cuda_available(), ErrorCode::kDEVICE,
          "weights '" + name + "' are " + w.location.to_string() +
              " memory, which this process cannot read: " + cuda_unavailable_reason());
    check(w.dtype == s.desc.dtype, ErrorCode::kDTYPE_MISMATCH,
          "weights '" + name + "': expected dtype " + std::string(dtype_name(s.desc.dtype)) +
              ", got " + describe(w));
    check(!is_dynamic(w.shape), ErrorCode::kSHAPE_MISMATCH,
          "weights '" + name + "': shape " + to_string(w.shape) + " is not concrete");
    check(w.count() == volume(dims), ErrorCode::kCOUNT_MISMATCH,
          "weights '" + name + "': expected " + std::to_string(volume(dims)) + " elements (" +
              to_string(s.desc) + "), got " + std::to_string(w.count()) + " (" + describe(w) + ")");
    check(w.shape == dims, ErrorCode::kSHAPE_MISMATCH,
          "weights '" + name + "': expected shape " + to_string(dims) + ", got " +
              to_string(w.shape));
    check(w.values != nullptr || w.count() == 0, ErrorCode::kINVALID_ARGUMENT,
          "weights '" + name + "' have null values");
    // A device view must lie wholly inside one allocation: a refit that trusts it (writing
    // slots straight from it) then cannot fault half-way.
    if (!w.on_host() && w.count() > 0) check_device_view(w, "weights '" + name + "'");
    if (whole && s.identical_hash) {
      HostTensor copy;
      const void* bytes = w.values;
      if (!w.on_host()) {
        copy = HostTensor(w.dtype, w.shape);
        copy_device_to_host(w, copy.data(), "weights '" + name + "'");
        bytes = copy.data();
      }
      const uint64_t h = hash64(bytes, static_cast<size_t>(w.size_bytes()));
      check(h == *s.identical_hash, ErrorCode::kIDENTICAL_MISMATCH,
            "weights '" + name +
                "' differ from the ones the plan was built with (REFIT_IDENTICAL): hash " +
                hash_to_hex(h) + ", expected " + hash_to_hex(*s.identical_hash));
    }
  }

  // Runs `fn`; if it throws, what was set is set again (a delta refit drops unchanged
  // sources from `pending` before staging), so a failed refit leaves the refitter as it was.
  template <class Fn>
  auto keeping_pending_on_failure(Fn fn) {
    const auto saved = pending;
    try {
      return fn();
    } catch (...) {
      pending = saved;
      throw;
    }
  }

  // Delta refit: hashes every set whole source and drops from `pending` those the engine
  // already holds, unless a slot that cannot be refit partially needs them beside a changed
  // source. Records the hashes to keep once the refit commits.
  void drop_unchanged() {
    stats = {};
    stats.sources_set = static_cast<int64_t>(pending.size());
    applied_hashes.clear();
    if (!skip_unchanged) return;
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, Weights>> whole;
    for (const auto& [name, w] : pending)
      if (!blocks.count(name)) whole.emplace_back(name, w);
    std::vector<uint64_t> hashes(whole.size());
    // A CUDA engine hashes views of its own device on the GPU, in one batch (HBM speed, no
    // download); everything else is hashed on the host.
    std::vector<bool> on_gpu(whole.size(), false);
    if (eng().on_device()) {
      std::vector<Weights> views;
      std::vector<size_t> at;
      for (size_t i = 0; i < whole.size(); ++i)
        if (whole[i].second.location == eng().device) {
          views.push_back(whole[i].second);
          at.push_back(i);
          on_gpu[i] = true;
        }
      const std::vector<uint64_t> sums = eng().device_slots->hash(views);
      for (size_t k = 0; k < at.size(); ++k) hashes[at[k]] = sums[k];
    }
    std::vector<std::exception_ptr> errors(whole.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < whole.size(); ++i) {
      if (on_gpu[i]) continue;
      try {
        const Weights& w = whole[i].second;
        if (w.on_host()) {
          hashes[i] = hash64(w.values, static_cast<size_t>(w.size_bytes()));
        } else {
          HostTensor copy(w.dtype, w.shape);
          copy_device_to_host(w, copy.data(), "weights '" + whole[i].first + "'");
          hashes[i] = hash64(copy.data(), static_cast<size_t>(copy.size_bytes()));
        }
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);
    std::set<std::string> unchanged;
    {
      const std::shared_lock<std::shared_mutex> lock(eng().weights_mutex);
      for (size_t i = 0; i < whole.size(); ++i) {
        stats.bytes_hashed += whole[i].second.size_bytes();
        applied_hashes[whole[i].first] = hashes[i];
        auto it = eng().source_hashes.find(whole[i].first);
        if (it != eng().source_hashes.end() && it->second == hashes[i])
          unchanged.insert(whole[i].first);
      }
    }
    for (const std::string& name : unchanged) {
      bool skippable = true;
      for (int slot : slots_of_source.at(name)) {
        if (partial_ok(slot)) continue;
        for (const auto& n : meta().slots[slot].recipe.sources)
          skippable = skippable && (!pending.count(n) || unchanged.count(n));
      }
      if (!skippable) continue;
      pending.erase(name);
      ++stats.sources_skipped;
    }
    stats.hash_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  // Applies what stage() prepared. Runs (which hold the weights shared) are waited for and
  // held off while slots are written, so a run sees all old or all new weights.
  void commit(Staged& staged) {
    if (eng().on_device()) {
      commit_device(staged);
      return;
    }
    const std::unique_lock<std::shared_mutex> weights(eng().weights_mutex);
    write_host_slots(staged.writes);
    finish(staged);
  }

  // Cannot fail: every check ran in stage().
  void write_host_slots(const std::vector<Write>& writes) {
    // Whole-slot copies first, as one parallel loop; then regions on top of staged slots.
    std::vector<CopyTask> whole, contiguous_regions;
    std::vector<std::pair<const RegionCopy*, const Write*>> strided_regions;
    for (const Write& w : writes) {
      const Slot& slot = meta().slots[w.slot];
      std::byte* dst = eng().slot_ptr(w.slot);
      if (!w.staged.empty()) whole.push_back({dst, w.staged.data(), slot.size_bytes});
      for (const RegionCopy& r : w.regions) {
        const Dims& d = slot.desc.dims;
        if (outer_rows(d, r.region.axis) == 1) {  // the part is one contiguous run of the slot
          contiguous_regions.push_back({dst + r.region.offset * unit_bytes(slot, r.region.axis),
                                        r.source.values, r.source.size_bytes()});
        } else {
          strided_regions.push_back({&r, &w});
        }
      }
    }
    parallel_memcpy(whole);
    parallel_memcpy(contiguous_regions);
    for (const auto& [r, w] : strided_regions)
      write_block(r->source, r->region.axis, r->region.offset, eng().slot_ptr(w->slot),
                  meta().slots[w->slot].desc.dims);
  }

  // CUDA engines: two passes of device copies (staged whole slots, then regions on top of
  // them), straight into the slots (kVALIDATE_FIRST) or through spare device memory
  // (kDEVICE_COPY: everything lands there first, outside the lock; the slots are then written
  // by one device-to-device pass).
  void commit_device(Staged& staged) {
    DeviceSlots& slots = *eng().device_slots;
    std::vector<DeviceCopy> passes[2];
    for (const Write& w : staged.writes) {
      const Slot& slot = meta().slots[w.slot];
      auto* dst = static_cast<std::byte*>(slots.slot_ptr(w.slot));
      if (!w.staged.empty())
        passes[0].push_back(DeviceCopy::contiguous(dst, w.staged.data(), slot.size_bytes));
      for (const RegionCopy& r : w.regions) passes[1].push_back(region_copy(r, slot, dst));
    }
    const std::string what = "refitting the weights on " + eng().device.to_string();
    std::unique_ptr<DeviceAllocation> spare;
    if (staged.staging == RefitStaging::kDEVICE_COPY) {
      int64_t total = 0;
      for (const auto& pass : passes)
        for (const DeviceCopy& c : pass) total += c.bytes();
      spare = slots.allocate(total, "the refit's staging copy (RefitStaging::kDEVICE_COPY)");
      std::vector<DeviceCopy> in;
      auto* at = static_cast<std::byte*>(spare->data());
      for (auto& pass : passes)
        for (DeviceCopy& c : pass) {
          DeviceCopy to_spare = c;
          to_spare.dst = at;
          to_spare.dst_pitch = 0;
          in.push_back(to_spare);
          DeviceCopy to_slot = DeviceCopy::contiguous(c.dst, at, c.row_bytes);
          to_slot.rows = c.rows;
          to_slot.dst_pitch = c.dst_pitch;
          c = to_slot;
          at += c.bytes();
        }
      slots.copy(in, what);  // a failure here leaves the slots untouched
    }
    const std::unique_lock<std::shared_mutex> weights(eng().weights_mutex);
    write_device_passes(passes, staged.writes, what);
    finish(staged);
  }

  // Under the weights lock. A copy that fails part-way leaves its slots undefined: they are
  // marked empty, so runs refuse (kMISSING_WEIGHTS) until a refit rewrites them.
  void write_device_passes(const std::vector<DeviceCopy> (&passes)[2],
                           const std::vector<Write>& writes, const std::string& what) {
    try {
      for (const auto& pass : passes)
        if (!pass.empty()) eng().device_slots->copy(pass, what);
    } catch (const Error& e) {
      int lost = 0;
      std::string first;
      for (const Write& w : writes) {
        if (eng().slot_filled[w.slot] && first.empty()) first = meta().slots[w.slot].name;
        lost += eng().slot_filled[w.slot];
        eng().slot_filled[w.slot] = false;
      }
      throw Error(ErrorCode::kDEVICE,
                  e.message() + "; the refit stopped part-way, so " + std::to_string(lost) +
                      " slot(s) it was writing (e.g. '" + first +
                      "') hold no defined weights until a refit rewrites them "
                      "(RefitStaging::kDEVICE_COPY keeps the engine as it was instead)");
    }
  }

  // The device copy of a region: a contiguous run of the slot, or one row per outer index.
  static DeviceCopy region_copy(const RegionCopy& r, const Slot& slot, std::byte* slot_base) {
    const Dims& d = slot.desc.dims;
    const int64_t unit = unit_bytes(slot, r.region.axis);
    DeviceCopy c = DeviceCopy::contiguous(slot_base + r.region.offset * unit, r.source.values, 0);
    if (r.convert) {
      c.convert_from = r.source.dtype;
      c.convert_to = slot.desc.dtype;
    }
    const int64_t outer = outer_rows(d, r.region.axis);
    c.rows = outer;
    c.row_bytes = dtype_bytes(slot.desc.dtype, r.source.count()) / std::max<int64_t>(outer, 1);
    if (outer > 1) c.dst_pitch = d[r.region.axis] * unit;
    return c;
  }

  // After the slots are written, under the weights lock.
  void finish(const Staged& staged) {
    for (const Write& w : staged.writes) eng().slot_filled[w.slot] = true;
    last_slots = static_cast<int>(staged.writes.size());
    // A source applied without its hash (a block, or no delta refit) leaves no stale one.
    for (const std::string& name : staged.applied) {
      auto it = staged.hashes.find(name);
      if (it != staged.hashes.end())
        eng().source_hashes[name] = it->second;
      else
        eng().source_hashes.erase(name);
    }
    ++eng().version;
  }
};

Refitter::Refitter(Engine& engine) : impl_(std::make_unique<Impl>(engine)) {}
Refitter::~Refitter() = default;

void Refitter::set_named_weights(const std::string& name, const Weights& w) {
  impl_->validate(name, w, impl_->source(name).desc.dims, true);
  impl_->pending[name] = w;
  impl_->blocks.erase(name);
}

std::optional<SourceBlock> Refitter::needed_block(const std::string& name) const {
  impl_->source(name);  // kNOT_FOUND for unknown names
  return impl_->needed_block(name);
}

void Refitter::set_named_weights_block(const std::string& name, const SourceBlock& block,
                                       const Weights& w) {
  const SourceWeight& s = impl_->source(name);
  const std::optional<SourceBlock> needed = impl_->needed_block(name);
  const auto text = [](const SourceBlock& b) {
    return "rows [" + std::to_string(b.start) + ", " + std::to_string(b.start + b.length) +
           ") of dim " + std::to_string(b.axis);
  };
  check(needed.has_value(), ErrorCode::kINVALID_ARGUMENT,
        "weights '" + name + "': the engine reads all of them, so they cannot be set as " +
            text(block) + " (use set_named_weights)");
  check(*needed == block, ErrorCode::kINVALID_ARGUMENT,
        "weights '" + name + "': the engine reads " + text(*needed) + ", not " + text(block));
  check(!s.identical_hash, ErrorCode::kINVALID_ARGUMENT,
        "weights '" + name +
            "': a REFIT_IDENTICAL plan checks whole weights against its hashes, "
            "so they cannot be set as a block");
  Dims dims = s.desc.dims;
  dims[block.axis] = block.length;
  impl_->validate(name, w, dims, false);
  impl_->pending[name] = w;
  impl_->blocks[name] = block;
}

bool Refitter::unset_named_weights(const std::string& name) {
  impl_->blocks.erase(name);
  return impl_->pending.erase(name) > 0;
}

std::vector<std::string> Refitter::missing_weights() const { return impl_->missing(); }

std::vector<std::string> Refitter::all_weights() const {
  std::vector<std::string> names;
  for (const SourceWeight& s : impl_->meta().sources)
    if (s.refittable) names.push_back(s.name);
  return names;
}

TensorDesc Refitter::weights_prototype(const std::string& name) const {
  return impl_->source(name).desc;
}

HostTensor Refitter::get_named_weights(const std::string& name) const {
  impl_->source(name);  // kNOT_FOUND (with a suggestion) for unknown names
  auto it = impl_->slots_of_source.find(name);
  check(it != impl_->slots_of_source.end(), ErrorCode::kNOT_INVERTIBLE,
        "weights '" + name + "' are not held by any slot (the builder folded them away)");
  std::optional<Error> first_error;
  for (int i : it->second) {
    const Slot& slot = impl_->meta().slots[i];
    if (!impl_->eng().slot_filled[i]) {
      first_error = first_error.value_or(
          Error(ErrorCode::kMISSING_WEIGHTS, "slot '" + slot.name + "' holding '" + name +
                                                 "' is empty (stripped plan not refit yet)"));
      continue;
    }
    try {
      const auto descs = impl_->source_descs(slot);
      const HostTensor held = impl_->eng().slot_to_host(i);
      return invert_recipe(slot.recipe, descs, slot.recipe.source_index(name), held.view());
    } catch (const Error& e) {
      if (!first_error) first_error = e;
    }
  }
  throw *first_error;
}

void Refitter::refit() {
  const auto start = std::chrono::steady_clock::now();
  impl_->keeping_pending_on_failure([&] {
    impl_->drop_unchanged();
    Staged staged = impl_->stage();
    impl_->commit(staged);
  });
  impl_->stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  impl_->pending.clear();
  impl_->blocks.clear();
}

void Refitter::set_skip_unchanged(bool on) { impl_->skip_unchanged = on; }
const Refitter::Stats& Refitter::last_refit_stats() const { return impl_->stats; }

void Refitter::set_staging(RefitStaging staging) { impl_->staging = staging; }

void Refitter::refit_async(Stream& stream) {
  const auto start = std::chrono::steady_clock::now();
  auto staged = impl_->keeping_pending_on_failure([&] {
    impl_->drop_unchanged();
    return std::make_shared<Staged>(impl_->stage());
  });
  impl_->stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  impl_->pending.clear();
  impl_->blocks.clear();
  stream.enqueue_host([impl = impl_.get(), staged] { impl->commit(*staged); });
}

int Refitter::last_refit_slots() const { return impl_->last_slots; }

}  // namespace bindery
