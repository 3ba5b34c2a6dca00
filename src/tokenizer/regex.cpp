#include "tokenizer/regex.h"

#include <pcre2.h>

#include "bindery/error.h"
#include "tokenizer/utf8.h"

namespace bindery::tokenizer {

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

constexpr std::string_view kSpace = R"(\t-\r\x{20}\x{85}\p{Z})";
constexpr std::string_view kWord = R"(\p{L}\p{M}\p{Nd}\p{Pc})";
constexpr std::string_view kHex = "0-9a-fA-F";

struct MatchData {
  pcre2_match_data* data;
  explicit MatchData(const pcre2_code* code)
      : data(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() { pcre2_match_data_free(data); }
};

}  // namespace

std::string oniguruma_to_pcre2(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 'Q') {  // \Q...\E quotes verbatim
        const size_t end = pattern.find("\\E", i + 1);
        const size_t stop = end == std::string::npos ? pattern.size() : end + 2;
        out.append(pattern, i - 1, stop - (i - 1));
        i = stop - 1;
        continue;
      }
      std::string_view set;
      if (e == 's' || e == 'S') set = kSpace;
      if (e == 'w' || e == 'W') set = kWord;
      if (e == 'h' || e == 'H') set = kHex;
      const bool negated = e == 'S' || e == 'W' || e == 'H';
      if (set.empty() || (in_class && negated)) {  // a negated set inside a class: PCRE2's
        out += c;
        out += e;
      } else if (in_class) {
        out += set;
      } else {
        out += negated ? "[^" : "[";
        out += set;
        out += ']';
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' first in the class (after an optional '^') is a literal in both dialects.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, bool literal, const std::string& where)
    : code_(std::make_unique<Code>()) {
  const std::string translated = literal ? pattern : oniguruma_to_pcre2(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              options, &error, &offset, nullptr);
  if (!code_->code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    throw Error(ErrorCode::kCORRUPT_FILE,
                where + ": the regex '" + pattern + "' does not compile (at offset " +
                    std::to_string(offset) + ": " + reinterpret_cast<const char*>(message) + ")");
  }
  pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if not
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

std::vector<Span> Regex::find_all(std::string_view text) const {
  std::vector<Span> out;
  const MatchData md(code_->code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (from <= text.size()) {
    const int rc =
        pcre2_match(code_->code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, md.data, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    check(rc > 0, ErrorCode::kINTERNAL,
          "regex match failed with PCRE2 error " + std::to_string(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md.data);
    const size_t start = ovector[0], end = ovector[1];
    if (start == end && have_last && last_end == end) {  // no empty match right after a match
      from += from < text.size() ? char_length(text, from) : 1;
      continue;
    }
    out.emplace_back(start, end);
    from = last_end = end;
    have_last = true;
  }
  return out;
}

bool Regex::matches_at(std::string_view text, size_t offset) const {
  const MatchData md(code_->code);
  return pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), offset,
                     PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md.data, nullptr) > 0;
}

}  // namespace bindery::tokenizer
