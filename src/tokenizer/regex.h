#pragma once
// Regexes of tokenizer.json (Split and Replace patterns, the ByteLevel regex) on PCRE2, with
// Unicode properties (UTF + UCP, JIT-compiled). `tokenizers` runs them on Oniguruma, so the
// few escapes whose meaning differs are rewritten to Oniguruma's: \s is [\t-\r \x85\p{Z}]
// (PCRE2 adds U+180E), \w is [\p{L}\p{M}\p{Nd}\p{Pc}], \h is a hex digit; ^ and $ match at
// line breaks, as in Ruby syntax.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace bindery::tokenizer {

/// [start, end) byte offsets of a match.
using Span = std::pair<size_t, size_t>;

class Regex {
 public:
  /// Compiles `pattern` (a literal string when `literal`). `where` names it in errors
  /// (kCORRUPT_FILE: "tokenizer.json pre_tokenizer.pretokenizers[0].pattern.Regex: ...").
  Regex(const std::string& pattern, bool literal, const std::string& where);
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;

  /// Every match in `text`, left to right, as Oniguruma's find_iter gives them (an empty
  /// match right after the previous match is skipped). `text` must be valid UTF-8.
  std::vector<Span> find_all(std::string_view text) const;
  /// Whether the match anchored at `offset` exists (for single-character classes).
  bool matches_at(std::string_view text, size_t offset) const;

 private:
  struct Code;
  std::unique_ptr<Code> code_;
};

/// `pattern` with Oniguruma's meaning of \s, \S, \w, \W, \h, \H in PCRE2 syntax.
std::string oniguruma_to_pcre2(const std::string& pattern);

}  // namespace bindery::tokenizer
