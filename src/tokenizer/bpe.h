#pragma once
// tokenizer.json "model" of type BPE: vocab, merges (the "a b" strings of older files or the
// ["a", "b"] pairs of newer ones), unk_token / fuse_unk, byte_fallback (<0xNN> pieces for
// characters the vocab lacks), ignore_merges (Llama 3: a word that is in the vocab is one
// token), continuing_subword_prefix and end_of_word_suffix. dropout is ignored: encoding is
// deterministic, as tokenizers' is without dropout.

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json_node.h"

namespace bindery::tokenizer {

/// std::unordered_map<std::string, T> looked up by string_view without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  /// From the "model" field. Throws kUNSUPPORTED for another model type, kCORRUPT_FILE for a
  /// missing vocab or merges, an id that is negative, a merge that does not have two parts or
  /// names a token (or a merged token) that is not in the vocab.
  explicit BpeModel(const Node& node);

  /// Appends the ids of one pre-tokenized word. Thread-safe (the word cache is locked).
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  /// Entries in the vocab (what tokenizers calls the model's vocab size).
  size_t size() const { return vocab_.size(); }
  int32_t max_id() const { return max_id_; }

 private:
  struct Merge {
    uint32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  StringMap<int32_t> vocab_;
  std::unordered_map<int32_t, std::string> vocab_r_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  int32_t byte_ids_[256];  // ids of <0x00>..<0xFF>, -1 where the vocab lacks one
  int32_t max_id_ = -1;

  // Words seen before (as tokenizers caches them): short words only, up to a bound.
  mutable std::mutex cache_mutex_;
  mutable StringMap<std::vector<int32_t>> cache_;
};

}  // namespace bindery::tokenizer
