// safetensors reading, validation and sharded indexes.
//
// The checks are the reference implementation's (safetensors/src/tensor.rs: read_metadata and
// Metadata::validate), made stricter where it is lenient: a header must start with '{', an
// entry must have exactly dtype, shape and data_offsets, and a key repeated in any object is
// refused (serde and nlohmann both silently keep one of the two). Which error code each check
// gives is listed in include/bindery/io/safetensors.h.
//
// The JSON is parsed with a callback that counts nesting and collects each object's keys, so a
// hostile header can neither hide a second entry for a tensor behind the first nor nest deep
// enough to matter. Error messages describe a bad JSON value by its type (and its text for
// scalars), never by dumping it whole: the value may be large.

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <utility>

#include "bindery/error.h"
#include "bindery/io/safetensors.h"
#include "core/mapped_file.h"

namespace bindery::io {

namespace {

using Json = nlohmann::json;

constexpr size_t kHEADER_LENGTH_SIZE = 8;
// A valid header nests three deep (object, entry, shape); the slack keeps the messages about
// a wrongly typed field specific, the limit keeps hostile input from nesting without bound.
constexpr int kMAX_JSON_DEPTH = 16;

uint64_t get_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint64_t>(p[i]);
  return v;
}

// 'x' for a printable character, else its code: 0x00.
std::string describe_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) return std::string{'\'', c, '\''};
  const char* hex = "0123456789abcdef";
  return std::string{'0', 'x', hex[u >> 4], hex[u & 15]};
}

// A name or string from the file, quoted for a message, and clipped: it may be huge.
std::string single_quoted(std::string_view s) {
  constexpr size_t kMAX_SHOWN = 200;
  std::string q;  // not "'" + s + "'", which trips GCC 12's -Wrestrict false positive
  q.reserve(std::min(s.size(), kMAX_SHOWN) + 20);
  q.append(1, '\'').append(s.substr(0, kMAX_SHOWN)).append(1, '\'');
  if (s.size() > kMAX_SHOWN) q += " (" + std::to_string(s.size()) + " bytes, clipped)";
  return q;
}

// "[begin, end)".
std::string range_text(int64_t begin, int64_t end) {
  std::string r = "[";  // appended, not "[" + ..., for the reason above
  r.append(std::to_string(begin)).append(", ").append(std::to_string(end)).append(")");
  return r;
}

// "an array of 2", "the number -1", "the string 'F32'": for messages about a value of the
// wrong kind. Only scalars are printed (strings clipped); containers are named by their type.
std::string describe(const Json& v) {
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array of " + std::to_string(v.size());
  if (v.is_string()) return "the string " + single_quoted(v.get_ref<const std::string&>());
  if (v.is_number()) return "the number " + v.dump();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  return "null";
}

// Parses `text` as JSON, refusing keys repeated within one object and nesting deeper than
// kMAX_JSON_DEPTH. `what` names the text in errors ("safetensors 'x': the header"); `base` is
// the text's offset in its file, so positions are given in both.
Json parse_json_strict(std::string_view text, const std::string& what, size_t base) {
  struct Frame {
    bool is_object;
    std::set<std::string> keys;
    std::string last_key;
  };
  std::vector<Frame> frames;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        check(static_cast<int>(frames.size()) < kMAX_JSON_DEPTH, ErrorCode::kCORRUPT_FILE,
              what + " nests JSON deeper than " + std::to_string(kMAX_JSON_DEPTH) +
                  " levels; safetensors headers nest 3");
        frames.push_back({event == Json::parse_event_t::object_start, {}, {}});
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end: frames.pop_back(); break;
      case Json::parse_event_t::key: {
        Frame& f = frames.back();
        f.last_key = parsed.get<std::string>();
        if (!f.keys.insert(f.last_key).second) {
          std::string where;
          for (size_t i = frames.size() - 1; i-- > 0 && where.empty();)
            if (frames[i].is_object)
              where = " in the value of " + single_quoted(frames[i].last_key);
          throw Error(ErrorCode::kCORRUPT_FILE, what +
                                                    (where.empty() ? " names " : " has the key ") +
                                                    single_quoted(f.last_key) + " twice" + where +
                                                    " (each name may appear once)");
        }
        break;
      }
      case Json::parse_event_t::value: break;
    }
    return true;
  };
  // nlohmann takes a NUL byte for the end of the input and ignores what follows; valid JSON
  // holds none (not even in strings, where control characters must be escaped).
  const size_t nul = text.find('\0');
  check(nul == std::string_view::npos, ErrorCode::kCORRUPT_FILE,
        what + " is not valid JSON: a NUL byte at byte " + std::to_string(nul) +
            " of it (file offset " + std::to_string(base + nul) + ")");
  try {
    return Json::parse(text.begin(), text.end(), callback);
  } catch (const Json::parse_error& e) {
    const size_t at = e.byte > 0 ? e.byte - 1 : 0;
    throw Error(ErrorCode::kCORRUPT_FILE, what + " is not valid JSON: error at byte " +
                                              std::to_string(at) + " of it (file offset " +
                                              std::to_string(base + at) + "): " + e.what());
  } catch (const Json::exception& e) {  // e.g. a number too large for a double
    throw Error(ErrorCode::kCORRUPT_FILE, what + " is not valid JSON: " + e.what());
  }
}

