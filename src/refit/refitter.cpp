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

// A source copied unchanged into its region of a slot at commit (cannot fail).
struct RegionCopy {
  Weights source;
  RecipeRegion region;
};

struct Write {
  int slot;
  HostTensor staged;                // the slot's new bytes (written first), or empty
  std::vector<RegionCopy> regions;  // then these, on top
};

struct Staged {
  std::vector<Write> writes;
  std::map<std::string, uint64_t> hashes;  // delta refit: what the engine then holds
  std::vector<std::string> applied;        // every source this refit writes
  std::vector<HostTensor> host_copies;  // device views brought to the host; regions may point here
};

}  // namespace

struct Refitter::Impl {
  Engine& engine;
  std::map<std::string, Weights> pending;
  std::map<std::string, SourceBlock> blocks;  // pending names set as a block only
  bool skip_unchanged = false;
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

  // Host views of every pending weight: device views are copied to the host first, so a
  // failing copy aborts the refit before any slot is written.
  std::map<std::string, Weights> host_views(std::vector<HostTensor>& copies) const {
    std::map<std::string, Weights> views;
    for (const auto& [name, w] : pending) {
      if (w.on_host()) {
        views[name] = w;
        continue;
      }
      copies.emplace_back(w.dtype, w.shape);
      copy_device_to_host(w, copies.back().data(), "weights '" + name + "'");
      views[name] = copies.back().view();
    }
    return views;
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
    staged.hashes = applied_hashes;
    for (const auto& [name, w] : pending) staged.applied.push_back(name);
    const auto views = host_views(staged.host_copies);
    std::vector<Write>& writes = staged.writes;
    for (int i : affected()) {
      const Slot& slot = meta().slots[i];
      const auto [recipe, descs] = effective(slot);
      Write w{i, {}, {}};
      if (recipe_is_separable(recipe) && (eng().slot_filled[i] || all_set(slot))) {
        // Each set source rewrites only its region: sources that sit in the slot unchanged
        // (identity recipes, concat parts) are copied there at commit; the others are evaluated
        // into a staged copy of the slot.
        for (size_t k = 0; k < recipe.sources.size(); ++k) {
          auto it = views.find(recipe.sources[k]);
          if (it == views.end()) continue;
          if (auto region = recipe_direct_region(recipe, descs, static_cast<int>(k))) {
            w.regions.push_back({it->second, *region});
            continue;
          }
          // The old bytes matter only where some source keeps its current value.
          if (w.staged.empty())
            w.staged = all_set(slot) ? HostTensor(slot.desc.dtype, slot.desc.dims)
                                     : HostTensor::copy_of(engine.slot_view(i));
          evaluate_recipe_region(recipe, descs, static_cast<int>(k), it->second, w.staged.data());
        }
      } else {
        std::vector<Weights> args;
        for (const auto& n : recipe.sources) args.push_back(views.at(n));
        w.staged = evaluate_recipe(recipe, args);
        check(w.staged.size_bytes() == slot.size_bytes, ErrorCode::kINTERNAL,
              "recipe of slot '" + slot.name + "' produced " +
                  std::to_string(w.staged.size_bytes()) + " bytes, slot has " +
                  std::to_string(slot.size_bytes));
      }
      writes.push_back(std::move(w));
    }
    return staged;
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
    std::vector<std::exception_ptr> errors(whole.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < whole.size(); ++i) {
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

  // Cannot fail: every check ran in stage(). Waits for running contexts (they hold the
  // weights shared) and holds runs off until every slot is written.
  void commit(Staged& staged) {
    const std::unique_lock<std::shared_mutex> weights(eng().weights_mutex);
    std::vector<Write>& writes = staged.writes;
    // Whole-slot copies first, as one parallel loop; then regions on top of staged slots.
    std::vector<CopyTask> whole, contiguous_regions;
    std::vector<std::pair<const RegionCopy*, const Write*>> strided_regions;
    for (const Write& w : writes) {
      const Slot& slot = meta().slots[w.slot];
      std::byte* dst = eng().slot_ptr(w.slot);
      if (!w.staged.empty()) whole.push_back({dst, w.staged.data(), slot.size_bytes});
      for (const RegionCopy& r : w.regions) {
        const Dims& d = slot.desc.dims;
        int64_t outer = 1;
        for (int k = 0; k < r.region.axis; ++k) outer *= d[k];
        if (outer == 1) {  // the part is one contiguous run of the slot
          const int64_t row_bytes =
              slot.size_bytes / std::max<int64_t>(d.empty() ? 1 : d[r.region.axis], 1);
          contiguous_regions.push_back(
              {dst + r.region.offset * row_bytes, r.source.values, r.source.size_bytes()});
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
    for (const Write& w : writes) eng().slot_filled[w.slot] = true;
    if (eng().device_slots)  // CUDA engines: the host slots are the staging copy
      for (const Write& w : writes) eng().device_slots->upload(w.slot, eng().slot_ptr(w.slot));
    last_slots = static_cast<int>(writes.size());
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
      return invert_recipe(slot.recipe, descs, slot.recipe.source_index(name),
                           impl_->engine.slot_view(i));
    } catch (const Error& e) {
      if (!first_error) first_error = e;
    }
  }
  throw *first_error;
}

void Refitter::refit() {
  impl_->keeping_pending_on_failure([&] {
    impl_->drop_unchanged();
    Staged staged = impl_->stage();
    impl_->commit(staged);
  });
  impl_->pending.clear();
  impl_->blocks.clear();
}

void Refitter::set_skip_unchanged(bool on) { impl_->skip_unchanged = on; }
const Refitter::Stats& Refitter::last_refit_stats() const { return impl_->stats; }

void Refitter::refit_async(Stream& stream) {
  auto staged = impl_->keeping_pending_on_failure([&] {
    impl_->drop_unchanged();
    return std::make_shared<Staged>(impl_->stage());
  });
  impl_->pending.clear();
  impl_->blocks.clear();
  stream.enqueue_host([impl = impl_.get(), staged] { impl->commit(*staged); });
}

int Refitter::last_refit_slots() const { return impl_->last_slots; }

}  // namespace bindery
