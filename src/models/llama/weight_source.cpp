#include "models/llama/weight_source.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "bindery/error.h"
#include "bindery/models/meta_llama.h"
#include "models/llama/meta_checkpoint.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;

std::string stored_text(const io::StoredTensor& t) {
  return std::string(io::element_type_name(t.dtype)) + to_string(t.shape);
}

}  // namespace

LlamaWeightSource::LlamaWeightSource(LlamaWeightSource&&) noexcept = default;
LlamaWeightSource& LlamaWeightSource::operator=(LlamaWeightSource&&) noexcept = default;
LlamaWeightSource::~LlamaWeightSource() = default;

LlamaWeightSource LlamaWeightSource::open(const std::string& dir) {
  if (is_meta_llama_checkpoint(dir)) return open_meta(dir);
  check(
      !fs::is_directory(dir) || fs::exists(fs::path(dir) / "config.json") || !has_meta_shards(dir),
      ErrorCode::kNOT_FOUND,
      "checkpoint " + dir +
          " has consolidated.NN.pth shards but neither params.json (a Meta checkpoint) nor "
          "config.json (a Hugging Face one)");
  LlamaWeightSource s;
  s.dir_ = dir;
  s.config_file_ = fs::is_directory(dir) ? (fs::path(dir) / "config.json").string() : dir;
  s.config_ = LlamaConfig::load(dir);
  s.gptq_ = read_gptq_config(dir);
  s.reader_ = std::make_unique<io::CheckpointReader>(io::CheckpointReader::open(dir));
  return s;
}

LlamaWeightSource LlamaWeightSource::open_meta(const std::string& dir) {
  check(fs::is_directory(dir), ErrorCode::kNOT_FOUND, "no such checkpoint directory: " + dir);
  const fs::path params = fs::path(dir) / "params.json";
  check(fs::is_regular_file(params), ErrorCode::kNOT_FOUND,
        dir + " is not a Meta checkpoint: it has no params.json");
  std::ifstream in(params, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  check(in.good() || in.eof(), ErrorCode::kIO, "cannot read " + params.string());
  LlamaWeightSource s;
  s.dir_ = dir;
  s.config_file_ = params.string();
  s.config_ = meta_params_config(text.str(), s.config_file_);  // its errors before the shards'
  s.reader_ = std::make_unique<io::CheckpointReader>(io::CheckpointReader::open(dir));
  check(s.reader_->format() == io::CheckpointFormat::kMETA, ErrorCode::kNOT_FOUND,
        dir + " is not a Meta checkpoint: its weights are " +
            std::string(io::checkpoint_format_name(s.reader_->format())) +
            " files, not consolidated.NN.pth");
  s.meta_ = std::make_unique<MetaCheckpoint>(*s.reader_, text.str(), s.config_file_);
  s.config_ = s.meta_->config();
  return s;
}

bool LlamaWeightSource::contains(const std::string& name) const {
  if (meta_) return meta_->contains(name);
  return reader_->contains(name) || (gptq_ && is_gptq_weight(*reader_, name));
}

Weights LlamaWeightSource::weights(const std::string& name, const TensorDesc& desc,
                                   std::vector<HostTensor>& keep) const {
  if (meta_) return meta_->weights(name, desc, keep);
  if (gptq_ && is_gptq_weight(*reader_, name)) {
    keep.push_back(dequantize_gptq(*reader_, *gptq_, name, desc));
    return keep.back().view();
  }
  const io::StoredTensor& t = reader_->tensor(name);
  check(t.shape == desc.dims, ErrorCode::kSHAPE_MISMATCH,
        "tensor '" + name + "' in " + t.file + " is " + stored_text(t) + "; the model expects " +
            to_string(desc));
  check(io::is_floating(t.dtype) == is_floating(desc.dtype), ErrorCode::kDTYPE_MISMATCH,
        "tensor '" + name + "' in " + t.file + " is " + stored_text(t) + "; the model expects " +
            to_string(desc));
  if (io::to_data_type(t.dtype) == desc.dtype && t.is_contiguous()) return reader_->view(name);
  keep.push_back(reader_->read(name, desc.dtype));
  return keep.back().view();
}

std::string LlamaWeightSource::naming_note(const std::vector<std::string>& names) const {
  if (!meta_ || names.empty()) return "";
  std::string out;
  for (size_t i = 0; i < names.size() && i < 20; ++i) {
    const std::string meta = meta_name_of(names[i]);
    out += std::string(i ? ", " : "") + "'" + (meta.empty() ? "?" : meta) + "'";
  }
  if (names.size() > 20) out += ", ...";
  return " (Meta's names: " + out + ")";
}

std::vector<std::string> LlamaWeightSource::unused(const std::set<std::string>& used) const {
  if (meta_) return meta_->unused(used);
  std::set<std::string> taken = used;
  if (gptq_)
    for (const std::string& name : used)
      if (is_gptq_weight(*reader_, name))
        for (std::string& part : gptq_parts(name)) taken.insert(std::move(part));
  std::vector<std::string> out;
  for (const io::StoredTensor& t : reader_->tensors())
    if (!taken.count(t.name)) out.push_back(t.name);
  return out;
}

std::unique_ptr<io::CheckpointReader> LlamaWeightSource::release_reader() {
  return std::move(reader_);
}

}  // namespace bindery::models
