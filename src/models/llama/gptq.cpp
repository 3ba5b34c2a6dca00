#include "models/llama/gptq.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bindery/error.h"
#include "core/half.h"

namespace bindery::models {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  check(in.good(), ErrorCode::kIO, "cannot read " + file.string());
  std::stringstream text;
  text << in.rdbuf();
  try {
    return json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::kCORRUPT_FILE, file.string() + " is not valid JSON: " + e.what());
  }
}

GptqConfig parse(const json& q, const std::string& source) {
  check(q.is_object(), ErrorCode::kCORRUPT_FILE,
        source + ": the quantization config is not an object");
  const auto has = [&](const char* k) { return q.contains(k) && !q.at(k).is_null(); };
  const auto field = [&](const char* k) { return source + ": field '" + k + "' "; };
  const auto integer = [&](const char* k, int64_t fallback) {
    if (!has(k)) return fallback;
    check(q.at(k).is_number_integer(), ErrorCode::kINVALID_ARGUMENT,
          field(k) + "must be an integer, found " + q.at(k).dump());
    return q.at(k).get<int64_t>();
  };
  const auto boolean = [&](const char* k, bool fallback) {
    if (!has(k)) return fallback;
    check(q.at(k).is_boolean(), ErrorCode::kINVALID_ARGUMENT,
          field(k) + "must be true or false, found " + q.at(k).dump());
    return q.at(k).get<bool>();
  };
  const auto string = [&](const char* k, const std::string& fallback) {
    if (!has(k)) return fallback;
    check(q.at(k).is_string(), ErrorCode::kINVALID_ARGUMENT,
          field(k) + "must be a string, found " + q.at(k).dump());
    return q.at(k).get<std::string>();
  };
  const std::string method = string("quant_method", "gptq");
  check(method == "gptq", ErrorCode::kUNSUPPORTED,
        field("quant_method") + "is '" + method + "'; only gptq checkpoints are supported");
  GptqConfig c;
  c.source = source;
  c.bits = integer("bits", 4);
  check(c.bits == 4, ErrorCode::kUNSUPPORTED,
        field("bits") + "is " + std::to_string(c.bits) + "; only 4-bit GPTQ is supported");
  c.group_size = integer("group_size", 128);
  check(c.group_size == -1 || c.group_size > 0, ErrorCode::kINVALID_ARGUMENT,
        field("group_size") + "must be positive or -1, found " + std::to_string(c.group_size));
  c.desc_act = boolean("desc_act", false);
  c.sym = boolean("sym", true);
  // GPTQModel spells it "format" in older releases.
  const std::string format = string("checkpoint_format", string("format", "gptq"));
  check(format == "gptq" || format == "gptq_v2", ErrorCode::kUNSUPPORTED,
        field("checkpoint_format") + "is '" + format +
            "'; only the gptq (v1) and gptq_v2 packings are supported");
  c.v2 = format == "gptq_v2";
  check(!boolean("is_marlin_format", false), ErrorCode::kUNSUPPORTED,
        field("is_marlin_format") + "is true; the marlin packing is not supported");
  const std::string pack = string("pack_dtype", "int32");
  check(pack == "int32" || pack == "torch.int32", ErrorCode::kUNSUPPORTED,
        field("pack_dtype") + "is '" + pack + "'; only int32 packing is supported");
  return c;
}

std::string prefix_of(const std::string& name) {
  constexpr std::string_view kSUFFIX = ".weight";
  if (name.size() <= kSUFFIX.size() || !name.ends_with(kSUFFIX)) return "";
  return name.substr(0, name.size() - kSUFFIX.size());
}

std::string stored_text(const io::StoredTensor& t) {
  return std::string(io::element_type_name(t.dtype)) + to_string(t.shape);
}

}  // namespace

std::optional<GptqConfig> read_gptq_config(const std::string& dir) {
  if (!fs::is_directory(dir)) return std::nullopt;
  const fs::path config = fs::path(dir) / "config.json";
  if (fs::is_regular_file(config)) {
    const json j = read_json(config);
    if (j.is_object() && j.contains("quantization_config") &&
        !j.at("quantization_config").is_null())
      return parse(j.at("quantization_config"), config.string() + " quantization_config");
  }
  const fs::path quantize = fs::path(dir) / "quantize_config.json";
  if (fs::is_regular_file(quantize)) return parse(read_json(quantize), quantize.string());
  return std::nullopt;
}

bool is_gptq_weight(const io::CheckpointReader& reader, const std::string& name) {
  const std::string prefix = prefix_of(name);
  return !prefix.empty() && !reader.contains(name) && reader.contains(prefix + ".qweight");
}