std::string known_dtypes() {
  std::string s;
  for (int i = 0; i <= static_cast<int>(ElementType::kBOOL); ++i) {
    if (i) s += ", ";
    s += element_type_name(static_cast<ElementType>(i));
  }
  return s;
}

// A non-negative JSON integer (nlohmann parses those as number_unsigned) that fits int64.
bool get_index(const Json& v, int64_t& out) {
  if (!v.is_number_unsigned()) return false;
  const uint64_t u = v.get<uint64_t>();
  if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
  out = static_cast<int64_t>(u);
  return true;
}

struct Entry {
  std::string name;
  ElementType dtype;
  Dims shape;
  int64_t begin;
  int64_t end;
};

// One tensor's entry, checked on its own: the fields, the dtype, the offsets within the data
// section and the byte count. The layout of all entries together is checked afterwards.
Entry parse_entry(const std::string& prefix, const std::string& name, const Json& v,
                  int64_t data_size, uint64_t file_size) {
  const std::string tensor = prefix + "tensor " + single_quoted(name);
  check(v.is_object(), ErrorCode::kCORRUPT_FILE,
        tensor + " is described by " + describe(v) +
            ", expected an object with dtype, shape and data_offsets");
  for (const auto& [key, _] : v.items())
    check(key == "dtype" || key == "shape" || key == "data_offsets", ErrorCode::kCORRUPT_FILE,
          tensor + " has an unknown field " + single_quoted(key) +
              " (expected exactly dtype, shape and data_offsets)");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    check(v.contains(key), ErrorCode::kCORRUPT_FILE, tensor + " has no " + single_quoted(key));

  Entry e{name, ElementType::kF32, {}, 0, 0};
  const Json& dtype = v["dtype"];
  check(dtype.is_string(), ErrorCode::kCORRUPT_FILE,
        tensor + " has dtype " + describe(dtype) + ", expected a string");
  const std::string& dtype_name = dtype.get_ref<const std::string&>();
  const std::optional<ElementType> t = parse_element_type(dtype_name);
  check(t.has_value(), ErrorCode::kUNSUPPORTED,
        tensor + " has dtype " + single_quoted(dtype_name) +
            ", which bindery does not read (known: " + known_dtypes() + ")");
  e.dtype = *t;

  const Json& shape = v["shape"];
  check(shape.is_array(), ErrorCode::kCORRUPT_FILE,
        tensor + " has shape " + describe(shape) + ", expected an array of non-negative integers");
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t d = 0;
    check(get_index(shape[i], d), ErrorCode::kCORRUPT_FILE,
          tensor + " has " + describe(shape[i]) + " as dim " + std::to_string(i) +
              " of its shape, expected a non-negative integer below 2^63");
    e.shape.push_back(d);
  }

  const Json& offsets = v["data_offsets"];
  check(offsets.is_array() && offsets.size() == 2 && get_index(offsets[0], e.begin) &&
            get_index(offsets[1], e.end),
        ErrorCode::kCORRUPT_FILE,
        tensor + " has data_offsets " +
            (offsets.is_array() ? "that are not" : describe(offsets) + ", expected") +
            " [begin, end] with two non-negative integers");
  const std::string range = range_text(e.begin, e.end);
  check(e.begin <= e.end, ErrorCode::kCORRUPT_FILE,
        tensor + " has data_offsets " + range + " that begin after they end");
  check(e.end <= data_size, ErrorCode::kTRUNCATED_FILE,
        tensor + " has data_offsets " + range + " past the end of the data section of " +
            std::to_string(data_size) + " bytes (the file ends at byte " +
            std::to_string(file_size) + ")");

  // Every partial product (and so every stride) of max(dim, 1) fits int64, and with it
  // volume(shape) and the byte size, whatever the order of the dims.
  int64_t bound = element_size(e.dtype);
  bool overflow = false;
  for (int64_t d : e.shape)
    overflow = overflow || __builtin_mul_overflow(bound, std::max<int64_t>(d, 1), &bound);
  const std::string what_shape =
      tensor + " has shape " + to_string(e.shape) + " of " + std::string(dtype_name);
  check(!overflow, ErrorCode::kSHAPE_MISMATCH,
        what_shape + ", whose byte size overflows 64 bits, but data_offsets " + range + " hold " +
            std::to_string(e.end - e.begin) + " bytes");
  const int64_t bytes = volume(e.shape) * element_size(e.dtype);  // at most `bound`
  check(bytes == e.end - e.begin, ErrorCode::kSHAPE_MISMATCH,
        what_shape + ", which needs " + std::to_string(bytes) + " bytes, but data_offsets " +
            range + " hold " + std::to_string(e.end - e.begin) + " bytes");
  return e;
}

