#pragma once
// tokenizer.json "pre_tokenizer": Sequence, ByteLevel (GPT-2's regex, add_prefix_space,
// use_regex), Split (String or Regex pattern, the five delimiter behaviours, invert),
// Metaspace (prepend_scheme first / always / never, split) and Digits. Others (Whitespace,
// BertPreTokenizer, ...) are refused with kUNSUPPORTED.

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tokenizer/json_node.h"
#include "tokenizer/regex.h"

namespace bindery::tokenizer {

/// A piece of the text on its way to the model: normalized text, or an added token (id >= 0)
/// that the later stages pass through.
struct Piece {
  std::string text;
  /// It begins at offset 0 of the original text (Metaspace's prepend_scheme "first").
  bool at_start = false;
  int32_t id = -1;
};

/// Replaces each piece that is not an added token by the non-empty pieces `fn` cuts it into
/// (fn(Piece&) returns a std::vector<Piece>).
template <typename Fn>
void split_each(std::vector<Piece>& pieces, Fn fn) {
  std::vector<Piece> out;
  out.reserve(pieces.size());
  for (Piece& p : pieces) {
    if (p.id >= 0) {
      out.push_back(std::move(p));
      continue;
    }
    for (Piece& q : fn(p))
      if (!q.text.empty()) out.push_back(std::move(q));
  }
  pieces = std::move(out);
}

/// How a split treats the matches (tokenizers' SplitDelimiterBehavior).
enum class SplitBehavior {
  kREMOVED,
  kISOLATED,
  kMERGED_WITH_PREVIOUS,
  kMERGED_WITH_NEXT,
  kCONTIGUOUS
};

/// `text` cut at the matches of `pattern` (inverted: at what is between them) as tokenizers'
/// NormalizedString::split does; empty pieces are dropped. Each piece is [start, end).
std::vector<Span> split_text(std::string_view text, const Regex& pattern, SplitBehavior behavior,
                             bool invert = false);

class PreTokenizer {
 public:
  /// From the "pre_tokenizer" field (null: the whole piece is one word).
  explicit PreTokenizer(const Node& node);
  /// Splits every piece that is not an added token into words, in place.
  void pre_tokenize(std::vector<Piece>& pieces) const;

 private:
  struct ByteLevel {
    bool add_prefix_space, use_regex;
  };
  struct Split {
    std::shared_ptr<const Regex> pattern;
    SplitBehavior behavior;
    bool invert;
  };
  enum class Prepend { kFIRST, kALWAYS, kNEVER };
  struct Metaspace {
    std::string replacement;
    std::shared_ptr<const Regex> replacement_pattern;
    Prepend prepend;
    bool split;
  };
  struct Digits {
    std::shared_ptr<const Regex> numeric;
    bool individual;
  };
  using Step = std::variant<ByteLevel, Split, Metaspace, Digits>;
  void add(const Node& node);
  std::vector<Step> steps_;
};

}  // namespace bindery::tokenizer
