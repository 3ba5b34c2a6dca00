// Plan files. Layout (every integer little-endian):
//
//   offset 0   char     magic[8]         "BINDERY\0"
//          8   uint32   format_version   kPLAN_FORMAT_VERSION
//         12   uint32   flags            BuilderFlags::bits (the metadata repeats them)
//         16   uint32   section_count    1 (metadata) or 2 (metadata, weights)
//         20   uint32   reserved         0
//         24   section_count x { uint32 kind (1 metadata, 2 weights); uint32 reserved;
//                                uint64 offset; uint64 size; uint64 checksum }
//              uint64   header_checksum  hash64 of every byte before it
//   metadata   JSON (plan_json.h), right after the header, padded with spaces up to the
//              weights section so that every byte of the file is under a checksum
//   weights    at a kBLOB_ALIGNMENT-aligned offset; the file ends where it ends
//
// Checksums are hash64 (XXH3-64) of each section's bytes. Sections are listed in file order,
// do not overlap, and the file ends where the last one does.
//
// Stripped plans (SerializationOptions::exclude_weights, or a plan that does not hold the
// whole blob, e.g. one loaded stripped): the weights section holds only the non-refittable
// slots, packed in slot order at aligned offsets (plan_json::stripped_layout); when every slot
// is refittable there is no weights section at all, so a stripped plan is the header plus the
// metadata, whatever the size of the weights.
// Slot::offset keeps its meaning in both kinds of plan: the slot's place in the engine's blob
// of blob_size bytes. Storing the baked slots compactly (rather than a sparse full-size blob)
// keeps the file small without relying on holes in the file system.
//
// Frozen plans (include_refit = false): sources and recipes are dropped, every slot becomes
// non-refittable and the refit flags (REFIT, REFIT_INDIVIDUAL, REFIT_IDENTICAL, STRIP_PLAN) are
// cleared, so that flags.refittable() tells the truth about the loaded engine.
//
// Loading checks, in this order, each with its own error: the magic (kBAD_MAGIC, or
// kTRUNCATED_FILE for a file shorter than the magic whose bytes agree so far), the fixed header
// size and the format version (kTRUNCATED_FILE, kVERSION_TOO_NEW: a newer format may change
// the header, so the version is read before the header checksum), the section table size
// (kTRUNCATED_FILE), the header checksum (kCHECKSUM_MISMATCH), the section table (kCORRUPT_FILE;
// kTRUNCATED_FILE if a section ends past the end of the file), each section's checksum
// (kCHECKSUM_MISMATCH), the metadata (kCORRUPT_FILE).

#include "bindery/plan.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "bindery/error.h"
#include "core/hash.h"
#include "core/mapped_file.h"
#include "plan/plan_json.h"

