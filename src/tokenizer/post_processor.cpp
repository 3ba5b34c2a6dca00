#include "tokenizer/post_processor.h"

namespace bindery::tokenizer {
namespace {

// Roberta and Bert name their tokens as ["</s>", 2].
int32_t token_pair_id(const Node& node) {
  check(node.json().is_array() && node.size() == 2 && node.json()[1].is_number_integer(),
        ErrorCode::kCORRUPT_FILE,
        node.where() + " must be [\"token\", id], found " + Node::brief(node.json()));
  return node.at(1).json().get<int32_t>();
}

}  // namespace

PostProcessor::PostProcessor(const Node& node) {
  if (!node.is_null()) add(node);
}

void PostProcessor::add(const Node& node) {
  node.expect_object();
  const std::string type = node.type();
  if (type == "Sequence") {
    const Node list = node.at("processors");
    list.expect_array();
    for (size_t i = 0; i < list.size(); ++i) add(list.at(i));
  } else if (type == "ByteLevel") {
    // Trims offsets; ids are left alone.
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    templates_.push_back({Item{false, {token_pair_id(node.at("cls"))}}, Item{true, {}},
                          Item{false, {token_pair_id(node.at("sep"))}}});
  } else if (type == "TemplateProcessing") {
    const Node single = node.at("single");
    single.expect_array();
    const Node specials = node.at("special_tokens");
    specials.expect_object();
    std::vector<Item> items;
    for (size_t i = 0; i < single.size(); ++i) {
      const Node piece = single.at(i);
      std::string name;  // a special token's id in special_tokens; empty for the sequence
      if (piece.json().is_string()) {  // the "<s>:0" / "$A:0" form
        const std::string s = piece.as_string();
        if (s.empty() || s[0] != '$') name = s.substr(0, s.find(':'));
      } else if (piece.has("SpecialToken")) {
        name = piece.at("SpecialToken").string("id");
      } else {
        check(piece.has("Sequence"), ErrorCode::kCORRUPT_FILE,
              piece.where() + " must be {\"SpecialToken\": ...} or {\"Sequence\": ...}, found " +
                  Node::brief(piece.json()));
      }
      if (name.empty()) {
        items.push_back(Item{true, {}});
        continue;
      }
      check(specials.has(name.c_str()), ErrorCode::kCORRUPT_FILE,
            piece.where() + ": special token '" + name + "' is not in " + specials.path());
      const Node ids = specials.at(name.c_str()).at("ids");
      ids.expect_array();
      Item item{false, {}};
      for (size_t k = 0; k < ids.size(); ++k) {
        const int64_t id = ids.at(k).as_integer();
        check(id >= 0 && id <= INT32_MAX, ErrorCode::kCORRUPT_FILE,
              ids.at(k).where() + ": a token id must be a non-negative int32, found " +
                  std::to_string(id));
        item.ids.push_back(static_cast<int32_t>(id));
      }
      items.push_back(std::move(item));
    }
    templates_.push_back(std::move(items));
  } else {
    node.unsupported("post_processor",
                     "Sequence, TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel");
  }
}

std::vector<int32_t> PostProcessor::process(std::vector<int32_t> ids,
                                            bool add_special_tokens) const {
  for (const std::vector<Item>& items : templates_) {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const Item& item : items) {
      if (item.sequence)
        out.insert(out.end(), ids.begin(), ids.end());
      else if (add_special_tokens)
        out.insert(out.end(), item.ids.begin(), item.ids.end());
    }
    ids = std::move(out);
  }
  return ids;
}

}  // namespace bindery::tokenizer
