#include "bindery/io/checkpoint_reader.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <unordered_map>

#include "bindery/error.h"
#include "bindery/io/safetensors.h"
#include "bindery/io/torch_checkpoint.h"
#include "core/names.h"
#include "io/bulk_read.h"
#include "io/tensor_convert.h"

namespace bindery::io {
namespace fs = std::filesystem;

namespace {

// The file layouts a directory may hold, in the order they are looked for.
constexpr const char* kLAYOUTS =
    "model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json, "
    "pytorch_model.bin, consolidated.NN.pth, or *.safetensors";

bool starts_with_zip_magic(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::string_view(magic, 4) == std::string_view("PK\x03\x04", 4);
}

bool is_torch_file(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".bin" || ext == ".pt" || ext == ".pth" || starts_with_zip_magic(p);
}

std::vector<fs::path> matching(const fs::path& dir, const std::regex& pattern) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file() && std::regex_match(entry.path().filename().string(), pattern))
      out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::string_view checkpoint_format_name(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kSAFETENSORS: return "safetensors";
    case CheckpointFormat::kTORCH: return "torch";
    case CheckpointFormat::kMETA: return "meta";
  }
  return "?";
}

struct CheckpointReader::Impl {
  CheckpointFormat format = CheckpointFormat::kSAFETENSORS;
  std::string path;
  std::vector<std::string> files;
  std::vector<SafetensorsFile> safetensors;
  std::vector<TorchCheckpoint> torch;
  std::vector<StoredTensor> tensors;
  std::unordered_map<std::string_view, size_t> by_name;  // first tensor of each name
  std::map<std::string, std::string> metadata;
  int64_t total_bytes = 0;

  void add_safetensors(const fs::path& file) {
    files.push_back(file.string());
    safetensors.push_back(SafetensorsFile::open(file.string()));
    for (const auto& [k, v] : safetensors.back().metadata()) metadata.emplace(k, v);
    add_tensors(safetensors.back().tensors());
  }
  void add_torch(const fs::path& file) {
    files.push_back(file.string());
    torch.push_back(TorchCheckpoint::open(file.string()));
    add_tensors(torch.back().tensors());
  }
  void add_tensors(const std::vector<StoredTensor>& list) {
    tensors.insert(tensors.end(), list.begin(), list.end());
  }

  // Shards named by an index (weight_map), each opened once; every tensor the index names
  // must be in the shard it names.
  void add_sharded(const fs::path& index, bool is_safetensors) {
    const std::map<std::string, std::string> weight_map = read_weight_map(index.string());
    std::vector<std::string> shards;
    for (const auto& [name, shard] : weight_map)
      if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    std::sort(shards.begin(), shards.end());
    for (const std::string& shard : shards) {
      const fs::path file = index.parent_path() / shard;
      check(fs::is_regular_file(file), ErrorCode::kNOT_FOUND,
            index.string() + " names shard '" + shard + "', which does not exist in " +
                index.parent_path().string());
      if (is_safetensors)
        add_safetensors(file);
      else
        add_torch(file);
    }
    index_names(false);
    for (const auto& [name, shard] : weight_map) {
      auto it = by_name.find(name);
      check(it != by_name.end() && fs::path(tensors[it->second].file).filename() == shard,
            ErrorCode::kNOT_FOUND,
            index.string() + " names tensor '" + name + "' in shard '" + shard +
                "', but that shard does not hold it");
    }
  }

  void open_directory(const fs::path& dir) {
    const auto has = [&](const char* name) { return fs::is_regular_file(dir / name); };
    if (has("model.safetensors.index.json")) {
      add_sharded(dir / "model.safetensors.index.json", true);
    } else if (has("model.safetensors")) {
      add_safetensors(dir / "model.safetensors");
    } else if (has("pytorch_model.bin.index.json")) {
      format = CheckpointFormat::kTORCH;
      add_sharded(dir / "pytorch_model.bin.index.json", false);
    } else if (has("pytorch_model.bin")) {
      format = CheckpointFormat::kTORCH;
      add_torch(dir / "pytorch_model.bin");
    } else if (auto meta = matching(dir, std::regex(R"(consolidated\.\d+\.pth)")); !meta.empty()) {
      format = CheckpointFormat::kMETA;
      for (const fs::path& p : meta) add_torch(p);
    } else if (auto any = matching(dir, std::regex(R"(.+\.safetensors)")); !any.empty()) {
      for (const fs::path& p : any) add_safetensors(p);
    } else {
      throw Error(ErrorCode::kNOT_FOUND,
                  "no checkpoint in directory " + dir.string() + ": looked for " + kLAYOUTS);
    }
  }

  void open_file(const fs::path& file) {
    const std::string name = file.filename().string();
    if (name.ends_with(".index.json")) {
      const bool st = name.find("safetensors") != std::string::npos;
      if (!st) format = CheckpointFormat::kTORCH;
      add_sharded(file, st);
    } else if (is_torch_file(file)) {
      format = CheckpointFormat::kTORCH;
      add_torch(file);
    } else {
      add_safetensors(file);
    }
  }

