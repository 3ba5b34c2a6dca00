// BPE as tokenizers applies it (models/bpe/word.rs): a word starts as one symbol per
// character (or <0xNN> byte pieces, or unk); then, repeatedly, the adjacent pair with the
// lowest merge rank (leftmost on ties) is merged. The symbols form a linked list over an
// array and the candidate pairs sit in a min-heap keyed (rank, position): entries that went
// stale (a neighbour merged since) are recognised when popped and dropped, so a word of n
// characters costs O(n log n) instead of the O(n^2) of rescanning for the best pair.

#include "tokenizer/bpe.h"

#include <queue>

#include "tokenizer/utf8.h"

namespace bindery::tokenizer {
namespace {

constexpr size_t kCacheCapacity = 10000;  // words, as tokenizers' default
constexpr size_t kCacheMaxWord = 256;     // bytes; longer words are not cached

struct Symbol {
  int32_t c;
  int32_t prev, next;  // -1: none
  size_t len;          // bytes of the word it covers; 0 once merged into its left neighbour
};

struct Candidate {
  uint32_t rank;
  size_t pos;
  int32_t new_id;
  // std::priority_queue pops the largest: make the lowest rank, then lowest pos, the largest.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(const Node& node) {
  node.expect_object();
  const std::string type = node.string_or("type", "BPE");
  if (type != "BPE") node.unsupported("model", "BPE");

  const Node vocab = node.at("vocab");
  vocab.expect_object();
  for (const auto& [token, value] : vocab.json().items()) {
    check(
        value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() <= INT32_MAX,
        ErrorCode::kCORRUPT_FILE,
        vocab.where() + ": the id of '" + token + "' must be a non-negative int32, found " +
            Node::brief(value));
    const auto id = static_cast<int32_t>(value.get<int64_t>());
    vocab_[token] = id;
    vocab_r_[id] = token;
    max_id_ = std::max(max_id_, id);
  }
  for (int b = 0; b < 256; ++b) {
    static const char* hex = "0123456789ABCDEF";
    const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
    const auto it = vocab_.find(name);
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  if (node.has("unk_token")) {
    const std::string unk = node.string("unk_token");
    const auto it = vocab_.find(unk);
    check(it != vocab_.end(), ErrorCode::kCORRUPT_FILE,
          node.at("unk_token").where() + ": '" + unk + "' is not in model.vocab");
    unk_id_ = it->second;
  }
  fuse_unk_ = node.boolean_or("fuse_unk", false);
  byte_fallback_ = node.boolean_or("byte_fallback", false);
  ignore_merges_ = node.boolean_or("ignore_merges", false);
  continuing_subword_prefix_ = node.string_or("continuing_subword_prefix", "");
  end_of_word_suffix_ = node.string_or("end_of_word_suffix", "");

  const Node merges = node.at("merges");
  merges.expect_array();
  merges_.reserve(merges.size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges.size(); ++i) {
    const Node m = merges.at(i);
    std::string a, b;
    if (m.json().is_string()) {
      const std::string line = m.as_string();
      if (line.rfind("#version", 0) == 0) continue;  // merges.txt's header line
      const size_t space = line.find(' ');
      check(
          space != std::string::npos && line.find(' ', space + 1) == std::string::npos,
          ErrorCode::kCORRUPT_FILE,
          m.where() + ": a merge must be two tokens separated by one space, found '" + line + "'");
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else {
      check(m.json().is_array() && m.size() == 2 && m.json()[0].is_string() &&
                m.json()[1].is_string(),
            ErrorCode::kCORRUPT_FILE,
            m.where() + ": a merge must be \"a b\" or [\"a\", \"b\"], found " +
                Node::brief(m.json()));
      a = m.json()[0].get<std::string>();
      b = m.json()[1].get<std::string>();
    }
    const auto find = [&](const std::string& token, const char* role) {
      const auto it = vocab_.find(token);
      check(it != vocab_.end(), ErrorCode::kCORRUPT_FILE,
            m.where() + ": the merge of '" + a + "' and '" + b + "' names " + role + " '" + token +
                "', which is not in model.vocab");
      return it->second;
    };
    const int32_t a_id = find(a, "the token"), b_id = find(b, "the token");
    const size_t skip = std::min(continuing_subword_prefix_.size(), b.size());
    const int32_t new_id = find(a + b.substr(skip), "the merged token");
    merges_[pair_key(a_id, b_id)] = Merge{rank++, new_id};  // a repeated pair: the last wins
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  const auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : &it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kCacheMaxWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    const auto it = cache_.find(word);
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](int32_t c, size_t len) {
    const auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back(Symbol{c, n - 1, -1, len});
  };
  int32_t unk = -1;  // a pending unk symbol (grown while fuse_unk) and its bytes
  size_t unk_len = 0;
  std::string s;
  for (size_t i = 0; i < word.size();) {
    const size_t len = char_length(word, i);
    s.assign(word.substr(i, len));
    if (i > 0) s.insert(0, continuing_subword_prefix_);
    if (i + len == word.size()) s += end_of_word_suffix_;
    i += len;
    if (const auto it = vocab_.find(s); it != vocab_.end()) {
      if (unk >= 0) add(unk, unk_len), unk = -1;
      add(it->second, len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (const char c : s) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (const char c : s) add(byte_ids_[static_cast<uint8_t>(c)], 1);
        continue;
      }
    }
    if (!unk_id_) continue;  // no unk token: the character is dropped, as tokenizers does
    if (unk >= 0 && fuse_unk_) {
      unk_len += len;
    } else {
      if (unk >= 0) add(unk, unk_len);
      unk = *unk_id_, unk_len = len;
    }
  }
  if (unk >= 0) add(unk, unk_len);

  std::priority_queue<Candidate> queue;
  const auto candidate = [&](size_t pos, int32_t left, int32_t right) {
    const auto it = merges_.find(pair_key(left, right));
    if (it != merges_.end()) queue.push(Candidate{it->second.rank, pos, it->second.new_id});
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) candidate(i, symbols[i].c, symbols[i + 1].c);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.len == 0 || left.next < 0) continue;
    const Symbol right = symbols[static_cast<size_t>(left.next)];
    const auto it = merges_.find(pair_key(left.c, right.c));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale
    symbols[static_cast<size_t>(left.next)].len = 0;
    left.c = top.new_id;
    left.len += right.len;
    left.next = right.next;
    if (right.next >= 0)
      symbols[static_cast<size_t>(right.next)].prev = static_cast<int32_t>(top.pos);
    if (left.prev >= 0)
      candidate(static_cast<size_t>(left.prev), symbols[static_cast<size_t>(left.prev)].c, left.c);
    if (left.next >= 0) candidate(top.pos, left.c, symbols[static_cast<size_t>(left.next)].c);
  }
  for (const Symbol& sym : symbols)
    if (sym.len != 0) out.push_back(sym.c);
}

}  // namespace bindery::tokenizer