std::map<std::string, std::string> parse_metadata(const std::string& prefix, const Json& v) {
  check(v.is_object(), ErrorCode::kCORRUPT_FILE,
        prefix + "__metadata__ is " + describe(v) + ", expected an object of strings");
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : v.items()) {
    check(value.is_string(), ErrorCode::kCORRUPT_FILE,
          prefix + "__metadata__ key " + single_quoted(key) + " has " + describe(value) +
              " as its value, expected a string");
    metadata.emplace(key, value.get<std::string>());
  }
  return metadata;
}

// The reference rule: sorted by (begin, end), each tensor begins where the previous one ends
// and the last ends where the data section does. Empty tensors may share an offset.
void check_layout(const std::string& prefix, std::vector<Entry>& entries, int64_t data_size) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  auto range = [](const Entry& e) { return range_text(e.begin, e.end); };
  int64_t end = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < end)
      throw Error(ErrorCode::kCORRUPT_FILE,
                  prefix + "tensors " + single_quoted(previous->name) + " " + range(*previous) +
                      " and " + single_quoted(e.name) + " " + range(e) + " overlap");
    if (e.begin > end) {
      const std::string gap =
          "a hole of " + std::to_string(e.begin - end) + " bytes " + range_text(end, e.begin);
      throw Error(ErrorCode::kCORRUPT_FILE,
                  prefix + "the data section has " + gap +
                      (previous ? " between tensors " + single_quoted(previous->name) + " and "
                                : " before the first tensor, ") +
                      single_quoted(e.name) + " (tensors must cover it without gaps)");
    }
    end = e.end;
    previous = &e;
  }
  check(end == data_size, ErrorCode::kCORRUPT_FILE,
        prefix + "the data section has " + std::to_string(data_size - end) +
            " trailing bytes after " +
            (previous ? "the last tensor " + single_quoted(previous->name)
                      : std::string("no tensors")) +
            " (tensors end at " + std::to_string(end) + " of " + std::to_string(data_size) + ")");
}

}  // namespace

