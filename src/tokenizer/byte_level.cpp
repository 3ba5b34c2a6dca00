#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace bindery::tokenizer {
namespace {

struct Table {
  std::array<char32_t, 256> code{};
  std::array<std::string, 256> utf8;
  std::array<int16_t, 0x144> byte_of;  // code point -> byte; every code is below 0x144

  Table() {
    byte_of.fill(-1);
    const auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) code[b] = printable(b) ? static_cast<char32_t>(b) : next++;
    for (int b = 0; b < 256; ++b) {
      append_char(utf8[b], code[b]);
      byte_of[code[b]] = static_cast<int16_t>(b);
    }
  }
};

const Table& table() {
  static const Table t;
  return t;
}

}  // namespace

const std::string& byte_char(uint8_t b) { return table().utf8[b]; }

std::optional<uint8_t> char_byte(char32_t c) {
  const Table& t = table();
  if (c >= t.byte_of.size() || t.byte_of[c] < 0) return std::nullopt;
  return static_cast<uint8_t>(t.byte_of[c]);
}

}  // namespace bindery::tokenizer
