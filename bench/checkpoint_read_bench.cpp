// Reading a safetensors checkpoint into one large buffer (CheckpointReader::read_into), beside
// single- and multi-threaded memcpy of the same size measured in the same run; then a cold read
// (the file's pages evicted with posix_fadvise) beside `cat file > /dev/null`.
//
//   bench_checkpoint_read [--gib 4] [--file /tmp/bindery_bench.safetensors] [--repeat 3]
//                         [--json out.json]
//
// The file is made on first use: Llama-like bf16 tensors (attention, MLP, norms) totalling
// --gib GiB. Warm figures are the best of --repeat runs after the file is in the page cache.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_util.h"
#include "bindery/io/checkpoint_reader.h"
#include "bindery/io/safetensors.h"

using namespace bindery;
using namespace bindery::bench;

namespace {

// One Llama-3-8B decoder layer's tensors (bf16), repeated until `bytes` is reached.
std::vector<io::TensorToWrite> llama_like_layout(int64_t bytes) {
  struct Shape {
    const char* name;
    Dims dims;
  };
  const std::vector<Shape> layer = {
      {"self_attn.q_proj.weight", {4096, 4096}},  {"self_attn.k_proj.weight", {1024, 4096}},
      {"self_attn.v_proj.weight", {1024, 4096}},  {"self_attn.o_proj.weight", {4096, 4096}},
      {"mlp.gate_proj.weight", {14336, 4096}},    {"mlp.up_proj.weight", {14336, 4096}},
      {"mlp.down_proj.weight", {4096, 14336}},    {"input_layernorm.weight", {4096}},
      {"post_attention_layernorm.weight", {4096}}};
  std::vector<io::TensorToWrite> out;
  int64_t total = 0;
  for (int l = 0; total < bytes; ++l)
    for (const Shape& s : layer) {
      const int64_t b = volume(s.dims) * 2;
      if (total + b > bytes) return out;
      out.push_back({"model.layers." + std::to_string(l) + "." + s.name, io::ElementType::kBF16,
                     s.dims, nullptr});
      total += b;
    }
  return out;
}

void make_file(const std::string& path, int64_t bytes, std::vector<std::byte>& scratch) {
  std::vector<io::TensorToWrite> tensors = llama_like_layout(bytes);
  auto* words = reinterpret_cast<uint32_t*>(scratch.data());
  parallel_for(static_cast<int64_t>(scratch.size() / 4), 1 << 20, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) words[i] = static_cast<uint32_t>(i) * 2654435761u;
  });
  int64_t offset = 0;
  for (auto& t : tensors) {
    t.data = scratch.data() + offset;
    offset += volume(t.shape) * 2;
  }
  std::printf("writing %s (%zu tensors, %.2f GiB)...\n", path.c_str(), tensors.size(),
              offset / 1073741824.0);
  io::write_safetensors(path, tensors);
}

// Drops the file's pages from the page cache; returns the fraction still resident.
double evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  const size_t size = std::filesystem::file_size(path);
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident((size + page - 1) / page);
  ::mincore(map, size, resident.data());
  size_t in = 0;
  for (unsigned char r : resident) in += r & 1;
  ::munmap(map, size);
  ::close(fd);
  return static_cast<double>(in) / static_cast<double>(resident.size());
}

