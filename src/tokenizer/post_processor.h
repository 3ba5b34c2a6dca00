#pragma once
// tokenizer.json "post_processor", for one sequence: TemplateProcessing ("<|begin_of_text|>
// $A"), RobertaProcessing and BertProcessing (cls $A sep), ByteLevel (offsets only: nothing to
// do to ids) and Sequence of them.

#include <cstdint>
#include <vector>

#include "tokenizer/json_node.h"

namespace bindery::tokenizer {

class PostProcessor {
 public:
  /// From the "post_processor" field (null: ids pass through).
  explicit PostProcessor(const Node& node);
  /// The ids of a single sequence as the processors lay them out; without
  /// add_special_tokens only the sequence pieces of a template are kept.
  std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const;

 private:
  // A template: special-token ids and the sequence ($A) in order.
  struct Item {
    bool sequence;
    std::vector<int32_t> ids;
  };
  void add(const Node& node);
  std::vector<std::vector<Item>> templates_;  // applied in order
};

}  // namespace bindery::tokenizer
