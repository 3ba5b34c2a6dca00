#pragma once
// UTF-8 helpers for the tokenizer: character boundaries, validation, Rust's lossy conversion
// (what `tokenizers` shows for broken byte sequences) and Unicode White_Space.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bindery::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

/// Length of the character starting at `s[i]` (valid UTF-8 assumed; 1 for a stray byte).
size_t char_length(std::string_view s, size_t i);
/// The code point starting at `s[i]` (valid UTF-8 assumed).
char32_t decode_char(std::string_view s, size_t i);
void append_char(std::string& out, char32_t c);
/// The offset of the first byte that is not part of a valid UTF-8 sequence, or npos.
size_t invalid_utf8_offset(std::string_view s);
/// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string lossy_utf8(std::string_view bytes);
/// Rust's char::is_whitespace (the Unicode White_Space property).
bool is_white_space(char32_t c);

}  // namespace bindery::tokenizer
