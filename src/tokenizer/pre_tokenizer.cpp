#include "tokenizer/pre_tokenizer.h"

#include <algorithm>

#include "tokenizer/normalizer.h"
#include "tokenizer/utf8.h"

namespace bindery::tokenizer {
namespace {

// GPT-2's pre-tokenizer regex (tokenizers' ByteLevel with use_regex).
const Regex& gpt2_regex() {
  static const Regex re(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", false,
      "the ByteLevel pre-tokenizer");
  return re;
}

SplitBehavior parse_behavior(const Node& node) {
  const std::string name = node.as_string();
  if (name == "Removed") return SplitBehavior::kREMOVED;
  if (name == "Isolated") return SplitBehavior::kISOLATED;
  if (name == "MergedWithPrevious") return SplitBehavior::kMERGED_WITH_PREVIOUS;
  if (name == "MergedWithNext") return SplitBehavior::kMERGED_WITH_NEXT;
  if (name == "Contiguous") return SplitBehavior::kCONTIGUOUS;
  throw Error(ErrorCode::kCORRUPT_FILE,
              node.where() + ": unknown split behavior '" + name +
                  "' (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

std::vector<Piece> cut(const Piece& p, const std::vector<Span>& spans) {
  std::vector<Piece> out;
  out.reserve(spans.size());
  for (const auto& [start, end] : spans)
    out.push_back(Piece{p.text.substr(start, end - start), p.at_start && start == 0, -1});
  return out;
}

}  // namespace

std::vector<Span> split_text(std::string_view text, const Regex& pattern, SplitBehavior behavior,
                             bool invert) {
  struct Run {
    Span span;
    bool match;
  };
  std::vector<Run> runs;  // the whole text as matches and what is between them
  size_t prev = 0;
  for (const Span& m : pattern.find_all(text)) {
    if (prev != m.first) runs.push_back({{prev, m.first}, false});
    runs.push_back({m, true});
    prev = m.second;
  }
  if (prev != text.size()) runs.push_back({{prev, text.size()}, false});
  if (invert)
    for (Run& r : runs) r.match = !r.match;

  std::vector<Run> kept;  // match now means "remove"
  bool previous = false;
  switch (behavior) {
    case SplitBehavior::kREMOVED: kept = runs; break;
    case SplitBehavior::kISOLATED:
      for (const Run& r : runs) kept.push_back({r.span, false});
      break;
    case SplitBehavior::kCONTIGUOUS:
      for (const Run& r : runs) {
        if (r.match == previous && !kept.empty())
          kept.back().span.second = r.span.second;
        else
          kept.push_back({r.span, false});
        previous = r.match;
      }
      break;
    case SplitBehavior::kMERGED_WITH_PREVIOUS:
      for (const Run& r : runs) {
        if (r.match && !previous && !kept.empty())
          kept.back().span.second = r.span.second;
        else
          kept.push_back({r.span, false});
        previous = r.match;
      }
      break;
    case SplitBehavior::kMERGED_WITH_NEXT:
      for (auto it = runs.rbegin(); it != runs.rend(); ++it) {
        if (it->match && !previous && !kept.empty())
          kept.back().span.first = it->span.first;
        else
          kept.push_back({it->span, false});
        previous = it->match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
  }
  std::vector<Span> out;
  for (const Run& r : kept)
    if (!r.match && r.span.first != r.span.second) out.push_back(r.span);
  return out;
}

PreTokenizer::PreTokenizer(const Node& node) {
  if (!node.is_null()) add(node);
}

void PreTokenizer::add(const Node& node) {
  node.expect_object();
  const std::string type = node.type();
  if (type == "Sequence") {
    const Node list = node.at("pretokenizers");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) add(list.at(i));
  } else if (type == "ByteLevel") {
    steps_.push_back(
        ByteLevel{node.boolean_or("add_prefix_space", true), node.boolean_or("use_regex", true)});
  } else if (type == "Split") {
    steps_.push_back(Split{parse_pattern(node.at("pattern")), parse_behavior(node.at("behavior")),
                           node.boolean_or("invert", false)});
  } else if (type == "Metaspace") {
    Metaspace m;
    m.replacement = node.string_or("replacement", "\xE2\x96\x81");  // ▁
    check(!m.replacement.empty() && char_length(m.replacement, 0) == m.replacement.size(),
          ErrorCode::kCORRUPT_FILE,
          node.where() + ": replacement must be one character, found '" + m.replacement + "'");
    m.replacement_pattern = std::make_shared<Regex>(m.replacement, true, node.where());
    // Files from before prepend_scheme have add_prefix_space; false means "never".
    const std::string scheme = node.string_or("prepend_scheme", "always");
    if (scheme == "first")
      m.prepend = Prepend::kFIRST;
    else if (scheme == "always")
      m.prepend = Prepend::kALWAYS;
    else if (scheme == "never")
      m.prepend = Prepend::kNEVER;
    else
      throw Error(ErrorCode::kCORRUPT_FILE, node.where() + ": unknown prepend_scheme '" + scheme +
                                                "' (first, always, never)");
    if (!node.boolean_or("add_prefix_space", true)) m.prepend = Prepend::kNEVER;
    m.split = node.boolean_or("split", true);
    steps_.push_back(std::move(m));
  } else if (type == "Digits") {
    static const auto numeric = std::make_shared<const Regex>(R"(\p{N})", false, "Digits");
    steps_.push_back(Digits{numeric, node.boolean_or("individual_digits", false)});
  } else {
    node.unsupported("pre_tokenizer", "Sequence, ByteLevel, Split, Metaspace, Digits");
  }
}

void PreTokenizer::pre_tokenize(std::vector<Piece>& pieces) const {
  for (const Step& step : steps_) {
    if (const auto* b = std::get_if<ByteLevel>(&step)) {
      split_each(pieces, [&](Piece& p) {
        if (b->add_prefix_space && p.text.front() != ' ') p.text.insert(p.text.begin(), ' ');
        std::vector<Piece> words;
        if (b->use_regex)
          words = cut(p, split_text(p.text, gpt2_regex(), SplitBehavior::kISOLATED));
        else
          words.push_back(std::move(p));
        for (Piece& w : words) w.text = bytes_to_unicode(w.text);
        return words;
      });
    } else if (const auto* s = std::get_if<Split>(&step)) {
      split_each(pieces, [&](Piece& p) {
        return cut(p, split_text(p.text, *s->pattern, s->behavior, s->invert));
      });
    } else if (const auto* m = std::get_if<Metaspace>(&step)) {
      split_each(pieces, [&](Piece& p) {
        std::string& t = p.text;
        size_t n = 0;
        for (size_t i = 0; i < t.size(); ++i) n += t[i] == ' ';
        if (n) {
          std::string r;
          r.reserve(t.size() + n * (m->replacement.size() - 1));
          for (const char c : t) c == ' ' ? void(r += m->replacement) : void(r += c);
          t = std::move(r);
        }
        const bool starts = t.compare(0, m->replacement.size(), m->replacement) == 0;
        if (!starts &&
            (m->prepend == Prepend::kALWAYS || (m->prepend == Prepend::kFIRST && p.at_start)))
          t.insert(0, m->replacement);
        if (!m->split) return std::vector<Piece>{std::move(p)};
        return cut(p, split_text(t, *m->replacement_pattern, SplitBehavior::kMERGED_WITH_NEXT));
      });
    } else if (const auto* d = std::get_if<Digits>(&step)) {
      const SplitBehavior behavior =
          d->individual ? SplitBehavior::kISOLATED : SplitBehavior::kCONTIGUOUS;
      split_each(pieces,
                 [&](Piece& p) { return cut(p, split_text(p.text, *d->numeric, behavior)); });
    }
  }
}

}  // namespace bindery::tokenizer
