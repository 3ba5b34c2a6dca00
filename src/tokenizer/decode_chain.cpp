#include "tokenizer/decode_chain.h"

#include <optional>

#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/utf8.h"

namespace bindery::tokenizer {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ByteFallback's test: "<0xNN>" (six bytes; NN parsed as Rust's u8::from_str_radix(_, 16)
// does, which also takes "+N").
std::optional<uint8_t> byte_token(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return std::nullopt;
  const int hi = hex_digit(t[3]), lo = hex_digit(t[4]);
  if (t[3] == '+' && lo >= 0) return static_cast<uint8_t>(lo);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

char32_t one_char(const Node& node) {
  const std::string s = node.as_string();
  check(!s.empty() && char_length(s, 0) == s.size() && invalid_utf8_offset(s) == std::string::npos,
        ErrorCode::kCORRUPT_FILE, node.where() + " must be one character, found '" + s + "'");
  return decode_char(s, 0);
}

std::string joined(const std::vector<std::string>& tokens, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) out += separator;
    out += tokens[i];
  }
  return out;
}

}  // namespace

DecodeChain::DecodeChain(const Node& node) {
  if (node.is_null()) return;
  none_ = false;
  add(node);
}

void DecodeChain::add(const Node& node) {
  node.expect_object();
  const std::string type = node.type();
  if (type == "Sequence") {
    const Node list = node.at("decoders");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) add(list.at(i));
  } else if (type == "ByteLevel") {
    steps_.push_back(ByteLevel{});
  } else if (type == "Replace") {
    steps_.push_back(Replace{parse_pattern(node.at("pattern")), node.string("content")});
  } else if (type == "ByteFallback") {
    steps_.push_back(ByteFallback{});
    byte_fallback_ = true;
  } else if (type == "Fuse") {
    steps_.push_back(Fuse{});
  } else if (type == "Strip") {
    const int64_t start = node.at("start").as_integer(), stop = node.at("stop").as_integer();
    check(start >= 0 && stop >= 0, ErrorCode::kCORRUPT_FILE,
          node.where() + ": start and stop must not be negative");
    steps_.push_back(
        Strip{one_char(node.at("content")), static_cast<size_t>(start), static_cast<size_t>(stop)});
  } else if (type == "Metaspace") {
    const char32_t replacement =
        node.has("replacement") ? one_char(node.at("replacement")) : U'\u2581';
    const bool never = node.string_or("prepend_scheme", "always") == "never" ||
                       !node.boolean_or("add_prefix_space", true);
    steps_.push_back(Metaspace{replacement, !never});
  } else {
    node.unsupported("decoder",
                     "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace");
  }
}

bool DecodeChain::is_pending_byte(const std::string& token) const {
  return byte_fallback_ && byte_token(token).has_value();
}

std::string DecodeChain::decode(std::vector<std::string> tokens, bool at_start) const {
  if (none_) {
    const std::string text = joined(tokens, " ");
    return at_start || tokens.empty() ? text : " " + text;
  }
  // Whether the tokens were fused into one text: a Strip after that sees the text's start.
  bool fused = false;
  for (const Step& step : steps_) {
    if (std::holds_alternative<ByteLevel>(step)) {
      std::string bytes;
      for (const std::string& t : tokens) {
        std::string mapped;
        bool all = true;
        for (size_t i = 0; i < t.size() && all; i += char_length(t, i)) {
          const auto b = char_byte(decode_char(t, i));
          all = b.has_value();
          if (all) mapped += static_cast<char>(*b);
        }
        bytes += all ? mapped : t;  // a token with other characters goes in as it is
      }
      tokens = {lossy_utf8(bytes)};
      fused = true;
    } else if (const auto* r = std::get_if<Replace>(&step)) {
      for (std::string& t : tokens) t = replace_all(*r->pattern, t, r->content);
    } else if (std::holds_alternative<ByteFallback>(step)) {
      std::vector<std::string> out;
      std::string run;
      const auto flush = [&] {
        if (run.empty()) return;
        if (invalid_utf8_offset(run) == std::string::npos)
          out.push_back(run);
        else
          for (size_t i = 0; i < run.size(); ++i) out.emplace_back(kReplacementChar);
        run.clear();
      };
      for (std::string& t : tokens) {
        if (const auto b = byte_token(t)) {
          run += static_cast<char>(*b);
          continue;
        }
        flush();
        out.push_back(std::move(t));
      }
      flush();
      tokens = std::move(out);
    } else if (std::holds_alternative<Fuse>(step)) {
      tokens = {joined(tokens, "")};
      fused = true;
    } else if (const auto* s = std::get_if<Strip>(&step)) {
      for (std::string& t : tokens) {
        size_t begin = 0, end = t.size();
        // A continued stream's text does not start here: only the stop side applies.
        for (size_t n = 0; n < s->start && begin < end && (at_start || !fused); ++n) {
          if (decode_char(t, begin) != s->content) break;
          begin += char_length(t, begin);
        }
        for (size_t n = 0; n < s->stop && end > begin; ++n) {
          size_t prev = end - 1;
          while (prev > begin && (static_cast<uint8_t>(t[prev]) & 0xC0) == 0x80) --prev;
          if (decode_char(t, prev) != s->content) break;
          end = prev;
        }
        t = t.substr(begin, end - begin);
      }
    } else if (const auto* m = std::get_if<Metaspace>(&step)) {
      for (size_t k = 0; k < tokens.size(); ++k) {
        const std::string& t = tokens[k];
        const bool drop = k == 0 && at_start && m->prepend;
        std::string out;
        for (size_t i = 0; i < t.size(); i += char_length(t, i)) {
          if (decode_char(t, i) != m->replacement)
            out.append(t, i, char_length(t, i));
          else if (!drop)
            out += ' ';
        }
        tokens[k] = std::move(out);
      }
    }
  }
  return joined(tokens, "");
}

}  // namespace bindery::tokenizer
