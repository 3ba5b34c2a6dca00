#include "tokenizer/utf8.h"

namespace bindery::tokenizer {
namespace {

// The length of a well-formed sequence whose first byte is `b` (0 for bytes that never start
// one) and the range its second byte must be in (Unicode Table 3-7).
struct Lead {
  int length;
  uint8_t low, high;
};

Lead lead_of(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Bytes of the valid prefix of the sequence at s[i]: equals lead.length when it is whole.
int valid_prefix(std::string_view s, size_t i, const Lead& lead) {
  int n = 1;
  for (; n < lead.length && i + n < s.size(); ++n) {
    const auto c = static_cast<uint8_t>(s[i + n]);
    const uint8_t low = n == 1 ? lead.low : 0x80, high = n == 1 ? lead.high : 0xBF;
    if (c < low || c > high) break;
  }
  return n;
}

}  // namespace

size_t char_length(std::string_view s, size_t i) {
  const int n = lead_of(static_cast<uint8_t>(s[i])).length;
  return n == 0 || i + n > s.size() ? 1 : static_cast<size_t>(n);
}

char32_t decode_char(std::string_view s, size_t i) {
  const auto b = static_cast<uint8_t>(s[i]);
  const size_t n = char_length(s, i);
  if (n == 1) return b;
  char32_t c = b & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) c = (c << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  return c;
}

void append_char(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

size_t invalid_utf8_offset(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Lead lead = lead_of(static_cast<uint8_t>(s[i]));
    if (lead.length == 0 || valid_prefix(s, i, lead) != lead.length) return i;
    i += static_cast<size_t>(lead.length);
  }
  return std::string_view::npos;
}

std::string lossy_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Lead lead = lead_of(static_cast<uint8_t>(s[i]));
    if (lead.length == 1) {
      out += s[i++];
      continue;
    }
    const int n = lead.length == 0 ? 1 : valid_prefix(s, i, lead);
    if (n == lead.length)
      out.append(s.substr(i, static_cast<size_t>(n)));
    else
      out += kReplacementChar;  // the maximal subpart: a lead and the continuations it allows
    i += static_cast<size_t>(n);
  }
  return out;
}

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

}  // namespace bindery::tokenizer
