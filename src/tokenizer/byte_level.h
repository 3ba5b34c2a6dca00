#pragma once
// GPT-2's byte-to-unicode table: the byte-level BPE alphabet. Printable Latin-1 bytes stand
// for themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD) map to U+0100.. in order, so
// a space is "Ġ" (U+0120) and a newline "Ċ" (U+010A).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bindery::tokenizer {

/// The UTF-8 of the character standing for byte `b`.
const std::string& byte_char(uint8_t b);
/// The byte a character stands for (its code point), if it is one of the table's.
std::optional<uint8_t> char_byte(char32_t c);

}  // namespace bindery::tokenizer
