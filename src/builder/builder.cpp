#include "bindery/builder.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <map>
#include <numeric>

#include "bindery/error.h"
#include "bindery/logging.h"
#include "builder/build_state.h"
#include "core/hash.h"

namespace bindery {

namespace {

using build::BuildState;

BuildState make_state(const Network& network, const BuilderFlags& flags) {
  BuildState s;
  s.flags = flags;
  s.graph = network.to_graph();
  const bool all = flags.has(BuilderFlag::kREFIT) || flags.has(BuilderFlag::kREFIT_IDENTICAL);
  const bool individual = flags.has(BuilderFlag::kREFIT_INDIVIDUAL);
  for (const std::string& name : network.weights_names()) {
    const Layer* l = network.find_weights(name);
    SourceWeight sw;
    sw.name = name;
    sw.desc = {l->weights().dtype, l->weights().shape};
    sw.refittable = all || (individual && network.are_weights_marked_refittable(name));
    if (sw.refittable && flags.has(BuilderFlag::kREFIT_IDENTICAL))
      sw.identical_hash =
          hash64(l->weights().values, static_cast<size_t>(l->weights().size_bytes()));
    s.sources.push_back(sw);
    s.source_values.push_back(l->weights());
    s.weights.push_back({Recipe::identity(name), sw.desc});
  }
  s.dead.assign(s.graph.nodes.size(), false);
  return s;
}

// Drops tensors nothing reads and weights no tensor holds; renumbers; lays out slots.
PlanMetadata finish(BuildState& s, HostTensor& blob) {
  s.compact();
  Graph& g = s.graph;
  std::vector<bool> used(g.tensors.size(), false);
  for (const GraphNode& n : g.nodes) {
    for (int t : n.inputs)
      if (t >= 0) used[t] = true;
    for (int t : n.outputs) used[t] = true;
  }
  for (int t : g.inputs) used[t] = true;
  for (int t : g.outputs) used[t] = true;
  std::vector<int> remap(g.tensors.size(), -1);
  Graph out;
  PlanMetadata meta;
  std::map<int, int> slot_of_weight;
  int64_t offset = 0;
  for (size_t t = 0; t < g.tensors.size(); ++t) {
    if (!used[t]) continue;
    GraphTensor gt = g.tensors[t];
    if (gt.kind == TensorKind::kWEIGHT) {
      auto [it, fresh] = slot_of_weight.try_emplace(gt.slot, static_cast<int>(meta.slots.size()));
      if (fresh) {
        const build::BuildWeight& w = s.weights[gt.slot];
        Slot slot;
        slot.name = gt.name;
        slot.desc = w.desc;
        slot.recipe = w.recipe;
        slot.size_bytes = dtype_bytes(w.desc.dtype, volume(w.desc.dims));
        slot.offset = offset;
        offset += (slot.size_bytes + kBLOB_ALIGNMENT - 1) / kBLOB_ALIGNMENT * kBLOB_ALIGNMENT;
        slot.refittable = !w.recipe.sources.empty();
        for (const auto& n : w.recipe.sources)
          slot.refittable = slot.refittable && s.sources[s.source(n)].refittable;
        meta.slots.push_back(std::move(slot));
      }
      gt.slot = it->second;
    }
    remap[t] = static_cast<int>(out.tensors.size());
    out.tensors.push_back(std::move(gt));
  }
  for (GraphNode n : g.nodes) {
    for (int& t : n.inputs)
      if (t >= 0) t = remap[t];
    for (int& t : n.outputs) t = remap[t];
    out.nodes.push_back(std::move(n));
  }
  for (int t : g.inputs) out.inputs.push_back(remap[t]);
  for (int t : g.outputs) out.outputs.push_back(remap[t]);

  // Sources: every network weight (set_named_weights accepts them even when folded away),
  // and the internal folded values that slots still use.
  std::map<std::string, bool> referenced;
  for (const Slot& sl : meta.slots)
    for (const auto& n : sl.recipe.sources) referenced[n] = true;
  for (const SourceWeight& sw : s.sources)
    if (sw.name.rfind("folded:", 0) != 0 || referenced.count(sw.name)) meta.sources.push_back(sw);

  // Every slot is made by evaluating its recipe: the exact code a refit replays. Slots are
  // independent, so they are made in parallel, largest first (one embedding table can be a
  // tenth of a model); only the alignment padding is zeroed. A stripped plan leaves its
  // refittable slots out, so they are not made at all: stripping reads no refittable weight
  // (their checksums stay 0), and an engine built from it is filled by one refit.
  const bool stripping = s.flags.has(BuilderFlag::kSTRIP_PLAN);
  blob = HostTensor(DataType::kUINT8, {offset});
  auto* bytes = static_cast<std::byte*>(blob.data());
  std::vector<size_t> order(meta.slots.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return meta.slots[a].size_bytes > meta.slots[b].size_bytes;
  });
  std::vector<std::exception_ptr> errors(order.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t k = 0; k < order.size(); ++k) {
    Slot& sl = meta.slots[order[k]];
    if (stripping && sl.refittable) continue;
    try {
      std::vector<Weights> views;
      for (const auto& n : sl.recipe.sources) views.push_back(s.source_values[s.source(n)]);
      std::byte* dst = bytes + sl.offset;
      if (sl.recipe.is_identity() && views[0].dtype == sl.desc.dtype) {
        std::memcpy(dst, views[0].values, static_cast<size_t>(sl.size_bytes));
      } else {
        const HostTensor v = evaluate_recipe(sl.recipe, views);
        std::memcpy(dst, v.data(), static_cast<size_t>(sl.size_bytes));
      }
      const int64_t padded =
          (sl.size_bytes + kBLOB_ALIGNMENT - 1) / kBLOB_ALIGNMENT * kBLOB_ALIGNMENT;
      std::memset(dst + sl.size_bytes, 0, static_cast<size_t>(padded - sl.size_bytes));
      sl.checksum = hash64(dst, static_cast<size_t>(sl.size_bytes));
    } catch (...) {
      errors[k] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  meta.flags = s.flags;
  meta.graph = std::move(out);
  meta.report = std::move(s.report);
  meta.blob_size = offset;
  return meta;
}

}  // namespace

Plan Builder::build(const Network& network, const BuilderConfig& config) const {
  const auto& progress = config.progress();
  const auto step = [&](const std::string& what, int64_t done) {
    if (progress) progress(what, done, 6);
  };
  step("validating network", 0);
  BuildState s = make_state(network, config.flags());
  step("folding constants", 1);
  build::fold_constants(s);
  step("folding batch norms", 2);
  build::fold_conv_batchnorm(s);
  step("fusing matmuls", 3);
  build::fuse_shared_input_matmuls(s);
  step("fusing activations", 4);
  build::fuse_conv_activations(s);
  build::cast_weights(s);
  step("laying out weights", 5);
  HostTensor blob;
  PlanMetadata meta = finish(s, blob);
  log_info("built plan: " + std::to_string(meta.graph.nodes.size()) + " nodes, " +
           std::to_string(meta.slots.size()) + " slots, " + std::to_string(meta.blob_size) +
           " weight bytes");
  step("done", 6);
  Plan plan(std::move(meta), std::move(blob));
  if (config.get_flag(BuilderFlag::kSTRIP_PLAN))
    return Plan::from_memory(plan.serialize({.exclude_weights = true, .include_refit = true}));
  return plan;
}

}  // namespace bindery
