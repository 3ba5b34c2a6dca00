// The Tokenizer API on a tiny hand-made tokenizer.json, malformed files (each a named error),
// the pieces that differ between PCRE2 and the Oniguruma regexes tokenizers runs, and the
// Unicode normalization forms.

#include "bindery/tokenizer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "bindery/error.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/regex.h"

namespace bindery {
namespace {

using nlohmann::json;

// A byte-level BPE with "a", "b", "ab", "Ġ", "Ġab" and a BOS template.
json tiny() {
  return json::parse(R"({
    "version": "1.0",
    "added_tokens": [{"id": 5, "content": "<s>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                      "use_regex": true},
    "post_processor": {"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}}],
      "pair": [],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null, "fuse_unk": false,
              "byte_fallback": false, "ignore_merges": false,
              "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4, "<s>": 5},
              "merges": ["a b", ["Ġ", "ab"]]}
  })");
}

Tokenizer load(const json& j) { return Tokenizer::from_json(j.dump(), "tiny.json"); }

// Loading `j` throws `code` with a message holding every one of `parts`.
void expect_refused(const json& j, ErrorCode code, std::vector<std::string> parts) {
  try {
    load(j);
    ADD_FAILURE() << "loaded without an error: " << j.dump();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << p << "' is not in: " << e.what();
  }
}

TEST(Tokenizer, EncodesAndDecodesTinyByteLevelBpe) {
  const Tokenizer tok = load(tiny());
  EXPECT_EQ(tok.encode("ab ab", false), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(tok.encode("ab ab", true), (std::vector<int32_t>{5, 2, 4}));
  EXPECT_EQ(tok.encode("<s>ab", false), (std::vector<int32_t>{5, 2}));
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{5}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{5, 2, 4}, false), "<s>ab ab");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{5, 2, 4}, true), "ab ab");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{2, 99, -1, 4}, false), "ab ab");  // unknown: skipped
  EXPECT_EQ(tok.bos_token_id(), 5);
  EXPECT_FALSE(tok.eos_token_id().has_value());
  EXPECT_EQ(tok.vocab_size(), 6);
  EXPECT_EQ(tok.token_to_id("Ġab"), 4);
  EXPECT_EQ(tok.id_to_token(4), "Ġab");
  EXPECT_FALSE(tok.token_to_id("zz").has_value());
  EXPECT_TRUE(tok.is_special(5));
  EXPECT_FALSE(tok.is_special(2));
}

TEST(Tokenizer, EncodeRejectsBrokenUtf8) {
  const Tokenizer tok = load(tiny());
  try {
    tok.encode("ab\xC3(", false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kINVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("byte 2"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, StreamHoldsBackIncompleteCharacters) {
  json j = tiny();
  // Byte-level pieces of "€" (E2 82 AC) as three tokens.
  j["model"]["vocab"]["â"] = 6;
  j["model"]["vocab"]["Ĥ"] = 7;
  j["model"]["vocab"]["¬"] = 8;
  const Tokenizer tok = load(j);
  ASSERT_EQ(tok.encode("€", false), (std::vector<int32_t>{6, 7, 8}));
  Tokenizer::Decoder stream(tok, false);
  EXPECT_EQ(stream.feed(0), "a");
  EXPECT_EQ(stream.feed(6), "");
  EXPECT_EQ(stream.feed(7), "");
  EXPECT_EQ(stream.feed(8), "€");
  EXPECT_EQ(stream.feed(6), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");  // a lone lead byte at the end: U+FFFD
  EXPECT_EQ(tok.decode(std::vector<int32_t>{0, 6, 7, 8, 6}, false), "a€\xEF\xBF\xBD");
}

TEST(Tokenizer, FromFileNamesAMissingTokenizer) {
  try {
    Tokenizer::from_file(std::string(BINDERY_SOURCE_DIR) + "/tests/fixtures/llama/llama_gqa");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("has no tokenizer.json"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, ReadsEosFromTokenizerConfig) {
  const Tokenizer tok =
      Tokenizer::from_file(std::string(BINDERY_SOURCE_DIR) + "/models/bible-llama");
  EXPECT_EQ(tok.bos_token_id(), 0);  // <|begin_of_text|>, from the template
  EXPECT_EQ(tok.eos_token_id(), 1);  // <|end_of_text|>, from tokenizer_config.json
}

TEST(TokenizerRefuses, NotJson) {
  try {
    Tokenizer::from_json("{\"model\": ", "broken.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kCORRUPT_FILE);
    EXPECT_NE(std::string(e.what()).find("broken.json is not valid JSON"), std::string::npos);
  }
}

TEST(TokenizerRefuses, MissingModel) {
  json j = tiny();
  j.erase("model");
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"tiny.json", "'model' is missing"});
}

TEST(TokenizerRefuses, UnknownModelType) {
  json j = tiny();
  j["model"]["type"] = "WordPiece";
  expect_refused(j, ErrorCode::kUNSUPPORTED, {"tiny.json: model", "model type 'WordPiece'"});
}

TEST(TokenizerRefuses, MissingVocab) {
  json j = tiny();
  j["model"].erase("vocab");
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"'model.vocab' is missing"});
}

TEST(TokenizerRefuses, MergeOfAnUnknownToken) {
  json j = tiny();
  j["model"]["merges"][1] = json::array({"Ġ", "zz"});
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"model.merges[1]", "'zz'", "not in model.vocab"});
}

TEST(TokenizerRefuses, MergeWhoseResultIsNotInTheVocab) {
  json j = tiny();
  j["model"]["merges"].push_back("b a");
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"model.merges[2]", "merged token 'ba'"});
}

