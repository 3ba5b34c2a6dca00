// bindery inspect <plan | checkpoint> [--json]: what a plan holds, the way the engine will see
// it; or the tensors of a checkpoint file or directory (inspect_checkpoint.cpp).

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "bindery/plan.h"
#include "commands.h"
#include "core/hash.h"
#include "format.h"

namespace bindery::cli {

namespace {

using nlohmann::json;

std::string dims_text(const Dims& d) { return to_string(d); }

std::string node_detail(const GraphNode& n) {
  return std::visit(
      [&](const auto& p) -> std::string {
        using P = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<P, ConvParams>) {
          std::string s = "stride " + dims_text(p.stride) + " pad " + dims_text(p.padding) +
                          " dil " + dims_text(p.dilation) + " groups " + std::to_string(p.groups);
          for (const auto& e : p.epilogue)
            s += std::string(" +") +
                 std::string(e.is_unary ? unary_op_name(e.unary) : elementwise_op_name(e.binary)) +
                 (e.is_unary ? "" : "(baked " + std::to_string(e.constant.size()) + ")");
          return s;
        } else if constexpr (std::is_same_v<P, MatMulParams>) {
          return std::string(p.transpose_a ? "aᵀ" : "a") + " · " + (p.transpose_b ? "bᵀ" : "b");
        } else if constexpr (std::is_same_v<P, ElementwiseParams>) {
          return std::string(elementwise_op_name(p.op));
        } else if constexpr (std::is_same_v<P, UnaryParams>) {
          return std::string(unary_op_name(p.op));
        } else if constexpr (std::is_same_v<P, SliceParams>) {
          return "start " + dims_text(p.start) + " size " + dims_text(p.size);
        } else if constexpr (std::is_same_v<P, ReshapeParams>) {
          return "shape " + dims_text(p.shape);
        } else if constexpr (std::is_same_v<P, PoolingParams>) {
          return std::string(pooling_type_name(p.type)) + " window " + dims_text(p.window);
        } else if constexpr (std::is_same_v<P, RotaryParams>) {
          return std::to_string(p.num_heads) + " heads x " + std::to_string(p.head_dim) +
                 ", rotary dims " + std::to_string(2 * p.inv_freq.size()) +
                 (p.dynamic_factor != 0 ? ", dynamic" : "");
        } else if constexpr (std::is_same_v<P, AttentionParams>) {
          return std::to_string(p.num_heads) + "/" + std::to_string(p.num_kv_heads) + " heads x " +
                 std::to_string(p.head_dim) + ", max " + std::to_string(p.max_seq_len) +
                 (p.sliding_window ? ", window " + std::to_string(p.sliding_window) : "") +
                 ", cache " + std::to_string(p.cache_index);
        } else if constexpr (std::is_same_v<P, CollectiveParams>) {
          return "over " + std::to_string(p.group_size) + " ranks" +
                 (n.type == LayerType::kALL_GATHER ? ", axis " + std::to_string(p.axis) : "");
        } else if constexpr (std::is_same_v<P, GatherParams>) {
          return "axis " + std::to_string(p.axis) +
                 (p.index_offset ? ", rows from " + std::to_string(p.index_offset) : "") +
                 (p.zero_out_of_range ? ", zeros outside" : "");
        } else if constexpr (std::is_same_v<P, Int4MatmulParams>) {
          return std::to_string(p.in_features) + " -> " + std::to_string(p.out_features) + ", " +
                 std::to_string(p.group_count) + " groups";
        } else if constexpr (std::is_same_v<P, MoeParams>) {
          return "top " + std::to_string(p.top_k) + " of " + std::to_string(p.num_experts) +
                 " experts, ffn " + std::to_string(p.ffn_size) + " " +
                 std::string(unary_op_name(p.activation));
        } else {
          return "";
        }
      },
      n.params);
}

json to_json(const Plan& plan, const std::string& path, size_t file_size) {
  const PlanMetadata& m = plan.metadata();
  const Graph& g = m.graph;
  json j;
  j["file"] = path;
  j["file_bytes"] = file_size;
  j["format_version"] = m.format_version;
  j["flags"] = m.flags.to_string();
  j["stripped"] = m.stripped;
  j["refittable"] = m.refit_info;
  j["weights_version"] = m.weights_version;
  j["weight_bytes"] = m.blob_size;
  auto io = [&](const std::vector<int>& ts) {
    json a = json::array();
    for (int t : ts)
      a.push_back({{"name", g.tensors[t].name},
                   {"dtype", dtype_name(g.tensors[t].desc.dtype)},
                   {"dims", g.tensors[t].desc.dims}});
    return a;
  };
  j["inputs"] = io(g.inputs);
  j["outputs"] = io(g.outputs);
  j["layers"] = json::array();
  for (const GraphNode& n : g.nodes) {
    json l{{"name", n.name}, {"type", layer_type_name(n.type)}, {"detail", node_detail(n)}};
    l["inputs"] = json::array();
    for (int t : n.inputs) l["inputs"].push_back(t < 0 ? "" : g.tensors[t].name);
    l["outputs"] = json::array();
    for (int t : n.outputs) l["outputs"].push_back(g.tensors[t].name);
    j["layers"].push_back(l);
  }
  j["slots"] = json::array();
  for (size_t i = 0; i < m.slots.size(); ++i) {
    const Slot& s = m.slots[i];
    const std::byte* data = plan.slot_data(static_cast<int>(i));
    json sj{{"name", s.name},
            {"dtype", dtype_name(s.desc.dtype)},
            {"dims", s.desc.dims},
            {"bytes", s.size_bytes},
            {"refittable", s.refittable},
            {"recipe", s.recipe.to_string()},
            {"sources", s.recipe.sources},
            {"checksum", hash_to_hex(s.checksum)},
            {"stored", data != nullptr}};
    if (data) sj["checksum_ok"] = hash64(data, static_cast<size_t>(s.size_bytes)) == s.checksum;
    j["slots"].push_back(sj);
  }
  j["sources"] = json::array();
  for (const SourceWeight& s : m.sources) {
    json sj{{"name", s.name},
            {"dtype", dtype_name(s.desc.dtype)},
            {"dims", s.desc.dims},
            {"refittable", s.refittable}};
    if (s.identical_hash) sj["identical_hash"] = hash_to_hex(*s.identical_hash);
    j["sources"].push_back(sj);
  }
  j["build_report"] = json::array();
  for (const auto& r : m.report)
    j["build_report"].push_back(
        {{"kind", r.kind}, {"description", r.description}, {"weights", r.weights}});
  return j;
}

void print_text(const json& j) {
  std::printf("plan %s (%s, format %d)\n", j["file"].get<std::string>().c_str(),
              human_bytes(j["file_bytes"].get<int64_t>()).c_str(), j["format_version"].get<int>());
  std::printf("  flags %s%s%s, weights version %llu, weights %s\n",
              j["flags"].get<std::string>().c_str(), j["stripped"].get<bool>() ? ", stripped" : "",
              j["refittable"].get<bool>() ? "" : ", frozen",
              static_cast<unsigned long long>(j["weights_version"].get<uint64_t>()),
              human_bytes(j["weight_bytes"].get<int64_t>()).c_str());
  for (const char* k : {"inputs", "outputs"}) {
    std::printf("%s:\n", k);
    for (const auto& t : j[k])
      std::printf("  %-24s %s%s\n", t["name"].get<std::string>().c_str(),
                  t["dtype"].get<std::string>().c_str(), to_string(t["dims"].get<Dims>()).c_str());
  }
  std::printf("layers (%zu):\n", j["layers"].size());
  for (const auto& l : j["layers"])
    std::printf("  %-36s %-11s %s\n", l["name"].get<std::string>().c_str(),
                l["type"].get<std::string>().c_str(), l["detail"].get<std::string>().c_str());
  std::printf("slots (%zu):\n", j["slots"].size());
  for (const auto& s : j["slots"]) {
    std::printf("  %-36s %s%s %s %s%s %s\n", s["name"].get<std::string>().c_str(),
                s["dtype"].get<std::string>().c_str(), to_string(s["dims"].get<Dims>()).c_str(),
                human_bytes(s["bytes"].get<int64_t>()).c_str(),
                s["refittable"].get<bool>() ? "refittable" : "fixed",
                s["stored"].get<bool>() ? "" : " (stripped)",
                s["checksum"].get<std::string>().c_str());
    std::printf("      = %s\n", s["recipe"].get<std::string>().c_str());
  }
  std::printf("sources (%zu):\n", j["sources"].size());
  for (const auto& s : j["sources"])
    std::printf("  %-36s %s%s %s\n", s["name"].get<std::string>().c_str(),
                s["dtype"].get<std::string>().c_str(), to_string(s["dims"].get<Dims>()).c_str(),
                s["refittable"].get<bool>() ? "refittable" : "fixed");
  std::printf("build report:\n");
  for (const auto& r : j["build_report"])
    std::printf("  [%s] %s\n", r["kind"].get<std::string>().c_str(),
                r["description"].get<std::string>().c_str());
}

// Plans are recognised by their magic. Everything else that looks like a checkpoint goes to
// the checkpoint reader; other files stay with the plan loader, whose error names them.
bool is_plan_file(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) return false;
  char magic[8] = {};
  std::ifstream(path, std::ios::binary).read(magic, sizeof magic);
  if (std::string_view(magic, 8) == std::string_view("BINDERY\0", 8)) return true;
  const std::string ext = fs::path(path).extension().string();
  const bool zip = std::string_view(magic, 4) == std::string_view("PK\x03\x04", 4);
  return !(zip || ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth" ||
           ext == ".json");
}

}  // namespace

Command add_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "inspect",
      "Show a plan (flags, inputs, layers, slots and recipes, build report) or a checkpoint "
      "file or directory (tensors, dtypes, shapes, sizes, shards)");
  auto path = std::make_shared<std::string>();
  auto as_json = std::make_shared<bool>(false);
  cmd->add_option("path", *path, "Plan file, or checkpoint file or directory")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_flag("--json", *as_json, "Print JSON");
  return [path, as_json] {
    if (!is_plan_file(*path)) return inspect_checkpoint(*path, *as_json);
    const Plan plan = Plan::load(*path);
    const auto size = static_cast<size_t>(std::filesystem::file_size(*path));
    const json j = to_json(plan, *path, size);
    if (*as_json)
      std::cout << j.dump(2) << "\n";
    else
      print_text(j);
    return 0;
  };
}

}  // namespace bindery::cli
