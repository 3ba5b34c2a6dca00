// bindery inspect <checkpoint file or dir> [--json]: one row per tensor (name, dtype, shape,
// size), totals by dtype, the format and its shards.

#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "bindery/io/checkpoint_reader.h"
#include "commands.h"
#include "format.h"

namespace bindery::cli {

namespace {

using nlohmann::json;

json to_json(const io::CheckpointReader& reader) {
  json j;
  j["path"] = reader.path();
  j["format"] = io::checkpoint_format_name(reader.format());
  j["shard_count"] = reader.shard_count();
  j["files"] = reader.files();
  j["metadata"] = reader.metadata();
  j["tensor_count"] = reader.tensors().size();
  j["total_bytes"] = reader.total_bytes();
  std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;  // dtype -> (tensors, bytes)
  json tensors = json::array();
  for (const io::StoredTensor& t : reader.tensors()) {
    const std::string dtype(io::element_type_name(t.dtype));
    tensors.push_back({{"name", t.name},
                       {"dtype", dtype},
                       {"shape", t.shape},
                       {"bytes", t.size_bytes()},
                       {"contiguous", t.is_contiguous()},
                       {"file", std::filesystem::path(t.file).filename().string()}});
    by_dtype[dtype].first += 1;
    by_dtype[dtype].second += t.size_bytes();
  }
  j["tensors"] = std::move(tensors);
  j["by_dtype"] = json::object();
  for (const auto& [dtype, totals] : by_dtype)
    j["by_dtype"][dtype] = {{"tensors", totals.first}, {"bytes", totals.second}};
  return j;
}

void print_text(const json& j) {
  const bool sharded = j["shard_count"].get<int>() > 1;
  std::printf("checkpoint %s (%s, %d file%s)\n", j["path"].get<std::string>().c_str(),
              j["format"].get<std::string>().c_str(), j["shard_count"].get<int>(),
              sharded ? "s" : "");
  size_t width = 24;
  for (const auto& t : j["tensors"]) width = std::max(width, t["name"].get<std::string>().size());
  for (const auto& t : j["tensors"]) {
    std::printf("  %-*s %-7s %-18s %10s%s%s\n", static_cast<int>(width),
                t["name"].get<std::string>().c_str(), t["dtype"].get<std::string>().c_str(),
                to_string(t["shape"].get<Dims>()).c_str(),
                human_bytes(t["bytes"].get<int64_t>()).c_str(),
                t["contiguous"].get<bool>() ? "" : "  (strided)",
                sharded ? ("  " + t["file"].get<std::string>()).c_str() : "");
  }
  std::printf("total: %zu tensors, %s", j["tensors"].size(),
              human_bytes(j["total_bytes"].get<int64_t>()).c_str());
  for (const auto& [dtype, totals] : j["by_dtype"].items())
    std::printf("; %s %lld (%s)", dtype.c_str(), totals["tensors"].get<long long>(),
                human_bytes(totals["bytes"].get<int64_t>()).c_str());
  std::printf("\n");
}

}  // namespace

int inspect_checkpoint(const std::string& path, bool as_json) {
  const io::CheckpointReader reader = io::CheckpointReader::open(path);
  const json j = to_json(reader);
  if (as_json)
    std::cout << j.dump(2) << "\n";
  else
    print_text(j);
  return 0;
}

}  // namespace bindery::cli