namespace bindery {

namespace {

constexpr char kMAGIC[8] = {'B', 'I', 'N', 'D', 'E', 'R', 'Y', '\0'};
constexpr size_t kFIXED_HEADER_SIZE = 24;
constexpr size_t kSECTION_ENTRY_SIZE = 32;
constexpr size_t kHEADER_CHECKSUM_SIZE = 8;
constexpr uint32_t kSECTION_METADATA = 1;
constexpr uint32_t kSECTION_WEIGHTS = 2;
constexpr const char* kMEMORY_ORIGIN = "<memory>";

uint32_t get_u32(const std::byte* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint32_t>(p[i]);
  return v;
}
uint64_t get_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<uint64_t>(p[i]);
  return v;
}
void put_u32(std::vector<std::byte>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}
void put_u64(std::vector<std::byte>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}

size_t header_size(uint64_t section_count) {
  return kFIXED_HEADER_SIZE + kSECTION_ENTRY_SIZE * section_count + kHEADER_CHECKSUM_SIZE;
}

uint64_t align_up(uint64_t x) {
  const uint64_t a = static_cast<uint64_t>(kBLOB_ALIGNMENT);
  return (x + a - 1) / a * a;
}

const char* section_name(uint32_t kind) {
  return kind == kSECTION_METADATA ? "metadata" : kind == kSECTION_WEIGHTS ? "weights" : "unknown";
}

// "89 50 4e 47 0d 0a 1a 0a (\x89PNG....)": the first bytes of a foreign file.
std::string show_bytes(std::span<const std::byte> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex, text;
  for (size_t i = 0; i < bytes.size() && i < 8; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (i) hex += ' ';
    hex += kHex[c >> 4];
    hex += kHex[c & 15];
    text += c >= 0x20 && c < 0x7f ? static_cast<char>(c) : '.';
  }
  return hex + " (\"" + text + "\")";
}

struct Section {
  uint32_t kind = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint64_t checksum = 0;
};

// A checked file image: the metadata and where the weights section is (size 0: none).
struct Image {
  PlanMetadata meta;
  uint64_t weights_offset = 0;
  uint64_t weights_size = 0;
};

// Re-throws an error of plan_json with the file it came from in front.
[[noreturn]] void rethrow_with_origin(const Error& e, const std::string& origin) {
  throw Error(e.code(), origin + ": " + e.message());
}

Image parse_image(std::span<const std::byte> bytes, const std::string& origin) {
  const size_t n = bytes.size();
  // 1. Magic: a foreign file is told apart from a short one by the bytes it does have.
  const size_t magic_seen = std::min(n, sizeof kMAGIC);
  if (magic_seen > 0 && std::memcmp(bytes.data(), kMAGIC, magic_seen) != 0)
    throw Error(ErrorCode::kBAD_MAGIC, "not a bindery plan: " + origin + " starts with " +
                                           show_bytes(bytes) + ", expected \"BINDERY\\0\"");
  if (n == 0)
    throw Error(ErrorCode::kTRUNCATED_FILE, origin + " is empty: a plan has a header of at least " +
                                                std::to_string(header_size(1)) + " bytes");
  if (n < kFIXED_HEADER_SIZE)
    throw Error(ErrorCode::kTRUNCATED_FILE, origin + " is truncated: the fixed header needs " +
                                                std::to_string(kFIXED_HEADER_SIZE) +
                                                " bytes, found " + std::to_string(n));
  // 2. Version, before anything whose layout a newer format may have changed.
  const uint32_t version = get_u32(bytes.data() + 8);
  if (version > kPLAN_FORMAT_VERSION)
    throw Error(ErrorCode::kVERSION_TOO_NEW, origin + ": plan format " + std::to_string(version) +
                                                 ", this build reads up to " +
                                                 std::to_string(kPLAN_FORMAT_VERSION));
  // 3. Section table and header checksum.
  const uint32_t flags = get_u32(bytes.data() + 12);
  const uint32_t count = get_u32(bytes.data() + 16);
  const uint64_t hsize = header_size(count);
  if (n < hsize)
    throw Error(ErrorCode::kTRUNCATED_FILE, origin + " is truncated: the header with " +
                                                std::to_string(count) + " sections needs " +
                                                std::to_string(hsize) + " bytes, found " +
                                                std::to_string(n));
  const uint64_t stored_header_sum = get_u64(bytes.data() + hsize - kHEADER_CHECKSUM_SIZE);
  const uint64_t header_sum = hash64(bytes.data(), hsize - kHEADER_CHECKSUM_SIZE);
  if (stored_header_sum != header_sum)
    throw Error(ErrorCode::kCHECKSUM_MISMATCH,
                origin + ": header checksum mismatch: stored " + hash_to_hex(stored_header_sum) +
                    ", computed " + hash_to_hex(header_sum) + " (the file is damaged)");
  // 4. The header is intact: what it says is what the writer wrote.
  if (version == 0)
    throw Error(ErrorCode::kCORRUPT_FILE, origin + ": plan format 0 does not exist");
  if (count < 1 || count > 2)
    throw Error(ErrorCode::kCORRUPT_FILE,
                origin + ": expected 1 or 2 sections, found " + std::to_string(count));
  std::vector<Section> sections;
  const Section* meta_section = nullptr;
  const Section* weights_section = nullptr;
  sections.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    const std::byte* e = bytes.data() + kFIXED_HEADER_SIZE + kSECTION_ENTRY_SIZE * i;
    sections.push_back({get_u32(e), get_u64(e + 8), get_u64(e + 16), get_u64(e + 24)});
  }
  uint64_t end = hsize;
  for (const Section& s : sections) {
    if (s.kind != kSECTION_METADATA && s.kind != kSECTION_WEIGHTS)
      throw Error(ErrorCode::kCORRUPT_FILE,
                  origin + ": unknown section kind " + std::to_string(s.kind));
    const std::string what = std::string("the ") + section_name(s.kind) + " section";
    const Section*& slot = s.kind == kSECTION_METADATA ? meta_section : weights_section;
    if (slot) throw Error(ErrorCode::kCORRUPT_FILE, origin + ": " + what + " appears twice");
    slot = &s;
    if (s.offset < end)
      throw Error(ErrorCode::kCORRUPT_FILE,
                  origin + ": " + what + " at offset " + std::to_string(s.offset) +
                      " overlaps the header or the previous section (which end at " +
                      std::to_string(end) + ")");
    if (s.kind == kSECTION_WEIGHTS && s.offset % kBLOB_ALIGNMENT != 0)
      throw Error(ErrorCode::kCORRUPT_FILE, origin + ": " + what + " at offset " +
                                                std::to_string(s.offset) + " is not aligned to " +
                                                std::to_string(kBLOB_ALIGNMENT) + " bytes");
    if (s.size > n || s.offset > n - s.size)
      throw Error(ErrorCode::kTRUNCATED_FILE,
                  origin + " is truncated: " + what + " needs bytes [" + std::to_string(s.offset) +
                      ", " +
                      (s.size > UINT64_MAX - s.offset ? std::string("overflow")
                                                      : std::to_string(s.offset + s.size)) +
                      "), found " + std::to_string(n) + " bytes");
    end = s.offset + s.size;
  }
  if (!meta_section)
    throw Error(ErrorCode::kCORRUPT_FILE, origin + ": the plan has no metadata section");
  if (end != n)
    throw Error(ErrorCode::kCORRUPT_FILE, origin + ": " + std::to_string(n - end) +
                                              " unexpected bytes after the last section");
  // 5. Section checksums.
  for (const Section& s : sections) {
    const uint64_t sum = hash64(bytes.data() + s.offset, s.size);
    if (sum != s.checksum)
      throw Error(ErrorCode::kCHECKSUM_MISMATCH, origin + ": checksum mismatch in the " +
                                                     section_name(s.kind) + " section: stored " +
                                                     hash_to_hex(s.checksum) + ", computed " +
                                                     hash_to_hex(sum) + " (the file is damaged)");
  }
  // 6. Metadata.
  Image image;
  if (weights_section) {
    image.weights_offset = weights_section->offset;
    image.weights_size = weights_section->size;
  }
  try {
    image.meta = plan_json::from_text(std::string_view(
        reinterpret_cast<const char*>(bytes.data() + meta_section->offset), meta_section->size));
    if (image.meta.flags.bits != flags)
      throw Error(ErrorCode::kCORRUPT_FILE, "plan metadata: flags: the header says " +
                                                BuilderFlags{flags}.to_string() + ", found " +
                                                image.meta.flags.to_string());
    plan_json::validate(image.meta, static_cast<int64_t>(image.weights_size));
    image.meta.format_version = version;
  } catch (const Error& e) {
    rethrow_with_origin(e, origin);
  }
  return image;
}

}  // namespace