  // Meta shards repeat replicated tensors (norms) and split others under the same name: keep
  // every entry. Other layouts hold each name once.
  void index_names(bool allow_repeats) {
    by_name.clear();
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto [it, fresh] = by_name.emplace(tensors[i].name, i);
      check(fresh || allow_repeats, ErrorCode::kCORRUPT_FILE,
            "tensor '" + tensors[i].name + "' appears twice: in " + tensors[it->second].file +
                " and in " + tensors[i].file);
    }
  }

  const StoredTensor& find(std::string_view name) const {
    auto it = by_name.find(name);
    if (it != by_name.end()) return tensors[it->second];
    std::vector<std::string> names;
    names.reserve(tensors.size());
    for (const StoredTensor& t : tensors) names.push_back(t.name);
    const std::vector<std::string> near = closest_names(name, names, 1);
    throw Error(ErrorCode::kNOT_FOUND,
                "checkpoint " + path + " has no tensor '" + std::string(name) + "'" +
                    (near.empty() ? "" : "; did you mean '" + near[0] + "'?"));
  }
};

CheckpointReader::CheckpointReader() : impl_(std::make_unique<Impl>()) {}
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
CheckpointReader::~CheckpointReader() = default;

CheckpointReader CheckpointReader::open(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  const fs::file_status status = fs::status(p, ec);
  check(!ec && fs::exists(status), ErrorCode::kNOT_FOUND, "no such checkpoint: " + path);
  CheckpointReader reader;
  Impl& impl = *reader.impl_;
  impl.path = path;
  if (fs::is_directory(status))
    impl.open_directory(p);
  else
    impl.open_file(p);
  impl.index_names(impl.format == CheckpointFormat::kMETA);
  for (const StoredTensor& t : impl.tensors) impl.total_bytes += t.size_bytes();
  return reader;
}

CheckpointFormat CheckpointReader::format() const { return impl_->format; }
const std::string& CheckpointReader::path() const { return impl_->path; }
const std::vector<std::string>& CheckpointReader::files() const { return impl_->files; }
const std::vector<StoredTensor>& CheckpointReader::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& CheckpointReader::metadata() const {
  return impl_->metadata;
}
int64_t CheckpointReader::total_bytes() const { return impl_->total_bytes; }

bool CheckpointReader::contains(std::string_view name) const {
  return impl_->by_name.count(name) > 0;
}

const StoredTensor& CheckpointReader::tensor(std::string_view name) const {
  return impl_->find(name);
}

Weights CheckpointReader::view(std::string_view name) const {
  const StoredTensor& t = impl_->find(name);
  const std::optional<DataType> type = to_data_type(t.dtype);
  check(type.has_value(), ErrorCode::kUNSUPPORTED,
        "tensor '" + t.name + "' is " + std::string(element_type_name(t.dtype)) +
            ", which has no bindery type to view it as; read() it converted instead");
  check(t.is_contiguous(), ErrorCode::kUNSUPPORTED,
        "tensor '" + t.name + "' in " + t.file +
            " is not contiguous (a strided view of its storage); read() it instead");
  return Weights(*type, t.shape, t.data);
}

HostTensor CheckpointReader::read(std::string_view name, std::optional<DataType> as) const {
  const StoredTensor& t = impl_->find(name);
  const std::optional<DataType> type = as ? as : to_data_type(t.dtype);
  check(type.has_value(), ErrorCode::kDTYPE_MISMATCH,
        "tensor '" + t.name + "' is " + std::string(element_type_name(t.dtype)) +
            "; name a type to convert it to (f32, f16, bf16 for floats)");
  check(can_convert(t.dtype, *type), ErrorCode::kDTYPE_MISMATCH,
        "cannot convert tensor '" + t.name + "' from " + std::string(element_type_name(t.dtype)) +
            " to " + std::string(dtype_name(*type)));
  HostTensor out(*type, t.shape);
  copy_converted(t, out.data(), type);
  return out;
}

void CheckpointReader::read_into(std::span<const ReadTarget> targets,
                                 const ReadOptions& options) const {
  std::vector<BulkCopy> copies;
  copies.reserve(targets.size());
  for (const ReadTarget& target : targets) {
    const StoredTensor& t = impl_->find(target.name);
    if (target.as)
      check(can_convert(t.dtype, *target.as), ErrorCode::kDTYPE_MISMATCH,
            "cannot convert tensor '" + t.name + "' from " +
                std::string(element_type_name(t.dtype)) + " to " +
                std::string(dtype_name(*target.as)));
    const int64_t need = converted_bytes(t, target.as);
    check(target.capacity >= need, ErrorCode::kINVALID_ARGUMENT,
          "buffer for tensor '" + t.name + "' holds " + std::to_string(target.capacity) +
              " bytes; it needs " + std::to_string(need));
    check(target.dst != nullptr || need == 0, ErrorCode::kINVALID_ARGUMENT,
          "buffer for tensor '" + t.name + "' is null");
    copies.push_back({&t, target.dst, target.as});
  }
  bulk_read(copies, options);
}

}  // namespace bindery::io
