// Tokenizer: the tokenizer.json pipeline of Hugging Face `tokenizers` (tokenizer/mod.rs):
// added tokens are cut out of the raw text, the rest is normalized piece by piece (and the
// normalized added tokens cut out of that), pre-tokenized into words, and each word goes
// through the BPE model; the post-processor then adds the special tokens. Decoding maps ids
// to token strings and runs them through the decoder chain.

#include "bindery/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bindery/error.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decode_chain.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/utf8.h"

namespace bindery {

using nlohmann::json;
using tokenizer::Node;

struct Tokenizer::Impl {
  Impl(const json& j, const std::string& source_name)
      : source(source_name),
        normalizer(field(j, "normalizer")),
        pre_tokenizer(field(j, "pre_tokenizer")),
        model(Node(j, source, "").at("model")),
        added(field(j, "added_tokens"), model, normalizer),
        post(field(j, "post_processor")),
        decoder(field(j, "decoder")) {}

  // A top-level component field (only read while loading); a missing one is the same as null.
  Node field(const json& j, const char* key) const {
    static const json null;
    const Node top(j, source, "");
    return top.has(key) ? top.at(key) : Node(null, source, key);
  }

  const std::string* token_string(int32_t id) const {
    if (const tokenizer::AddedToken* t = added.find(id)) return &t->decoded;
    return model.id_to_token(id);
  }

  // The text of `ids`; `pending` (when given) says whether the last token is a byte of a
  // ByteFallback run that may go on.
  std::string decode(std::span<const int32_t> ids, bool skip_special, bool at_start,
                     bool* pending = nullptr) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const int32_t id : ids) {
      const std::string* s = token_string(id);
      if (!s || (skip_special && added.is_special(*s))) continue;
      tokens.push_back(*s);
    }
    if (pending) *pending = !tokens.empty() && decoder.is_pending_byte(tokens.back());
    return decoder.decode(std::move(tokens), at_start);
  }

  std::string source;
  tokenizer::Normalizer normalizer;
  tokenizer::PreTokenizer pre_tokenizer;
  tokenizer::BpeModel model;
  tokenizer::AddedVocabulary added;
  tokenizer::PostProcessor post;
  tokenizer::DecodeChain decoder;
  std::optional<int32_t> bos, eos;
};

namespace {

json parse_json(std::string_view text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::kCORRUPT_FILE, source + " is not valid JSON: " + e.what());
  }
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), ErrorCode::kIO, "cannot open " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  check(!in.bad(), ErrorCode::kIO, "cannot read " + path.string());
  return text.str();
}

// tokenizer_config.json names tokens as "<s>" or as {"content": "<s>", ...}.
std::optional<std::string> config_token(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return std::nullopt;
  const json& v = config.at(key);
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v.at("content").is_string())
    return v.at("content").get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& source,
                               std::string_view config_json) {
  const json j = parse_json(text, source);
  check(j.is_object(), ErrorCode::kCORRUPT_FILE, source + " is not a JSON object");
  if (j.contains("version") && j.at("version").is_string())
    check(j.at("version").get<std::string>() == "1.0", ErrorCode::kUNSUPPORTED,
          source + ": version '" + j.at("version").get<std::string>() +
              "' is not supported (1.0 is)");
  auto impl = std::make_shared<Impl>(j, source);

  // BOS and EOS: the special tokens the post-processor puts around a sequence.
  const std::vector<int32_t> probe = impl->post.process({-1}, true);
  const auto marker = std::find(probe.begin(), probe.end(), -1);
  if (marker != probe.begin()) impl->bos = probe.front();
  if (marker != probe.end() && marker + 1 != probe.end()) impl->eos = probe.back();
  if (!config_json.empty()) {
    const json config = parse_json(config_json, source + "'s tokenizer_config.json");
    const auto id_of = [&](const char* key) -> std::optional<int32_t> {
      const auto name = config_token(config, key);
      if (!name) return std::nullopt;
      if (auto id = impl->added.token_to_id(*name)) return id;
      return impl->model.token_to_id(*name);
    };
    if (!impl->bos) impl->bos = id_of("bos_token");
    if (!impl->eos) impl->eos = id_of("eos_token");
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path file = path;
  if (fs::is_directory(file)) file /= "tokenizer.json";
  check(fs::is_regular_file(file), ErrorCode::kNOT_FOUND,
        "no tokenizer at " + path +
            (fs::is_directory(path) ? " (the directory has no tokenizer.json)" : ""));
  const fs::path config = file.parent_path() / "tokenizer_config.json";
  return from_json(read_file(file), file.string(),
                   fs::is_regular_file(config) ? read_file(config) : std::string());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const size_t bad = tokenizer::invalid_utf8_offset(text);
  check(bad == std::string_view::npos, ErrorCode::kINVALID_ARGUMENT,
        "the text to encode is not valid UTF-8 (byte " + std::to_string(bad) + " of " +
            std::to_string(text.size()) + ")");
  std::vector<tokenizer::Piece> pieces;
  if (!text.empty()) pieces.push_back(tokenizer::Piece{std::string(text), true, -1});
  impl_->added.split(pieces, false);
  if (!impl_->normalizer.empty()) {
    for (tokenizer::Piece& p : pieces)
      if (p.id < 0) impl_->normalizer.normalize(p.text);
    std::erase_if(pieces, [](const tokenizer::Piece& p) { return p.text.empty(); });
  }
  impl_->added.split(pieces, true);
  impl_->pre_tokenizer.pre_tokenize(pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  for (const tokenizer::Piece& p : pieces) {
    if (p.id >= 0)
      ids.push_back(p.id);
    else
      impl_->model.tokenize(p.text, ids);
  }
  return impl_->post.process(std::move(ids), add_special_tokens);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens, true);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = impl_->added.token_to_id(token)) return id;
  return impl_->model.token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const tokenizer::AddedToken* t = impl_->added.find(id)) return t->content;
  if (const std::string* s = impl_->model.id_to_token(id)) return *s;
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return impl_->added.max_id() + 1; }
std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos; }

bool Tokenizer::is_special(int32_t id) const {
  const tokenizer::AddedToken* t = impl_->added.find(id);
  return t && t->special;
}

Tokenizer::Decoder::Decoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

// The window is decoded whole at each id; its text is final (and emitted) once appending more
// ids cannot change it: it does not end in U+FFFD (bytes of an unfinished character), its last
// token is not a byte of a ByteFallback run, and, at the very start, it is not empty (Strip
// and Metaspace treat the start apart). Decoding what follows as a continuation then gives
// exactly the rest of the whole decode.
std::string Tokenizer::Decoder::feed(int32_t id) {
  window_.push_back(id);
  bool pending = false;
  std::string text = tokenizer_.impl_->decode(window_, skip_special_tokens_, at_start_, &pending);
  const bool open =
      text.size() >= 3 && text.compare(text.size() - 3, 3, tokenizer::kReplacementChar) == 0;
  if (pending || open || (at_start_ && text.empty())) return {};
  window_.clear();
  at_start_ = false;
  return text;
}

std::string Tokenizer::Decoder::flush() {
  std::string text = tokenizer_.impl_->decode(window_, skip_special_tokens_, at_start_);
  window_.clear();
  at_start_ = true;
  return text;
}

}  // namespace bindery
