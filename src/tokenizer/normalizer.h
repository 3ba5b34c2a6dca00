#pragma once
// tokenizer.json "normalizer": Sequence, Prepend, Replace, Strip, ByteLevel and the Unicode
// normalization forms NFC, NFD, NFKC, NFKD (what the BPE families use; Llama 2's is
// Sequence[Prepend("▁"), Replace(" ", "▁")], Qwen2's NFC). The normalization forms come from
// utf8proc (Debian's libutf8proc, Unicode 15.0 in bookworm's 2.8.0) with the code points that
// are newer than Unicode 9.0 left alone, as tokenizers does (its unicode-normalization-alignments
// crate has Unicode 9.0 tables): identical to it on every code point and sequence up to 15.0.
// Lowercase, BertNormalizer and Precompiled are refused (kUNSUPPORTED).

#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "tokenizer/json_node.h"
#include "tokenizer/regex.h"

namespace bindery::tokenizer {

/// The Unicode normalization forms (UAX #15).
enum class UnicodeForm { kNFC, kNFD, kNFKC, kNFKD };

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
  using Step = std::variant<Prepend, Replace, Strip, ByteLevel, UnicodeForm>;
  void add(const Node& node);
  std::vector<Step> steps_;
};

/// A Replace pattern: {"String": "..."} (literal) or {"Regex": "..."}; `node` is "pattern".
std::shared_ptr<const Regex> parse_pattern(const Node& node);
/// The pattern's matches and the text between them replaced by `content` (tokenizers'
/// NormalizedString::replace and the Replace decoder).
std::string replace_all(const Regex& pattern, const std::string& text, const std::string& content);
/// `text` (valid UTF-8) in Unicode normalization form `form`, as tokenizers' NFC, NFD, NFKC
/// and NFKD normalizers make it (Unicode 9.0 data: later code points are left as they are).
std::string unicode_normalize(std::string_view text, UnicodeForm form);
/// The Unicode version of utf8proc's data ("15.0.0"): unicode_normalize knows which of its code
/// points are newer than Unicode 9.0 up to 15.0.
std::string_view utf8proc_unicode_data_version();
/// GPT-2's byte-to-unicode map: every byte of `text` as the printable character standing for
/// it ("Ġ" for a space).
std::string bytes_to_unicode(std::string_view text);

}  // namespace bindery::tokenizer