std::vector<std::string> gptq_parts(const std::string& name) {
  const std::string p = prefix_of(name);
  return {p + ".qweight", p + ".qzeros", p + ".scales", p + ".g_idx"};
}

HostTensor dequantize_gptq(const io::CheckpointReader& reader, const GptqConfig& config,
                           const std::string& name, const TensorDesc& desc) {
  check(desc.dims.size() == 2 && is_floating(desc.dtype), ErrorCode::kINVALID_ARGUMENT,
        "GPTQ weight '" + name + "' must be a float matrix, the model asks for " + to_string(desc));
  const int64_t out = desc.dims[0], in = desc.dims[1];
  const std::vector<std::string> parts = gptq_parts(name);
  for (const std::string& p : parts)
    check(reader.contains(p), ErrorCode::kNOT_FOUND,
          "GPTQ checkpoint lacks '" + p + "' (quantized weight '" + name + "')");
  check(in % 8 == 0 && out % 8 == 0, ErrorCode::kSHAPE_MISMATCH,
        "GPTQ weight '" + name + "' is [" + std::to_string(out) + ", " + std::to_string(in) +
            "]; 4-bit packing needs both dims to be multiples of 8");
  const int64_t groups =
      config.group_size == -1 ? 1 : (in + config.group_size - 1) / config.group_size;
  const auto expect = [&](const std::string& part, io::ElementType type, Dims dims) {
    const io::StoredTensor& t = reader.tensor(part);
    const std::string want = std::string(io::element_type_name(type)) + to_string(dims);
    check(t.shape == dims, ErrorCode::kSHAPE_MISMATCH,
          "tensor '" + part + "' in " + t.file + " is " + stored_text(t) + "; expected " + want +
              " for a " + std::to_string(out) + "x" + std::to_string(in) + " weight in groups of " +
              std::to_string(config.group_size));
    check(t.dtype == type, ErrorCode::kDTYPE_MISMATCH,
          "tensor '" + part + "' in " + t.file + " is " + stored_text(t) + "; expected " + want);
  };
  expect(parts[0], io::ElementType::kI32, {in / 8, out});
  expect(parts[1], io::ElementType::kI32, {groups, out / 8});
  expect(parts[2], io::ElementType::kF16, {groups, out});
  expect(parts[3], io::ElementType::kI32, {in});
  const HostTensor qweight = reader.read(parts[0]);
  const HostTensor qzeros = reader.read(parts[1]);
  const HostTensor scales = reader.read(parts[2], DataType::kFLOAT);
  const HostTensor g_idx = reader.read(parts[3]);
  const auto* qw = qweight.data_as<uint32_t>();
  const auto* qz = qzeros.data_as<uint32_t>();
  const auto* sc = scales.data_as<float>();
  const auto* gi = g_idx.data_as<int32_t>();
  for (int64_t i = 0; i < in; ++i)
    check(gi[i] >= 0 && gi[i] < groups, ErrorCode::kINVALID_ARGUMENT,
          "tensor '" + parts[3] + "' maps input row " + std::to_string(i) + " to group " +
              std::to_string(gi[i]) + "; there are " + std::to_string(groups) + " groups");
  // zero[g, o] as an int: v1 stores zero - 1.
  std::vector<int32_t> zero(groups * out);
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t o = 0; o < out; ++o)
      zero[g * out + o] = static_cast<int32_t>((qz[g * (out / 8) + o / 8] >> (4 * (o % 8))) & 0xF) +
                          (config.v2 ? 0 : 1);
  // (q - zero) is a small integer, exact in f32, so one rounding: the same as the reference's
  // (q - zero).float() * scale.float().
  HostTensor w(DataType::kFLOAT, {out, in});
  float* wp = w.data_as<float>();
  for (int64_t i = 0; i < in; ++i) {
    const int64_t g = gi[i];
    const uint32_t* row = qw + (i / 8) * out;
    const int shift = 4 * static_cast<int>(i % 8);
    for (int64_t o = 0; o < out; ++o) {
      const int32_t q = static_cast<int32_t>((row[o] >> shift) & 0xF);
      wp[o * in + i] = static_cast<float>(q - zero[g * out + o]) * sc[g * out + o];
    }
  }
  if (desc.dtype == DataType::kFLOAT) return w;
  HostTensor converted(desc.dtype, {out, in});
  convert_floats(DataType::kFLOAT, w.data(), desc.dtype, converted.data(), out * in);
  return converted;
}

}  // namespace bindery::models
