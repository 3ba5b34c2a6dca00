#pragma once
// tokenizer.json "normalizer": Sequence, Prepend, Replace, Strip and ByteLevel (what the BPE
// families use; Llama 2's is Sequence[Prepend("▁"), Replace(" ", "▁")]). Unicode normalization
// forms (NFC, NFKC, ...), Lowercase, BertNormalizer and Precompiled are refused (kUNSUPPORTED).

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tokenizer/json_node.h"
#include "tokenizer/regex.h"

namespace bindery::tokenizer {

class Normalizer {
 public:
  /// From the "normalizer" field (null: nothing to do, empty() is true).
  explicit Normalizer(const Node& node);
  bool empty() const { return steps_.empty(); }
  /// Applies every step, in order, to `text`.
  void normalize(std::string& text) const;

 private:
  struct Prepend {
    std::string text;
  };
  struct Replace {
    std::shared_ptr<const Regex> pattern;
    std::string content;
  };
  struct Strip {
    bool left, right;
  };
  struct ByteLevel {};
  using Step = std::variant<Prepend, Replace, Strip, ByteLevel>;
  void add(const Node& node);
  std::vector<Step> steps_;
};

/// A Replace pattern: {"String": "..."} (literal) or {"Regex": "..."}; `node` is "pattern".
std::shared_ptr<const Regex> parse_pattern(const Node& node);
/// The pattern's matches and the text between them replaced by `content` (tokenizers'
/// NormalizedString::replace and the Replace decoder).
std::string replace_all(const Regex& pattern, const std::string& text, const std::string& content);
/// GPT-2's byte-to-unicode map: every byte of `text` as the printable character standing for
/// it ("Ġ" for a space).
std::string bytes_to_unicode(std::string_view text);

}  // namespace bindery::tokenizer