TEST(TokenizerRefuses, MergeWithThreeParts) {
  json j = tiny();
  j["model"]["merges"][0] = "a b c";
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"model.merges[0]", "two tokens"});
}

TEST(TokenizerRefuses, UnknownUnkToken) {
  json j = tiny();
  j["model"]["unk_token"] = "<unk>";
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"model.unk_token", "'<unk>'"});
}

TEST(TokenizerRefuses, UnsupportedNormalizer) {
  json j = tiny();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_refused(j, ErrorCode::kUNSUPPORTED,
                 {"tiny.json: normalizer", "normalizer type 'Lowercase'", "NFC, NFD, NFKC, NFKD"});
}

TEST(TokenizerRefuses, UnsupportedPreTokenizerInASequence) {
  json j = tiny();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {j["pre_tokenizer"], {{"type", "Whitespace"}}}}};
  expect_refused(j, ErrorCode::kUNSUPPORTED,
                 {"pre_tokenizer.pretokenizers[1]", "pre_tokenizer type 'Whitespace'"});
}

TEST(TokenizerRefuses, UnsupportedDecoder) {
  json j = tiny();
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  expect_refused(j, ErrorCode::kUNSUPPORTED, {"decoder", "decoder type 'WordPiece'"});
}

TEST(TokenizerRefuses, RegexThatDoesNotCompile) {
  json j = tiny();
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"Regex", "(\\p{L}"}}},
                        {"behavior", "Isolated"},
                        {"invert", false}};
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"pre_tokenizer.pattern", "does not compile"});
}

TEST(TokenizerRefuses, TemplateNamingAnUnknownSpecialToken) {
  json j = tiny();
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<bos>";
  expect_refused(j, ErrorCode::kCORRUPT_FILE,
                 {"post_processor.single[0]", "'<bos>'", "post_processor.special_tokens"});
}

TEST(TokenizerRefuses, NewerVersion) {
  json j = tiny();
  j["version"] = "2.0";
  expect_refused(j, ErrorCode::kUNSUPPORTED, {"version '2.0'"});
}

TEST(TokenizerRefuses, MistypedField) {
  json j = tiny();
  j["model"]["byte_fallback"] = "yes";
  expect_refused(j, ErrorCode::kCORRUPT_FILE, {"model.byte_fallback", "true or false"});
}

