#include "tokenizer/normalizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <iterator>
#include <utility>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace bindery::tokenizer {

std::shared_ptr<const Regex> parse_pattern(const Node& node) {
  node.expect_object();
  if (node.has("String")) return std::make_shared<Regex>(node.string("String"), true, node.where());
  if (node.has("Regex")) return std::make_shared<Regex>(node.string("Regex"), false, node.where());
  throw Error(ErrorCode::kCORRUPT_FILE,
              node.where() + " must be {\"String\": ...} or {\"Regex\": ...}, found " +
                  Node::brief(node.json()));
}

std::string replace_all(const Regex& pattern, const std::string& text, const std::string& content) {
  std::string out;
  size_t last = 0;
  for (const auto& [start, end] : pattern.find_all(text)) {
    out.append(text, last, start - last);
    out += content;
    last = end;
  }
  out.append(text, last, std::string::npos);
  return out;
}

std::string bytes_to_unicode(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 2);
  for (const char c : text) out += byte_char(static_cast<uint8_t>(c));
  return out;
}

namespace {

// The code points that utf8proc (Unicode 15.0 in Debian bookworm's 2.8.0) gives normalization
// data (a combining class, a decomposition, a part in a composition) but that Unicode 9.0 did
// not have: tokenizers normalizes with the unicode-normalization-alignments crate, whose tables
// are Unicode 9.0's, so to it they are unassigned starters that neither decompose nor compose
// ("\u32FF" stays, NFD leaves "a\u1DF6\u0334" in that order). Made from utf8proc's properties
// and Perl's Unicode::UCD ages (10.0 to 14.0, and unassigned in 14.0 for 15.0's).
constexpr std::pair<char32_t, char32_t> kNewerThanUnicode9[] = {
    {0x7FD, 0x7FD},     {0x898, 0x89F},     {0x8CA, 0x8D3},     {0x9FE, 0x9FE},
    {0xC3C, 0xC3C},     {0xD3B, 0xD3C},     {0xEBA, 0xEBA},     {0x1715, 0x1715},
    {0x1ABF, 0x1ACE},   {0x1DF6, 0x1DFA},   {0x32FF, 0x32FF},   {0xA7F2, 0xA7F4},
    {0xA82C, 0xA82C},   {0xAB69, 0xAB69},   {0x10781, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10EFD, 0x10EFF},
    {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x11930, 0x11930}, {0x11935, 0x11935},
    {0x11938, 0x11938}, {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0},
    {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42},
    {0x11D44, 0x11D45}, {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1},
    {0x1E030, 0x1E06D}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE},
    {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}, {0x1F16C, 0x1F16C}, {0x1FBF0, 0x1FBF9},
};

bool newer_than_unicode_9(char32_t c) {
  if (c < kNewerThanUnicode9[0].first) return false;
  const auto* it = std::upper_bound(std::begin(kNewerThanUnicode9), std::end(kNewerThanUnicode9), c,
                                    [](char32_t v, const auto& r) { return v < r.first; });
  return it != std::begin(kNewerThanUnicode9) && c <= std::prev(it)->second;
}

// utf8proc_NFC and the like, with an explicit length (the text may hold U+0000).
void append_normalized(std::string& out, std::string_view text, utf8proc_option_t options) {
  if (text.empty()) return;
  utf8proc_uint8_t* mapped = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &mapped, options);
  if (n < 0) {
    std::free(mapped);
    throw Error(ErrorCode::kINTERNAL, std::string("Unicode normalization failed: ") +
                                          utf8proc_errmsg(n) + " (" + std::to_string(text.size()) +
                                          " bytes of text)");
  }
  out.append(reinterpret_cast<const char*>(mapped), static_cast<size_t>(n));
  std::free(mapped);
}

}  // namespace

std::string unicode_normalize(std::string_view text, UnicodeForm form) {
  // STABLE keeps the composition exclusions out of the composed forms, as UAX #15 requires.
  int options = UTF8PROC_STABLE;
  switch (form) {
    case UnicodeForm::kNFC: options |= UTF8PROC_COMPOSE; break;
    case UnicodeForm::kNFD: options |= UTF8PROC_DECOMPOSE; break;
    case UnicodeForm::kNFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case UnicodeForm::kNFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  // The text is cut at the code points Unicode 9.0 did not have, which pass through as they
  // are: a starter that never composes stops reordering and composition, so the spans between
  // normalize on their own exactly as tokenizers does the whole.
  std::string out;
  out.reserve(text.size());
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const size_t n = char_length(text, i);
    if (n > 1 && newer_than_unicode_9(decode_char(text, i))) {
      append_normalized(out, text.substr(start, i - start),
                        static_cast<utf8proc_option_t>(options));
      out.append(text.substr(i, n));
      start = i + n;
    }
    i += n;
  }
  append_normalized(out, text.substr(start), static_cast<utf8proc_option_t>(options));
  return out;
}

std::string_view utf8proc_unicode_data_version() { return utf8proc_unicode_version(); }

Normalizer::Normalizer(const Node& node) {
  if (!node.is_null()) add(node);
}

void Normalizer::add(const Node& node) {
  node.expect_object();
  const std::string type = node.type();
  if (type == "Sequence") {
    const Node list = node.at("normalizers");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) add(list.at(i));
  } else if (type == "Prepend") {
    steps_.push_back(Prepend{node.string("prepend")});
  } else if (type == "Replace") {
    steps_.push_back(Replace{parse_pattern(node.at("pattern")), node.string("content")});
  } else if (type == "Strip") {
    steps_.push_back(
        Strip{node.boolean_or("strip_left", true), node.boolean_or("strip_right", true)});
  } else if (type == "ByteLevel") {
    steps_.push_back(ByteLevel{});
  } else if (type == "NFC") {
    steps_.push_back(UnicodeForm::kNFC);
  } else if (type == "NFD") {
    steps_.push_back(UnicodeForm::kNFD);
  } else if (type == "NFKC") {
    steps_.push_back(UnicodeForm::kNFKC);
  } else if (type == "NFKD") {
    steps_.push_back(UnicodeForm::kNFKD);
  } else {
    node.unsupported("normalizer",
                     "Sequence, Prepend, Replace, Strip, ByteLevel, NFC, NFD, NFKC, NFKD");
  }
}

void Normalizer::normalize(std::string& text) const {
  for (const Step& step : steps_) {
    if (const auto* p = std::get_if<Prepend>(&step)) {
      if (!text.empty()) text.insert(0, p->text);
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      text = replace_all(*r->pattern, text, r->content);
    } else if (const auto* s = std::get_if<Strip>(&step)) {
      size_t begin = 0, end = text.size();
      if (s->left)
        while (begin < end && is_white_space(decode_char(text, begin)))
          begin += char_length(text, begin);
      if (s->right)
        while (end > begin) {
          size_t prev = end - 1;
          while (prev > begin && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
          if (!is_white_space(decode_char(text, prev))) break;
          end = prev;
        }
      text = text.substr(begin, end - begin);
    } else if (std::holds_alternative<ByteLevel>(step)) {
      text = bytes_to_unicode(text);
    } else {
      text = unicode_normalize(text, std::get<UnicodeForm>(step));
    }
  }
}

}  // namespace bindery::tokenizer
