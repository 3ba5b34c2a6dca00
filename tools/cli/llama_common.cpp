#include "llama_common.h"

#include <unistd.h>

#include <cctype>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>

#include "bindery/error.h"
#include "bindery/models/llama.h"
#include "bindery/plan.h"

namespace bindery::cli {

namespace {

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::vector<int32_t> parse_token_list(const std::string& text, const std::string& option) {
  check(!trimmed(text).empty(), ErrorCode::kINVALID_ARGUMENT,
        option + ": the token list is empty; give token ids separated by commas, e.g. 1,2,3");
  std::vector<int32_t> tokens;
  std::string_view rest = text;
  for (size_t index = 0;; ++index) {
    const size_t comma = rest.find(',');
    const std::string_view piece = trimmed(rest.substr(0, comma));
    const std::string where = option + ": token " + std::to_string(index) + " ";
    check(!piece.empty(), ErrorCode::kINVALID_ARGUMENT,
          where + "is empty in '" + text + "'; give token ids separated by commas, e.g. 1,2,3");
    int64_t value = 0;
    const auto [end, ec] = std::from_chars(piece.data(), piece.data() + piece.size(), value);
    const bool whole = ec == std::errc() && end == piece.data() + piece.size();
    check(whole || ec == std::errc::result_out_of_range, ErrorCode::kINVALID_ARGUMENT,
          where + "'" + std::string(piece) + "' is not a token id (a non-negative integer)");
    check(ec != std::errc::result_out_of_range && value <= std::numeric_limits<int32_t>::max(),
          ErrorCode::kINVALID_ARGUMENT,
          where + "'" + std::string(piece) + "' is out of range (token ids are int32)");
    check(value >= 0, ErrorCode::kINVALID_ARGUMENT,
          where + "'" + std::string(piece) + "' is negative; token ids are non-negative");
    tokens.push_back(static_cast<int32_t>(value));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return tokens;
}

void print_json(const nlohmann::json& j) { std::cout << j.dump() << "\n" << std::flush; }

TtyProgress::TtyProgress(std::string label)
    : label_(std::move(label)), enabled_(isatty(STDERR_FILENO) == 1) {}

TtyProgress::~TtyProgress() {
  if (drawn_) std::fprintf(stderr, "\r\033[K");
}

void TtyProgress::update(const std::string& what, int64_t done, int64_t total) {
  if (!enabled_) return;
  if (total > 0)
    std::fprintf(stderr, "\r\033[K%s [%lld/%lld] %s", label_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total), what.c_str());
  else
    std::fprintf(stderr, "\r\033[K%s %s", label_.c_str(), what.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

std::function<void(const std::string&, int64_t, int64_t)> TtyProgress::callback() {
  if (!enabled_) return {};
  return
      [this](const std::string& what, int64_t done, int64_t total) { update(what, done, total); };
}

Device parse_device(const std::string& text) {
  if (text == "cpu") return Device::cpu();
  if (text == "cuda") return Device::cuda(0);
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 &&
      text.find_first_not_of("0123456789", 5) == std::string::npos && text.size() < 10)
    return Device::cuda(std::stoi(text.substr(5)));
  throw Error(ErrorCode::kINVALID_ARGUMENT,
              "--device must be cpu, cuda or cuda:N, got '" + text + "'");
}

std::unique_ptr<Engine> load_llama_engine(const std::string& plan_path,
                                          const std::string& weights_dir, Device device) {
  auto engine = Engine::load(plan_path, device);
  if (!weights_dir.empty()) models::refit_from_hf_checkpoint(*engine, weights_dir);
  check(engine->weights_complete(), ErrorCode::kMISSING_WEIGHTS,
        "plan " + plan_path +
            " is stripped (its weights were left out): pass --weights <model_dir> to refit it "
            "from a checkpoint before running");
  return engine;
}

std::vector<std::unique_ptr<Engine>> load_llama_ranks(const std::vector<std::string>& plan_paths,
                                                      const std::string& weights_dir,
                                                      Device device) {
  const int n = static_cast<int>(plan_paths.size());
  std::vector<std::unique_ptr<Engine>> ranks(n);
  for (const std::string& path : plan_paths) {
    auto engine = load_llama_engine(path, weights_dir, device);
    const auto& props = engine->metadata().properties;
    const auto size = props.find("tensor_parallel.size"), rank = props.find("tensor_parallel.rank");
    const int tp = size == props.end() ? 1 : std::stoi(size->second);
    const int r = rank == props.end() ? 0 : std::stoi(rank->second);
    check(tp == n, ErrorCode::kINVALID_ARGUMENT,
          "plan " + path + " is " +
              (tp == 1 ? std::string("a whole model")
                       : "rank " + std::to_string(r) + " of " + std::to_string(tp)) +
              ", but " + std::to_string(n) + " plan(s) were given" +
              (tp > 1 ? ": give every rank's plan, once" : ""));
    check(r >= 0 && r < n, ErrorCode::kCORRUPT_FILE,
          "plan " + path + " says it is rank " + std::to_string(r) + " of " + std::to_string(tp));
    check(!ranks[r], ErrorCode::kINVALID_ARGUMENT,
          "plans " + path + " and another are both rank " + std::to_string(r));
    ranks[r] = std::move(engine);
  }
  return ranks;
}

std::vector<Engine*> engine_pointers(const std::vector<std::unique_ptr<Engine>>& engines) {
  std::vector<Engine*> out;
  for (const auto& e : engines) out.push_back(e.get());
  return out;
}

Tokenizer plan_tokenizer(const PlanMetadata& plan, const std::string& plan_path,
                         const std::string& tokenizer_path) {
  if (!tokenizer_path.empty()) return load_tokenizer(tokenizer_path);
  const auto it = plan.properties.find("tokenizer.json");
  check(it != plan.properties.end(), ErrorCode::kNOT_FOUND,
        "plan " + plan_path +
            " carries no tokenizer (its model directory had no tokenizer.json): pass "
            "--tokenizer <tokenizer.json or model_dir>");
  const auto config = plan.properties.find("tokenizer_config.json");
  return Tokenizer::from_json(it->second, plan_path + " (its tokenizer.json)",
                              config != plan.properties.end() ? config->second : std::string());
}

Tokenizer load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path)) return Tokenizer::from_file(path);
  std::ifstream in(path, std::ios::binary);
  check(in.good(), ErrorCode::kNOT_FOUND, "cannot open " + path);
  char first = 0;
  while (in.get(first) && std::isspace(static_cast<unsigned char>(first))) {
  }
  if (first == '{') return Tokenizer::from_file(path);  // JSON: a tokenizer.json
  const Plan plan = Plan::load(path);                   // else a plan (kBAD_MAGIC if not)
  return plan_tokenizer(plan.metadata(), path, "");
}

std::vector<int32_t> prompt_tokens(const std::string& tokens, bool has_tokens,
                                   const std::string& prompt, const Tokenizer* tokenizer) {
  const bool has_prompt = tokenizer != nullptr;
  check(has_prompt != has_tokens, ErrorCode::kINVALID_ARGUMENT,
        "give the prompt as --tokens 1,2,3 or as --prompt \"text\" (one of the two)");
  if (!has_prompt) return parse_token_list(tokens, "--tokens");
  std::vector<int32_t> ids = tokenizer->encode(prompt, true);
  check(!ids.empty(), ErrorCode::kINVALID_ARGUMENT,
        "--prompt: the prompt is empty and the tokenizer adds no special tokens; give some text");
  return ids;
}

}  // namespace bindery::cli