// tokenizers runs its regexes on Oniguruma: \s there is not PCRE2's (no U+180E), \w has marks.
TEST(TokenizerRegex, ClassesFollowOniguruma) {
  const tokenizer::Regex space("\\s", false, "test"), word("\\w", false, "test");
  EXPECT_FALSE(space.matches_at("\u180e", 0));
  for (const char* s : {" ", "\t", "\r", "\x0b", "\u0085", "\u00a0", "\u2028", "\u3000"})
    EXPECT_TRUE(space.matches_at(s, 0)) << s;
  EXPECT_FALSE(space.matches_at("\x1c", 0));
  EXPECT_TRUE(word.matches_at("\u0301", 0));  // a combining mark
  EXPECT_EQ(tokenizer::oniguruma_to_pcre2(R"([^\s\p{L}]+|\S\Q\s\E)"),
            R"([^\t-\r\x{20}\x{85}\p{Z}\p{L}]+|[^\t-\r\x{20}\x{85}\p{Z}]\Q\s\E)");
}

// What Python's unicodedata.normalize (Unicode 14.0) gives, which tokenizers agrees with here.
TEST(TokenizerNormalizer, UnicodeForms) {
  using tokenizer::UnicodeForm;
  struct Case {
    UnicodeForm form;
    const char* text;
    const char* expected;
  };
  const Case cases[] = {
      {UnicodeForm::kNFD, "\u00e9", "e\u0301"},
      {UnicodeForm::kNFD, "\u00c5", "A\u030a"},
      {UnicodeForm::kNFD, "\u212b", "A\u030a"},  // ANGSTROM SIGN
      {UnicodeForm::kNFD, "\uac01", "\u1100\u1161\u11a8"},
      {UnicodeForm::kNFD, "\ufb01", "\ufb01"},                    // compatibility only
      {UnicodeForm::kNFD, "\u1e9b\u0323", "\u017f\u0323\u0307"},  // UAX #15's example
      {UnicodeForm::kNFD, "a\u0301\u0323", "a\u0323\u0301"},      // canonical order
      {UnicodeForm::kNFD, "\u0958", "\u0915\u093c"},
      {UnicodeForm::kNFD, "\uf900", "\u8c48"},
      {UnicodeForm::kNFC, "e\u0301", "\u00e9"},
      {UnicodeForm::kNFC, "A\u030a", "\u00c5"},
      {UnicodeForm::kNFC, "\u212b", "\u00c5"},
      {UnicodeForm::kNFC, "\u1100\u1161\u11a8", "\uac01"},  // Hangul jamo
      {UnicodeForm::kNFC, "\uac00\u11a8", "\uac01"},
      {UnicodeForm::kNFC, "\u1113\u1161", "\u1113\u1161"},  // an old jamo does not compose
      {UnicodeForm::kNFC, "\ufb01", "\ufb01"},
      {UnicodeForm::kNFC, "\u1e9b\u0323", "\u1e9b\u0323"},
      {UnicodeForm::kNFC, "a\u0323\u0301", "\u1ea1\u0301"},
      {UnicodeForm::kNFC, "q\u0307\u0323", "q\u0323\u0307"},
      {UnicodeForm::kNFC, "\u0958", "\u0915\u093c"},  // a composition exclusion
      {UnicodeForm::kNFC, "\u0344", "\u0308\u0301"},
      {UnicodeForm::kNFC, "\u30cf\u309a", "\u30d1"},
      {UnicodeForm::kNFC, "Cafe\u0301 \u1100\u1161!", "Caf\u00e9 \uac00!"},
      {UnicodeForm::kNFKC, "\ufb01", "fi"},
      {UnicodeForm::kNFKC, "\ufb01nancial", "financial"},
      {UnicodeForm::kNFKC, "x\u00b2", "x2"},
      {UnicodeForm::kNFKC, "\u2460", "1"},
      {UnicodeForm::kNFKC, "\uff26\uff55\uff4c\uff4c", "Full"},
      {UnicodeForm::kNFKC, "\u3392", "MHz"},
      {UnicodeForm::kNFKC, "\u1e9b\u0323", "\u1e69"},
      {UnicodeForm::kNFKC, "\u00a0", " "},
      {UnicodeForm::kNFKC, "\uff76\uff9e", "\u30ac"},
      {UnicodeForm::kNFKC, "\U0001d400", "A"},
      {UnicodeForm::kNFKD, "\ufb01", "fi"},
      {UnicodeForm::kNFKD, "\u00e9", "e\u0301"},
      {UnicodeForm::kNFKD, "\u1e9b\u0323", "s\u0323\u0307"},
      {UnicodeForm::kNFKD, "\u00bd", "1\u20442"},
      {UnicodeForm::kNFKD, "\u2122", "TM"},
      {UnicodeForm::kNFKD, "\u01c4", "DZ\u030c"},
      {UnicodeForm::kNFKD, "\uac00", "\u1100\u1161"},
      {UnicodeForm::kNFC, "", ""},
  };
  for (const Case& c : cases)
    EXPECT_EQ(tokenizer::unicode_normalize(c.text, c.form), c.expected)
        << c.text << " in form " << static_cast<int>(c.form);
  // U+0000 does not end the text.
  EXPECT_EQ(tokenizer::unicode_normalize(std::string("a\0e\u0301", 5), UnicodeForm::kNFC),
            std::string("a\0\u00e9", 4));
}

