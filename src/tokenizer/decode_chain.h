#pragma once
// tokenizer.json "decoder": Sequence, ByteLevel (the byte map undone, then Rust's lossy UTF-8),
// Replace, ByteFallback (<0xNN> runs to text; a run that is not valid UTF-8 gives one U+FFFD
// per byte), Fuse, Strip and Metaspace, each as tokenizers' decode_chain has it. No decoder
// joins the tokens with spaces. Others (WordPiece, CTC, BPEDecoder) are refused with
// kUNSUPPORTED.

#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "tokenizer/json_node.h"
#include "tokenizer/regex.h"

namespace bindery::tokenizer {

class DecodeChain {
 public:
  /// From the "decoder" field (null: none).
  explicit DecodeChain(const Node& node);

  /// The text of `tokens`. When `at_start` is false the tokens continue a stream already
  /// decoded (Tokenizer::Decoder): the steps that treat the start of the text apart (Strip's
  /// leading characters, Metaspace's first token, the joining space of no decoder) then
  /// treat it as a continuation.
  std::string decode(std::vector<std::string> tokens, bool at_start) const;
  /// Whether a token is one ByteFallback turns into a byte (and so whether a stream must
  /// wait for the run of such tokens to end before its text is final).
  bool is_pending_byte(const std::string& token) const;

 private:
  struct ByteLevel {};
  struct Replace {
    std::shared_ptr<const Regex> pattern;
    std::string content;
  };
  struct ByteFallback {};
  struct Fuse {};
  struct Strip {
    char32_t content;
    size_t start, stop;
  };
  struct Metaspace {
    char32_t replacement;
    bool prepend;  // prepend_scheme is not "never": the first token loses its leading ▁
  };
  using Step = std::variant<ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace>;
  void add(const Node& node);
  std::vector<Step> steps_;
  bool none_ = true;
  bool byte_fallback_ = false;
};

}  // namespace bindery::tokenizer