int PlanMetadata::find_source(const std::string& name) const {
  for (size_t i = 0; i < sources.size(); ++i)
    if (sources[i].name == name) return static_cast<int>(i);
  return -1;
}

int PlanMetadata::find_slot(const std::string& name) const {
  for (size_t i = 0; i < slots.size(); ++i)
    if (slots[i].name == name) return static_cast<int>(i);
  return -1;
}

// The weights of a plan: either the engine's whole blob (`full`) or, for a plan loaded
// stripped, the non-refittable slots at `stored` offsets. The bytes live in `owned` or in
// `mapped`; `data` points into whichever holds them.
struct Plan::Storage {
  HostTensor owned;
  MappedFile mapped;
  const std::byte* data = nullptr;
  size_t size = 0;
  bool full = false;
  std::vector<int64_t> stored;  // stripped: per slot, offset in `data` or -1
};

Plan::Plan() = default;
Plan::~Plan() = default;
Plan::Plan(Plan&&) noexcept = default;
Plan& Plan::operator=(Plan&&) noexcept = default;

Plan::Plan(PlanMetadata meta, HostTensor blob) : meta_(std::move(meta)) {
  storage_ = std::make_unique<Storage>();
  if (blob.empty()) {
    // No data: a plan of metadata only. With nothing to hold, it still has the whole blob.
    storage_->full = meta_.blob_size == 0;
    return;
  }
  check(blob.size_bytes() == meta_.blob_size, ErrorCode::kINVALID_ARGUMENT,
        "Plan: the blob has " + std::to_string(blob.size_bytes()) +
            " bytes, the metadata's blob_size is " + std::to_string(meta_.blob_size));
  storage_->owned = std::move(blob);
  storage_->data = static_cast<const std::byte*>(storage_->owned.data());
  storage_->size = static_cast<size_t>(meta_.blob_size);
  storage_->full = true;
}

