#pragma once
// bindery::Tokenizer: a Hugging Face tokenizer.json, encoding and decoding exactly as the
// `tokenizers` library does for the BPE families bindery runs:
//   - byte-level BPE (GPT-2, Llama 3, Qwen2 with its NFC normalizer): pre-tokenizer ByteLevel
//     and/or Sequence[Split(regex), ByteLevel], decoder ByteLevel;
//   - sentencepiece-style BPE (Llama 2, Mistral): byte_fallback <0xNN> pieces, normalizer
//     Prepend("▁") + Replace(" ", "▁") or a Metaspace pre-tokenizer, decoders Replace,
//     ByteFallback, Fuse, Strip, Metaspace.
// Added tokens (special or not; lstrip, rstrip, single_word, normalized) are matched before
// pre-tokenization, longest first. add_special_tokens applies the post-processor
// (TemplateProcessing, RobertaProcessing, BertProcessing, Sequence) to a single sequence.
// Unicode normalizers NFC, NFD, NFKC and NFKD (utf8proc, held to tokenizers' Unicode 9.0 data).
// Truncation and padding settings in the file are ignored: encode never cuts nor pads.
//
// Anything else in a tokenizer.json (another model type, a Lowercase normalizer, a Whitespace
// pre-tokenizer, ...) is refused when loading with Error(kUNSUPPORTED) naming the field and the
// type; structurally bad content (a merge naming a token that is not in the vocab, a missing
// vocab) with Error(kCORRUPT_FILE) naming the field.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bindery {

class Tokenizer {
 public:
  /// Loads `path`: a tokenizer.json, or a directory holding one. A tokenizer_config.json next
  /// to it, when there, names the BOS and EOS tokens ("bos_token", "eos_token").
  /// Throws kNOT_FOUND (no such file), kIO, and what from_json throws.
  static Tokenizer from_file(const std::string& path);
  /// Parses the text of a tokenizer.json; `source` names it in error messages (a path, "the
  /// plan's tokenizer.json"). `config_json`, when not empty, is the text of a
  /// tokenizer_config.json. Throws kCORRUPT_FILE (not JSON, a missing or malformed field) and
  /// kUNSUPPORTED (a component this implementation does not have), naming the field.
  static Tokenizer from_json(std::string_view json, const std::string& source,
                             std::string_view config_json = {});

  /// The ids of `text` (UTF-8). With add_special_tokens the post-processor's special tokens
  /// are added (Llama: BOS in front). Throws kINVALID_ARGUMENT naming the byte offset when
  /// `text` is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  /// The text of `ids` through the decoder. Ids that name no token are skipped, as
  /// `tokenizers` does; with skip_special_tokens so are special added tokens. Broken UTF-8
  /// (byte tokens that do not form characters) comes out as U+FFFD, exactly as `tokenizers`
  /// replaces it.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  /// The id of a token's string (added tokens first, then the model's vocab), if there is one.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  /// The string of a token as the vocab spells it ("Ġthe", "▁the", "<0x0A>"), if there is one.
  std::optional<std::string> id_to_token(int32_t id) const;
  /// One past the largest token id (model vocab and added tokens): the rows an embedding
  /// needs.
  int32_t vocab_size() const;
  /// BOS: the special token the post-processor puts first (Llama's <|begin_of_text|>, <s>),
  /// else tokenizer_config.json's bos_token. EOS likewise (last, or eos_token).
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;
  /// Whether `id` is a special added token (skipped by decode with skip_special_tokens).
  bool is_special(int32_t id) const;

  /// Streaming decode, for printing tokens as a model produces them: feed ids one at a time;
  /// each call returns the text that is now final, never a broken UTF-8 sequence (bytes of a
  /// character still incomplete are held back, as is a run of <0xNN> byte tokens until it
  /// ends). The concatenation of everything returned, flush() included, equals
  /// decode(all ids fed). Borrows the tokenizer, which must outlive it. Not thread-safe (one
  /// per stream); the tokenizer itself is.
  class Decoder {
   public:
    Decoder(const Tokenizer& tokenizer, bool skip_special_tokens);
    /// Adds one id; returns the text it completes (often empty).
    std::string feed(int32_t id);
    /// The rest: whatever was held back, decoded as the end of the stream. The decoder
    /// starts a new stream after it.
    std::string flush();

   private:
    const Tokenizer& tokenizer_;
    bool skip_special_tokens_;
    std::vector<int32_t> window_;  // ids since the last point where the text was final
    bool at_start_ = true;         // nothing emitted yet (decoders treat the first token apart)
  };

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  // Immutable once loaded: copies share it, and every const method is thread-safe.
  std::shared_ptr<const Impl> impl_;
};

}  // namespace bindery
