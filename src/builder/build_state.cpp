#include "builder/build_state.h"

#include <algorithm>

#include "bindery/error.h"

namespace bindery::build {

int BuildState::source(const std::string& name) const {
  for (size_t i = 0; i < sources.size(); ++i)
    if (sources[i].name == name) return static_cast<int>(i);
  return -1;
}

bool BuildState::any_refittable(int tensor) const {
  const BuildWeight& w = weight_of(tensor);
  return std::any_of(w.recipe.sources.begin(), w.recipe.sources.end(),
                     [&](const std::string& n) { return sources[source(n)].refittable; });
}

bool BuildState::uniform_refittability(std::span<const int> tensors) const {
  int seen = -1;
  for (int t : tensors) {
    if (t < 0) continue;
    const BuildWeight& w = weight_of(t);
    for (const auto& n : w.recipe.sources) {
      const int r = sources[source(n)].refittable ? 1 : 0;
      if (seen >= 0 && seen != r) return false;
      seen = r;
    }
  }
  return true;
}

std::vector<std::string> BuildState::refittable_names(std::span<const int> tensors) const {
  std::vector<std::string> names;
  for (int t : tensors) {
    if (t < 0) continue;
    for (const auto& n : weight_of(t).recipe.sources)
      if (sources[source(n)].refittable) names.push_back(n);
  }
  return names;
}

int BuildState::add_weight_tensor(const std::string& name, BuildWeight w) {
  GraphTensor t;
  t.name = name;
  t.desc = w.desc;
  t.kind = TensorKind::kWEIGHT;
  t.slot = static_cast<int>(weights.size());
  weights.push_back(std::move(w));
  graph.tensors.push_back(std::move(t));
  return static_cast<int>(graph.tensors.size()) - 1;
}

BuildWeight BuildState::add_folded_source(const std::string& tensor_name, HostTensor value) {
  std::string name = "folded:" + tensor_name;
  for (int k = 1; source(name) >= 0; ++k) name = "folded:" + tensor_name + "#" + std::to_string(k);
  SourceWeight sw;
  sw.name = name;
  sw.desc = value.desc();
  sw.refittable = false;
  folded.push_back(std::make_unique<HostTensor>(std::move(value)));
  sources.push_back(sw);
  source_values.push_back(folded.back()->view());
  return {Recipe::identity(name), sw.desc};
}

void BuildState::make_weight(int t, BuildWeight w) {
  GraphTensor& gt = graph.tensors[t];
  gt.kind = TensorKind::kWEIGHT;
  gt.desc = w.desc;
  gt.slot = static_cast<int>(weights.size());
  weights.push_back(std::move(w));
}

std::vector<int> BuildState::consumers(int t) const {
  std::vector<int> c;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    if (dead[i]) continue;
    for (int in : graph.nodes[i].inputs)
      if (in == t) {
        c.push_back(static_cast<int>(i));
        break;
      }
  }
  return c;
}

HostTensor BuildState::value(int tensor) const {
  const BuildWeight& w = weight_of(tensor);
  std::vector<Weights> views;
  for (const auto& n : w.recipe.sources) views.push_back(source_values[source(n)]);
  return evaluate_recipe(w.recipe, views);
}

void BuildState::note(std::string kind, std::string description, std::vector<std::string> ws) {
  report.push_back({std::move(kind), std::move(description), std::move(ws)});
}

void BuildState::compact() {
  std::vector<GraphNode> live;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    if (!dead[i]) live.push_back(std::move(graph.nodes[i]));
  graph.nodes = std::move(live);
  dead.assign(graph.nodes.size(), false);
}

Recipe compose(const RecipeStep& step, std::span<const Recipe* const> args) {
  Recipe out;
  RecipeStep last = step;
  last.args.clear();
  for (const Recipe* a : args) {
    const int base = static_cast<int>(out.steps.size());
    for (RecipeStep s : a->steps) {
      if (s.op == RecipeOp::kSOURCE) {
        const std::string& name = a->sources.at(s.args[0]);
        int idx = out.source_index(name);
        if (idx < 0) {
          idx = static_cast<int>(out.sources.size());
          out.sources.push_back(name);
        }
        s.args = {idx};
      } else {
        for (int& x : s.args) x += base;
      }
      out.steps.push_back(std::move(s));
    }
    last.args.push_back(static_cast<int>(out.steps.size()) - 1);
  }
  out.steps.push_back(std::move(last));
  return out;
}

}  // namespace bindery::build