double read_gbps(const io::CheckpointReader& reader, std::vector<std::byte>& buffer,
                 bool use_pread) {
  std::vector<io::ReadTarget> targets;
  int64_t offset = 0;
  for (const io::StoredTensor& t : reader.tensors()) {
    targets.push_back({t.name, buffer.data() + offset, t.size_bytes(), std::nullopt});
    offset += t.size_bytes();
  }
  const auto t0 = Clock::now();
  reader.read_into(targets, {.use_pread = use_pread});
  return static_cast<double>(offset) / seconds(t0, Clock::now()) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 4.0;
  int repeat = 3;
  std::string path = "/tmp/bindery_bench.safetensors", json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--gib" && i + 1 < argc)
      gib = std::stod(argv[++i]);
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::stoi(argv[++i]);
    else if (a == "--file" && i + 1 < argc)
      path = argv[++i];
    else if (a == "--json" && i + 1 < argc)
      json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--gib G] [--file F] [--repeat N] [--json out.json]\n",
                   argv[0]);
      return 2;
    }
  }
  const auto wanted = static_cast<int64_t>(gib * 1073741824.0);
  std::vector<std::byte> buffer(static_cast<size_t>(wanted));  // touched by make_file or below
  {
    bool have = std::filesystem::exists(path);
    if (have) {
      const io::CheckpointReader r = io::CheckpointReader::open(path);
      have = r.total_bytes() == [&] {
        int64_t b = 0;
        for (const auto& t : llama_like_layout(wanted)) b += volume(t.shape) * 2;
        return b;
      }();
    }
    if (!have) make_file(path, wanted, buffer);
  }
  auto reader = std::make_unique<io::CheckpointReader>(io::CheckpointReader::open(path));
  const int64_t bytes = reader->total_bytes();
  const size_t tensor_count = reader->tensors().size();
  std::memset(buffer.data(), 0, buffer.size());  // fault the destination in before timing
  std::printf("checkpoint read benchmark: %s, %zu tensors, %.2f GiB, %d threads, best of %d\n",
              path.c_str(), tensor_count, bytes / 1073741824.0, num_threads(), repeat);

  read_gbps(*reader, buffer, true);  // brings the file into the page cache
  const double mc1 = memcpy_gbps(bytes, repeat, false);
  const double mcn = memcpy_gbps(bytes, repeat, true);
  double warm_pread = 0, warm_mmap = 0;
  for (int r = 0; r < repeat; ++r) {
    warm_pread = std::max(warm_pread, read_gbps(*reader, buffer, true));
    warm_mmap = std::max(warm_mmap, read_gbps(*reader, buffer, false));
  }
  reader.reset();  // pages a process maps cannot be evicted

  const double left1 = evict(path);
  reader = std::make_unique<io::CheckpointReader>(io::CheckpointReader::open(path));
  const double cold = read_gbps(*reader, buffer, true);
  reader.reset();
  const double left2 = evict(path);
  const auto t0 = Clock::now();
  const int cat_status = std::system(("cat '" + path + "' > /dev/null").c_str());
  const double cat =
      static_cast<double>(std::filesystem::file_size(path)) / seconds(t0, Clock::now()) / 1e9;

  std::printf("memcpy (1 thread)              %7.2f GB/s\n", mc1);
  std::printf("memcpy (%d threads)             %7.2f GB/s\n", num_threads(), mcn);
  const double best_memcpy = std::max(mc1, mcn);
  std::printf(
      "read_into, page cache (pread)  %7.2f GB/s  %.2f x threaded memcpy, %.2f x the faster\n",
      warm_pread, warm_pread / mcn, warm_pread / best_memcpy);
  std::printf("read_into, page cache (mmap)   %7.2f GB/s  %.2f x threaded memcpy\n", warm_mmap,
              warm_mmap / mcn);
  std::printf("read_into, cold                %7.2f GB/s  (%.0f%% of pages were still cached)\n",
              cold, 100 * left1);
  std::printf("cat file > /dev/null, cold     %7.2f GB/s  (%.0f%% cached)%s\n", cat, 100 * left2,
              cat_status ? " (cat failed)" : "");
  std::printf("goal: page-cache read >= 0.8 x threaded memcpy: %s\n",
              warm_pread >= 0.8 * mcn ? "met" : "NOT met");
  if (!json_path.empty()) {
    const nlohmann::json j = {
        {"benchmark", "checkpoint_read"},
        {"device", cpu_name() + " (" + std::to_string(num_threads()) + " threads)"},
        {"date", utc_now()},
        {"commit", commit()},
        {"bytes", bytes},
        {"tensors", tensor_count},
        {"memcpy_1thread_gbps", mc1},
        {"memcpy_threads_gbps", mcn},
        {"read_page_cache_pread_gbps", warm_pread},
        {"read_page_cache_mmap_gbps", warm_mmap},
        {"read_vs_threaded_memcpy", warm_pread / mcn},
        {"read_vs_best_memcpy", warm_pread / best_memcpy},
        {"read_cold_gbps", cold},
        {"cold_pages_left_cached", left1},
        {"cat_cold_gbps", cat}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
