#include "tokenizer/normalizer.h"

#include <array>

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
  } else {
    node.unsupported("normalizer", "Sequence, Prepend, Replace, Strip, ByteLevel");
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
    } else {
      text = bytes_to_unicode(text);
    }
  }
}

}  // namespace bindery::tokenizer