const std::byte* Plan::slot_data(int i) const {
  check(i >= 0 && static_cast<size_t>(i) < meta_.slots.size(), ErrorCode::kINVALID_ARGUMENT,
        "Plan::slot_data: slot " + std::to_string(i) + " out of range [0, " +
            std::to_string(meta_.slots.size()) + ")");
  if (!storage_ || !storage_->data) return nullptr;
  const Slot& s = meta_.slots[static_cast<size_t>(i)];
  int64_t offset = -1;
  if (storage_->full)
    offset = s.offset;
  else if (static_cast<size_t>(i) < storage_->stored.size())
    offset = storage_->stored[static_cast<size_t>(i)];
  if (offset < 0) return nullptr;
  const auto size = static_cast<int64_t>(storage_->size);
  check(s.size_bytes >= 0 && s.size_bytes <= size && offset <= size - s.size_bytes,
        ErrorCode::kINVALID_ARGUMENT,
        "Plan::slot_data: slot '" + s.name + "' (" + std::to_string(s.size_bytes) +
            " bytes at offset " + std::to_string(offset) + ") lies outside the plan's " +
            std::to_string(size) + " bytes of weights");
  return storage_->data + offset;
}

bool Plan::has_blob() const { return storage_ && storage_->full; }

std::span<const std::byte> Plan::blob() const {
  if (!has_blob() || !storage_->data) return {};
  return {storage_->data, storage_->size};
}

std::vector<std::byte> Plan::serialize(const SerializationOptions& options) const {
  check(options.include_refit || !options.exclude_weights, ErrorCode::kINVALID_ARGUMENT,
        "Plan::serialize: excluding weights from a plan without refit information would leave "
        "weights that nothing can restore (set include_refit or keep the weights)");
  PlanMetadata out = meta_;
  if (!options.include_refit) {
    check(has_blob(), ErrorCode::kINVALID_ARGUMENT,
          "Plan::serialize: a plan without its weight blob (stripped) cannot be frozen "
          "(include_refit = false): its refittable slots have no data");
    out.refit_info = false;
    out.sources.clear();
    for (Slot& s : out.slots) {
      s.refittable = false;
      s.recipe = Recipe{};
    }
    for (BuilderFlag f : {BuilderFlag::kREFIT, BuilderFlag::kREFIT_INDIVIDUAL,
                          BuilderFlag::kREFIT_IDENTICAL, BuilderFlag::kSTRIP_PLAN})
      out.flags.clear(f);
  }
  // A plan that does not hold the whole blob (loaded stripped, or made without data) can only
  // be written stripped; one that does is written whole unless asked otherwise, even if it
  // was stripped once (an engine refit after loading a stripped plan).
  out.stripped = options.exclude_weights || !has_blob();

  // What the weights section holds: the whole blob, or the stored slots of a stripped plan.
  plan_json::StoredLayout layout;
  int64_t weights_size = out.blob_size;
  if (out.stripped) {
    layout = plan_json::stripped_layout(out);
    weights_size = layout.size;
  }
  try {
    plan_json::validate(out, weights_size);
  } catch (const Error& e) {
    throw Error(ErrorCode::kINVALID_ARGUMENT, "Plan::serialize: invalid plan: " + e.message());
  }
  if (!out.stripped && weights_size > 0)
    check(blob().size() == static_cast<size_t>(weights_size), ErrorCode::kINVALID_ARGUMENT,
          "Plan::serialize: the blob has " + std::to_string(blob().size()) +
              " bytes, the metadata's blob_size is " + std::to_string(weights_size));
  if (out.stripped)
    for (size_t i = 0; i < out.slots.size(); ++i)
      check(layout.offsets[i] < 0 || slot_data(static_cast<int>(i)) != nullptr,
            ErrorCode::kINVALID_ARGUMENT,
            "Plan::serialize: no data for non-refittable slot '" + out.slots[i].name + "'");

  std::string text = plan_json::to_text(out);
  const uint32_t count = weights_size > 0 ? 2 : 1;
  const uint64_t hsize = header_size(count);
  uint64_t weights_offset = 0;
  if (count == 2) {
    // Spaces are JSON whitespace: the padding stays inside the checksummed metadata.
    weights_offset = align_up(hsize + text.size());
    text.resize(weights_offset - hsize, ' ');
  }
  const uint64_t total = hsize + text.size() + static_cast<uint64_t>(weights_size);

  std::vector<std::byte> img;
  img.reserve(total);
  const auto* magic = reinterpret_cast<const std::byte*>(kMAGIC);
  img.insert(img.end(), magic, magic + sizeof kMAGIC);
  put_u32(img, kPLAN_FORMAT_VERSION);
  put_u32(img, out.flags.bits);
  put_u32(img, count);
  put_u32(img, 0);
  const auto* text_bytes = reinterpret_cast<const std::byte*>(text.data());
  put_u32(img, kSECTION_METADATA);
  put_u32(img, 0);
  put_u64(img, hsize);
  put_u64(img, text.size());
  put_u64(img, hash64(text.data(), text.size()));
  const size_t weights_entry = img.size();
  if (count == 2) {
    put_u32(img, kSECTION_WEIGHTS);
    put_u32(img, 0);
    put_u64(img, weights_offset);
    put_u64(img, static_cast<uint64_t>(weights_size));
    put_u64(img, 0);  // checksum, patched below
  }
  put_u64(img, 0);  // header checksum, patched below
  img.insert(img.end(), text_bytes, text_bytes + text.size());
  if (count == 2) {
    if (!out.stripped) {
      const auto b = blob();
      img.insert(img.end(), b.begin(), b.end());
    } else {
      for (size_t i = 0; i < out.slots.size(); ++i) {
        if (layout.offsets[i] < 0) continue;
        img.resize(weights_offset + static_cast<uint64_t>(layout.offsets[i]), std::byte{0});
        const std::byte* p = slot_data(static_cast<int>(i));
        img.insert(img.end(), p, p + out.slots[i].size_bytes);
      }
    }
    const uint64_t sum = hash64(img.data() + weights_offset, static_cast<size_t>(weights_size));
    for (int i = 0; i < 8; ++i)
      img[weights_entry + 24 + i] = static_cast<std::byte>(sum >> (8 * i));
  }
  const uint64_t header_sum = hash64(img.data(), hsize - kHEADER_CHECKSUM_SIZE);
  for (int i = 0; i < 8; ++i)
    img[hsize - kHEADER_CHECKSUM_SIZE + i] = static_cast<std::byte>(header_sum >> (8 * i));
  return img;
}

