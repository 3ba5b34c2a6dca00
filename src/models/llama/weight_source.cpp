#include "models/llama/weight_source.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "bindery/error.h"
#include "bindery/models/meta_llama.h"
#include "models/llama/meta_checkpoint.h"
#include "plan/tensor_ops.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;

std::string stored_text(const io::StoredTensor& t) {
  return std::string(io::element_type_name(t.dtype)) + to_string(t.shape);
}

// The stored tensor can become a weight of `desc`: same shape, float for float.
void check_stored(const io::StoredTensor& t, const std::string& name, const TensorDesc& desc) {
  const std::string what = "tensor '" + name + "' in " + t.file + " is " + stored_text(t) +
                           "; the model expects " + to_string(desc);
  check(t.shape == desc.dims, ErrorCode::kSHAPE_MISMATCH, what);
  check(io::is_floating(t.dtype) == is_floating(desc.dtype), ErrorCode::kDTYPE_MISMATCH, what);
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
  check_stored(t, name, desc);
  if (io::to_data_type(t.dtype) == desc.dtype && t.is_contiguous()) return reader_->view(name);
  keep.push_back(reader_->read(name, desc.dtype));
  return keep.back().view();
}

Weights LlamaWeightSource::block(const std::string& name, const TensorDesc& desc,
                                 const SourceBlock& b, std::vector<HostTensor>& keep,
                                 int64_t* bytes_read) const {
  int64_t read = 0;
  const io::StoredTensor* stored =
      meta_ || (gptq_ && is_gptq_weight(*reader_, name)) ? nullptr : &reader_->tensor(name);
  Weights whole;
  if (stored && stored->is_contiguous() && io::to_data_type(stored->dtype).has_value()) {
    check_stored(*stored, name, desc);
    whole = reader_->view(name);  // nothing read yet: a mapping
  } else {
    whole = weights(name, desc, keep);  // made whole (Meta merge, dequantization, strides)
    read = stored ? stored->size_bytes() : whole.size_bytes();
  }
  check(b.axis >= 0 && b.axis < static_cast<int>(whole.shape.size()) && b.start >= 0 &&
            b.length >= 0 && b.start + b.length <= whole.shape[b.axis],
        ErrorCode::kINVALID_ARGUMENT,
        "tensor '" + name + "' " + to_string(whole.shape) + " has no rows [" +
            std::to_string(b.start) + ", " + std::to_string(b.start + b.length) + ") in dim " +
            std::to_string(b.axis));
  int64_t outer = 1;
  for (int k = 0; k < b.axis; ++k) outer *= whole.shape[k];
  Dims dims = whole.shape;
  dims[b.axis] = b.length;
  Weights part;
  if (outer == 1 && whole.dtype == desc.dtype) {  // leading rows: a contiguous run, no copy
    const int64_t row_bytes = whole.shape[b.axis] ? whole.size_bytes() / whole.shape[b.axis] : 0;
    part = Weights(whole.dtype, dims,
                   static_cast<const std::byte*>(whole.values) + b.start * row_bytes);
  } else {
    keep.push_back(slice_axis(whole, b.axis, b.start, b.length));
    if (keep.back().dtype() != desc.dtype) keep.back() = cast(keep.back().view(), desc.dtype);
    part = keep.back().view();
  }
  if (read == 0) read = dtype_bytes(whole.dtype, volume(dims));
  if (bytes_read) *bytes_read += read;
  return part;
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
