#pragma once
// tokenizer.json "added_tokens": tokens matched in the text before pre-tokenization (special
// ones like <|begin_of_text|>, and plain ones), as tokenizers' AddedVocabulary does it: those
// with normalized=false on the raw text, then the others, in their normalized form, on each
// normalized piece; leftmost match first, the longest at a position; single_word, lstrip and
// rstrip applied as tokenizers applies them.

#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/json_node.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"

namespace bindery::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
  /// What decode sees: the normalized form for normalized tokens ("▁Jehovah"), else content.
  std::string decoded;
};

class AddedVocabulary {
 public:
  /// `node` is the "added_tokens" array (null: none). Ids are assigned as tokenizers assigns
  /// them when it loads a file: a content the model's vocab has keeps that id; the others
  /// count up from the size of the model's vocab, in file order (the file's "id" fields are
  /// not used, exactly as in tokenizers).
  AddedVocabulary(const Node& node, const BpeModel& model, const Normalizer& normalizer);

  /// Cuts each piece that is not yet a token at the added tokens matched on raw text
  /// (`normalized` false) or on normalized text (true); a match becomes a piece with its id.
  void split(std::vector<Piece>& pieces, bool normalized) const;

  const AddedToken* find(int32_t id) const;
  std::optional<int32_t> token_to_id(std::string_view content) const;
  /// Whether a token string (as decode sees it) is a special token's.
  bool is_special(std::string_view token) const { return specials_.count(std::string(token)) > 0; }
  int32_t max_id() const { return max_id_; }

 private:
  // A byte trie of the patterns, for leftmost-longest matching.
  class Trie {
   public:
    void add(const std::string& pattern, size_t token);
    bool empty() const { return nodes_.size() <= 1; }
    /// The longest pattern starting at text[i]: (length, token), or length 0.
    std::pair<size_t, size_t> longest_at(std::string_view text, size_t i) const;

   private:
    struct TrieNode {
      std::vector<std::pair<uint8_t, uint32_t>> children;
      int64_t token = -1;
    };
    std::vector<TrieNode> nodes_{1};
    bool first_byte_[256] = {};
  };
  struct Match {
    int64_t token;  // index into tokens_, -1: text between tokens
    Span span;
  };
  std::vector<Match> find_matches(std::string_view text, const Trie& trie) const;
  bool ends_with_word(std::string_view text) const;
  bool starts_with_word(std::string_view text) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  StringMap<int32_t> by_content_;
  std::unordered_set<std::string> specials_;
  Trie raw_, normalized_;
  Regex word_char_;
  int32_t max_id_ = -1;
};

}  // namespace bindery::tokenizer