ParsedSafetensors parse_safetensors(std::span<const std::byte> bytes, const std::string& path) {
  const std::string prefix = "safetensors '" + path + "': ";
  const uint64_t size = bytes.size();
  check(size >= kHEADER_LENGTH_SIZE, ErrorCode::kTRUNCATED_FILE,
        prefix + "the file has " + std::to_string(size) +
            " bytes, fewer than the 8 of the header length");
  const uint64_t n = get_u64(bytes.data());
  check(n <= static_cast<uint64_t>(kMAX_SAFETENSORS_HEADER), ErrorCode::kCORRUPT_FILE,
        prefix + "header length " + std::to_string(n) + " exceeds the limit of " +
            std::to_string(kMAX_SAFETENSORS_HEADER) + " bytes");
  check(n <= size - kHEADER_LENGTH_SIZE, ErrorCode::kTRUNCATED_FILE,
        prefix + "the header of " + std::to_string(n) + " bytes ends at byte " +
            std::to_string(n + kHEADER_LENGTH_SIZE) + ", past the end of the file (" +
            std::to_string(size) + " bytes)");
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + kHEADER_LENGTH_SIZE, n);
  check(
      !text.empty() && text.front() == '{', ErrorCode::kCORRUPT_FILE,
      prefix + "the header does not start with '{' (" +
          (text.empty() ? std::string("it is empty") : "it starts with " + describe_byte(text[0])) +
          ")");
  const Json header = parse_json_strict(text, prefix + "the header", kHEADER_LENGTH_SIZE);
  check(header.is_object(), ErrorCode::kCORRUPT_FILE,
        prefix + "the header is " + describe(header) + ", expected a JSON object");

  ParsedSafetensors parsed;
  parsed.data_offset = static_cast<int64_t>(kHEADER_LENGTH_SIZE + n);
  const int64_t data_size = static_cast<int64_t>(size) - parsed.data_offset;
  std::vector<Entry> entries;
  entries.reserve(header.size());
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__")
      parsed.metadata = parse_metadata(prefix, value);
    else
      entries.push_back(parse_entry(prefix, key, value, data_size, size));
  }
  check_layout(prefix, entries, data_size);

  const std::byte* data = bytes.data() + parsed.data_offset;
  parsed.tensors.reserve(entries.size());
  for (Entry& e : entries) {
    StoredTensor t;
    t.name = std::move(e.name);
    t.dtype = e.dtype;
    t.strides = io::contiguous_strides(e.shape);
    t.shape = std::move(e.shape);
    t.data = data + e.begin;
    t.file = path;
    t.file_offset = parsed.data_offset + e.begin;
    parsed.tensors.push_back(std::move(t));
  }
  return parsed;
}

SafetensorsFile::SafetensorsFile() = default;
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = std::make_unique<MappedFile>(MappedFile::open(path));
  ParsedSafetensors parsed =
      parse_safetensors(std::span<const std::byte>(f.file_->data(), f.file_->size()), path);
  f.tensors_ = std::move(parsed.tensors);
  f.metadata_ = std::move(parsed.metadata);
  f.data_offset_ = parsed.data_offset;
  return f;
}

const std::string& SafetensorsFile::path() const { return file_->path(); }

std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  const std::string prefix = "sharded index '" + index_path + "': ";
  std::error_code ec;
  check(std::filesystem::exists(index_path, ec), ErrorCode::kNOT_FOUND,
        prefix + "no such file" + (ec ? " (" + ec.message() + ")" : std::string()));
  const MappedFile file = MappedFile::open(index_path);
  check(file.size() <= static_cast<size_t>(kMAX_SAFETENSORS_HEADER), ErrorCode::kCORRUPT_FILE,
        prefix + "the file has " + std::to_string(file.size()) + " bytes, more than the limit of " +
            std::to_string(kMAX_SAFETENSORS_HEADER));
  const std::string_view text(reinterpret_cast<const char*>(file.data()), file.size());
  const Json index = parse_json_strict(text, prefix + "the index", 0);
  check(index.is_object(), ErrorCode::kCORRUPT_FILE,
        prefix + "the index is " + describe(index) + ", expected a JSON object");
  check(index.contains("weight_map"), ErrorCode::kCORRUPT_FILE,
        prefix + "the index has no \"weight_map\"");
  const Json& map = index["weight_map"];
  check(map.is_object(), ErrorCode::kCORRUPT_FILE,
        prefix + "\"weight_map\" is " + describe(map) +
            ", expected an object of tensor name -> shard file name");

  std::map<std::string, std::string> weights;
  for (const auto& [name, shard] : map.items()) {
    const std::string tensor = prefix + "tensor " + single_quoted(name);
    check(shard.is_string(), ErrorCode::kCORRUPT_FILE,
          tensor + " maps to " + describe(shard) + ", expected a shard file name");
    const std::string& file_name = shard.get_ref<const std::string&>();
    // The shard is opened beside the index: anything but a plain name could leave its folder.
    const bool plain = !file_name.empty() && file_name != "." && file_name != ".." &&
                       file_name.find_first_of(std::string_view("/\\\0", 3)) == std::string::npos;
    check(plain, ErrorCode::kCORRUPT_FILE,
          tensor + " maps to the shard " + single_quoted(file_name) +
              ", expected a plain file name (not empty, not '.' or '..', no '/', '\\' or NUL)");
    weights.emplace(name, file_name);
  }
  return weights;
}

}  // namespace bindery::io
