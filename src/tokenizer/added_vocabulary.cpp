#include "tokenizer/added_vocabulary.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace bindery::tokenizer {
namespace {

// The regex crate's Unicode \w, which tokenizers uses for single_word.
constexpr const char* kWordChar = R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])";

size_t previous_char(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// Where the run of whitespace that ends `s` begins (tokenizers: the match of \s*$).
size_t trailing_space_start(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    const size_t i = previous_char(s, end);
    if (!is_white_space(decode_char(s, i))) break;
    end = i;
  }
  return end;
}

// Where the run of whitespace that starts `s` ends (tokenizers: the match of ^\s*).
size_t leading_space_end(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && is_white_space(decode_char(s, i))) i += char_length(s, i);
  return i;
}

}  // namespace

void AddedVocabulary::Trie::add(const std::string& pattern, size_t token) {
  uint32_t node = 0;
  for (const char ch : pattern) {
    const auto c = static_cast<uint8_t>(ch);
    auto& children = nodes_[node].children;
    const auto it = std::find_if(children.begin(), children.end(),
                                 [&](const auto& child) { return child.first == c; });
    if (it != children.end()) {
      node = it->second;
      continue;
    }
    const auto next = static_cast<uint32_t>(nodes_.size());
    nodes_[node].children.emplace_back(c, next);
    nodes_.emplace_back();
    node = next;
  }
  nodes_[node].token = static_cast<int64_t>(token);
  first_byte_[static_cast<uint8_t>(pattern[0])] = true;
}

std::pair<size_t, size_t> AddedVocabulary::Trie::longest_at(std::string_view text, size_t i) const {
  std::pair<size_t, size_t> best{0, 0};
  if (!first_byte_[static_cast<uint8_t>(text[i])]) return best;
  uint32_t node = 0;
  for (size_t k = i; k < text.size(); ++k) {
    const auto c = static_cast<uint8_t>(text[k]);
    const auto& children = nodes_[node].children;
    const auto it = std::find_if(children.begin(), children.end(),
                                 [&](const auto& child) { return child.first == c; });
    if (it == children.end()) break;
    node = it->second;
    if (nodes_[node].token >= 0) best = {k + 1 - i, static_cast<size_t>(nodes_[node].token)};
  }
  return best;
}

AddedVocabulary::AddedVocabulary(const Node& node, const BpeModel& model,
                                 const Normalizer& normalizer)
    : word_char_(kWordChar, false, "single_word") {
  max_id_ = model.max_id();
  if (node.is_null()) return;
  node.expect_array();
  auto next_id = static_cast<int32_t>(model.size());
  for (size_t i = 0; i < node.size(); ++i) {
    const Node t = node.at(i);
    t.expect_object();
    AddedToken token;
    token.content = t.string("content");
    token.single_word = t.boolean_or("single_word", false);
    token.lstrip = t.boolean_or("lstrip", false);
    token.rstrip = t.boolean_or("rstrip", false);
    token.special = t.boolean_or("special", false);
    token.normalized = t.boolean_or("normalized", !token.special);
    if (token.content.empty()) continue;  // tokenizers ignores those
    if (const auto it = by_content_.find(token.content); it != by_content_.end())
      token.id = it->second;
    else if (const auto id = model.token_to_id(token.content))
      token.id = *id;
    else
      token.id = next_id++;
    token.decoded = token.content;
    if (token.normalized) normalizer.normalize(token.decoded);
    by_content_[token.content] = token.id;
    if (token.special) specials_.insert(token.content);
    max_id_ = std::max(max_id_, token.id);
    if (const auto it = by_id_.find(token.id); it != by_id_.end())
      tokens_[it->second] = std::move(token);
    else
      by_id_[token.id] = tokens_.size(), tokens_.push_back(std::move(token));
  }
  for (size_t k = 0; k < tokens_.size(); ++k) {
    const AddedToken& token = tokens_[k];
    const std::string& pattern = token.normalized ? token.decoded : token.content;
    if (!pattern.empty()) (token.normalized ? normalized_ : raw_).add(pattern, k);
  }
}

const AddedToken* AddedVocabulary::find(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view content) const {
  const auto it = by_content_.find(content);
  if (it == by_content_.end()) return std::nullopt;
  return it->second;
}

bool AddedVocabulary::ends_with_word(std::string_view text) const {
  return !text.empty() && word_char_.matches_at(text, previous_char(text, text.size()));
}

bool AddedVocabulary::starts_with_word(std::string_view text) const {
  return !text.empty() && word_char_.matches_at(text, 0);
}

std::vector<AddedVocabulary::Match> AddedVocabulary::find_matches(std::string_view text,
                                                                  const Trie& trie) const {
  std::vector<Match> out;
  if (trie.empty()) {
    out.push_back({-1, {0, text.size()}});
    return out;
  }
  size_t start_offset = 0;
  for (size_t i = 0; i < text.size();) {
    const auto [length, index] = trie.longest_at(text, i);
    if (length == 0) {
      ++i;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = i, stop = i + length;
    i = stop;  // the next match starts after this one even when this one is discarded
    if (token.single_word) {
      const bool space_before = start == 0 || !ends_with_word(text.substr(0, start));
      const bool space_after = stop == text.size() || !starts_with_word(text.substr(stop));
      if (!space_before || !space_after) continue;
    }
    // lstrip: the spaces before it, unless the previous match already took them.
    if (token.lstrip) start = std::max(trailing_space_start(text.substr(0, start)), start_offset);
    if (token.rstrip) stop += leading_space_end(text.substr(stop));
    if (start_offset < start) out.push_back({-1, {start_offset, start}});
    out.push_back({static_cast<int64_t>(index), {start, stop}});
    start_offset = stop;
  }
  if (start_offset != text.size()) out.push_back({-1, {start_offset, text.size()}});
  return out;
}

void AddedVocabulary::split(std::vector<Piece>& pieces, bool normalized) const {
  const Trie& trie = normalized ? normalized_ : raw_;
  if (trie.empty()) return;
  split_each(pieces, [&](Piece& p) {
    std::vector<Piece> cut;
    for (const Match& m : find_matches(p.text, trie)) {
      const auto [start, end] = m.span;
      if (end <= start) continue;
      cut.push_back(Piece{p.text.substr(start, end - start), p.at_start && start == 0,
                          m.token >= 0 ? tokens_[static_cast<size_t>(m.token)].id : -1});
    }
    return cut;
  });
}

}  // namespace bindery::tokenizer