// tokenizers' normalization tables are Unicode 9.0's: later code points neither decompose nor
// compose nor reorder (Python's unicodedata, Unicode 14.0, gives what the comments say).
TEST(TokenizerNormalizer, CodePointsNewerThanUnicode9AreLeftAlone) {
  using tokenizer::unicode_normalize;
  using tokenizer::UnicodeForm;
  EXPECT_EQ(unicode_normalize("\u32ff", UnicodeForm::kNFKC), "\u32ff");  // 14.0: \u4ee4\u548c
  EXPECT_EQ(unicode_normalize("\ua7f2", UnicodeForm::kNFKD), "\ua7f2");  // 14.0: C
  EXPECT_EQ(unicode_normalize("\U0001f16c", UnicodeForm::kNFKD), "\U0001f16c");  // 14.0: MR
  EXPECT_EQ(unicode_normalize("a\u1df6\u0334", UnicodeForm::kNFD),
            "a\u1df6\u0334");  // 14.0: a\u0334\u1df6
  EXPECT_EQ(unicode_normalize("\U00011935\U00011930", UnicodeForm::kNFC),
            "\U00011935\U00011930");  // 14.0: \U00011938
  EXPECT_EQ(unicode_normalize("\U00011938", UnicodeForm::kNFD), "\U00011938");
  // Around them everything is normalized, and nothing composes across them.
  EXPECT_EQ(unicode_normalize("e\u0301\u32ff\u0301\ufb01", UnicodeForm::kNFKC),
            "\u00e9\u32ff\u0301fi");
  // The list stops at utf8proc's Unicode 15.0: a newer utf8proc needs the newer code points.
  EXPECT_EQ(tokenizer::utf8proc_unicode_data_version(), "15.0.0")
      << "kNewerThanUnicode9 in src/tokenizer/normalizer.cpp lists the code points up to "
         "Unicode 15.0; add those of the newer version";
}

// The forms as tokenizer.json normalizers, alone and in a Sequence.
TEST(TokenizerNormalizer, FromTokenizerJson) {
  json j = tiny();
  j["normalizer"] = {{"type", "NFKC"}};
  const Tokenizer nfkc = load(j);
  EXPECT_EQ(nfkc.encode("\uff41\uff42 \uff41\uff42", false), (std::vector<int32_t>{2, 4}));
  EXPECT_EQ(nfkc.encode("<s>\uff41b", false), (std::vector<int32_t>{5, 2}));
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "NFD"}}, {{"type", "NFKD"}}, {{"type", "NFC"}}}}};
  EXPECT_EQ(load(j).encode("\uff41\uff42", false), (std::vector<int32_t>{2}));
  j["normalizer"] = {{"type", "NFC"}};
  EXPECT_EQ(load(j).encode("\uff41\uff42", false), load(tiny()).encode("\uff41\uff42", false));
}

}  // namespace
}  // namespace bindery
