// torch.save archives (torch >= 1.6): <prefix>/data.pkl, <prefix>/data/<key> per storage,
// <prefix>/version, and in newer torch <prefix>/byteorder, .format_version,
// .storage_alignment and .data/serialization_id. Storage records are normally stored
// uncompressed at 64-byte aligned offsets, so tensors are views into the mapped file; a
// deflated record (an archive someone re-zipped) is inflated once into a buffer we own.

#include "bindery/io/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "bindery/error.h"
#include "core/mapped_file.h"
#include "io/pickle_globals.h"
#include "io/torch_state.h"
#include "io/zip_archive.h"

namespace bindery::io {

namespace {

constexpr uint64_t kMAX_PICKLE_SIZE = uint64_t{1} << 30;
constexpr uint64_t kMAX_SMALL_RECORD = 4096;  // byteorder

// torch's legacy format begins with the pickled magic number 0x1950a86a20f9469cfc6c: LONG1 of
// 10 bytes, right after PROTO (protocol 2) or after PROTO and FRAME (protocols 4 and 5).
bool is_legacy_torch(std::span<const std::byte> b) {
  static constexpr unsigned char kMAGIC[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                             0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  if (b.empty() || b[0] != std::byte{0x80}) return false;
  for (const size_t at : {size_t{2}, size_t{11}})
    if (b.size() >= at + sizeof kMAGIC && std::memcmp(b.data() + at, kMAGIC, sizeof kMAGIC) == 0)
      return true;
  return false;
}

std::string entry_list(const ZipArchive& zip) {
  std::string s;
  const size_t n = std::min<size_t>(zip.entries().size(), 5);
  for (size_t i = 0; i < n; ++i) s += (i ? ", '" : "'") + zip.entries()[i].name + "'";
  if (zip.entries().size() > n) s += ", ...";
  return s.empty() ? "none" : s;
}

}  // namespace

struct TorchCheckpoint::Storage {
  MappedFile file;
  std::vector<std::unique_ptr<std::byte[]>> inflated;  // deflated records, inflated
};

TorchCheckpoint::TorchCheckpoint() = default;
TorchCheckpoint::TorchCheckpoint(TorchCheckpoint&&) noexcept = default;
TorchCheckpoint& TorchCheckpoint::operator=(TorchCheckpoint&&) noexcept = default;
TorchCheckpoint::~TorchCheckpoint() = default;

TorchCheckpoint TorchCheckpoint::open(const std::string& path) {
  TorchCheckpoint c;
  c.path_ = path;
  c.storage_ = std::make_unique<Storage>();
  c.storage_->file = MappedFile::open(path);
  const MappedFile& file = c.storage_->file;
  const std::span<const std::byte> bytes(file.data(), file.size());
  const std::string origin = "'" + path + "'";
  if (is_legacy_torch(bytes))
    throw Error(ErrorCode::kUNSUPPORTED,
                origin +
                    ": legacy (pre-1.6) torch.save format; re-save with torch >= 1.6 or "
                    "convert to safetensors");
  const ZipArchive zip = ZipArchive::open(bytes, origin);

  // The one <prefix>/data.pkl; every other record lives under the same prefix.
  int pkl = -1;
  for (size_t i = 0; i < zip.entries().size(); ++i) {
    const std::string& n = zip.entries()[i].name;
    const size_t slash = n.find('/');
    if (slash == std::string::npos || slash == 0 || n.substr(slash) != "/data.pkl") continue;
    if (pkl >= 0)
      throw Error(ErrorCode::kCORRUPT_FILE, origin + ": two pickles in one archive: '" +
                                                zip.entries()[static_cast<size_t>(pkl)].name +
                                                "' and '" + n + "'");
    pkl = static_cast<int>(i);
  }
  if (pkl < 0)
    throw Error(ErrorCode::kCORRUPT_FILE, origin +
                                              ": no <prefix>/data.pkl in the zip archive "
                                              "(is it a torch.save file?); entries: " +
                                              entry_list(zip));
  const std::string& pkl_name = zip.entries()[static_cast<size_t>(pkl)].name;
  const std::string prefix = pkl_name.substr(0, pkl_name.find('/') + 1);

  if (const int bo = zip.find(prefix + "byteorder"); bo >= 0) {
    const std::vector<std::byte> b = zip.extract(static_cast<size_t>(bo), kMAX_SMALL_RECORD);
    const std::string order(reinterpret_cast<const char*>(b.data()), b.size());
    if (order == "big")
      throw Error(ErrorCode::kUNSUPPORTED,
                  origin + ": big-endian checkpoint (" + prefix +
                      "byteorder is 'big'); only little-endian ones are read");
    if (order != "little")
      throw Error(ErrorCode::kCORRUPT_FILE, origin + ": " + prefix + "byteorder is '" + order +
                                                "', expected 'little' or 'big'");
  }

  // Records by key, each looked up (and inflated) once however many tensors share it.
  std::unordered_map<std::string, StorageRecord> records;
  Storage& storage = *c.storage_;
  const StorageResolver resolve = [&](const std::string& key) {
    if (const auto it = records.find(key); it != records.end()) return it->second;
    const std::string name = prefix + "data/" + key;
    const int i = key.empty() ? -1 : zip.find(name);
    if (i < 0)
      throw Error(ErrorCode::kCORRUPT_FILE, origin + ": storage '" + printable(key) +
                                                "' has no record '" + printable(name) +
                                                "' in the archive");
    ZipRecord r = zip.record(static_cast<size_t>(i), UINT64_MAX);
    if (r.owned) storage.inflated.push_back(std::move(r.owned));
    const StorageRecord s{r.bytes.data(), r.bytes.size(), r.offset};
    records.emplace(key, s);
    return s;
  };
  const std::vector<std::byte> pickle = zip.extract(static_cast<size_t>(pkl), kMAX_PICKLE_SIZE);
  TorchState state = read_torch_state(pickle, resolve, path, origin + " (" + pkl_name + ")");
  c.tensors_ = std::move(state.tensors);
  c.skipped_ = std::move(state.skipped);
  return c;
}

}  // namespace bindery::io