void Plan::save(const std::string& path, const SerializationOptions& options) const {
  const std::vector<std::byte> img = serialize(options);
  write_file_atomic(path, img.data(), img.size());
}

namespace {

// Points the storage at the weights section of a checked image. (A template, because
// Plan::Storage is private to Plan.)
template <class Storage>
void attach_weights(Storage& st, const PlanMetadata& meta, const std::byte* data, size_t size) {
  st.data = size > 0 ? data : nullptr;
  st.size = size;
  st.full = !meta.stripped;
  if (meta.stripped) st.stored = plan_json::stripped_layout(meta).offsets;
}

}  // namespace

Plan Plan::from_memory(std::span<const std::byte> bytes) {
  Image image = parse_image(bytes, kMEMORY_ORIGIN);
  Plan plan;
  plan.meta_ = std::move(image.meta);
  plan.storage_ = std::make_unique<Storage>();
  if (image.weights_size > 0) {
    plan.storage_->owned = HostTensor(DataType::kUINT8, {static_cast<int64_t>(image.weights_size)});
    std::memcpy(plan.storage_->owned.data(), bytes.data() + image.weights_offset,
                image.weights_size);
  }
  attach_weights(*plan.storage_, plan.meta_,
                 static_cast<const std::byte*>(plan.storage_->owned.data()), image.weights_size);
  return plan;
}

Plan Plan::load(const std::string& path) {
  MappedFile file = MappedFile::open(path, MappedFile::Mode::kCOPY_ON_WRITE);
  Image image = parse_image({file.data(), file.size()}, "'" + path + "'");
  Plan plan;
  plan.meta_ = std::move(image.meta);
  plan.storage_ = std::make_unique<Storage>();
  const std::byte* weights = file.data() + image.weights_offset;
  plan.storage_->mapped = std::move(file);  // moving keeps the mapping where it is
  attach_weights(*plan.storage_, plan.meta_, weights, image.weights_size);
  return plan;
}

}  // namespace bindery
