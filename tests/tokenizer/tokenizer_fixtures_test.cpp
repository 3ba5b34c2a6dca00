// Every tokenizer of tests/fixtures/tokenizers (tools/make_tokenizer_fixtures.py) on every
// test line: ids, ids with special tokens, decode, and streaming decode, against what Hugging
// Face `tokenizers` gave.

#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bindery/tokenizer.h"

namespace bindery {
namespace {

using nlohmann::json;

const std::string kDir = std::string(BINDERY_SOURCE_DIR) + "/tests/fixtures/tokenizers/";

// The lines of a gzip-compressed text file.
std::vector<std::string> gz_lines(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string data;
  char buffer[1 << 16];
  int n = 0;
  while ((n = gzread(f, buffer, sizeof(buffer))) > 0) data.append(buffer, static_cast<size_t>(n));
  gzclose(f);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t end; (end = data.find('\n', start)) != std::string::npos; start = end + 1)
    lines.push_back(data.substr(start, end - start));
  return lines;
}

std::vector<std::string> plain_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

const std::vector<std::string>& texts() {
  static const std::vector<std::string> t = [] {
    std::vector<std::string> out;
    for (const std::string& line : gz_lines(kDir + "lines.jsonl.gz"))
      out.push_back(json::parse(line).get<std::string>());
    return out;
  }();
  return t;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    const size_t n = b < 0x80                 ? 1
                     : b >= 0xC2 && b <= 0xDF ? 2
                     : b >= 0xE0 && b <= 0xEF ? 3
                     : b >= 0xF0 && b <= 0xF4 ? 4
                                              : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

// The streamed text of `ids`; every chunk must be valid UTF-8.
std::string streamed(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                     bool& chunks_valid) {
  Tokenizer::Decoder decoder(tok, skip);
  std::string out;
  for (int32_t id : ids) {
    const std::string chunk = decoder.feed(id);
    chunks_valid = chunks_valid && valid_utf8(chunk);
    out += chunk;
  }
  const std::string rest = decoder.flush();
  chunks_valid = chunks_valid && valid_utf8(rest);
  return out + rest;
}

std::string tokenizer_path(const std::string& name) {
  return name == "bible-llama" ? std::string(BINDERY_SOURCE_DIR) + "/models/bible-llama"
                               : kDir + name;
}

std::string ids_text(const std::vector<int32_t>& ids) { return json(ids).dump(); }

class TokenizerMatchesTokenizers : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerMatchesTokenizers, OnEveryFixtureLine) {
  const std::string name = GetParam();
  const Tokenizer tok = Tokenizer::from_file(tokenizer_path(name));
  const std::vector<std::string> expected = gz_lines(kDir + name + ".expected.jsonl.gz");
  const std::vector<std::string>& lines = texts();
  ASSERT_GE(lines.size(), 10000u);
  ASSERT_EQ(expected.size(), lines.size() + 1) << name;
  const json header = json::parse(expected[0]);
  const auto prefix = header.at("prefix").get<std::vector<int32_t>>();
  const auto suffix = header.at("suffix").get<std::vector<int32_t>>();

  int failures = 0;
  const auto fail = [&](size_t line, const std::string& what) {
    if (++failures <= 8) ADD_FAILURE() << name << " line " << line << ": " << what;
  };
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& text = lines[i];
    const json e = json::parse(expected[i + 1]);
    const auto ids = e.at("ids").get<std::vector<int32_t>>();
    std::vector<int32_t> special = prefix;
    special.insert(special.end(), ids.begin(), ids.end());
    special.insert(special.end(), suffix.begin(), suffix.end());
    if (e.contains("special")) special = e.at("special").get<std::vector<int32_t>>();
    const std::string decoded = e.value("decoded", text);
    const std::string decoded_skip = e.value("decoded_skip", text);

    const std::vector<int32_t> got = tok.encode(text, false);
    if (got != ids)
      fail(i, json(text).dump() + "\n  encode:     " + ids_text(got) +
                  "\n  tokenizers: " + ids_text(ids));
    const std::vector<int32_t> got_special = tok.encode(text, true);
    if (got_special != special)
      fail(i, "add_special_tokens: " + ids_text(got_special) + " != " + ids_text(special));
    if (const std::string d = tok.decode(ids, false); d != decoded)
      fail(i, "decode: " + json(d).dump() + " != " + json(decoded).dump());
    if (const std::string d = tok.decode(special, true); d != decoded_skip)
      fail(i, "decode skipping specials: " + json(d).dump() + " != " + json(decoded_skip).dump());
    bool chunks_valid = true;
    if (const std::string s = streamed(tok, ids, false, chunks_valid); s != decoded)
      fail(i, "streamed: " + json(s).dump() + " != " + json(decoded).dump());
    if (const std::string s = streamed(tok, special, true, chunks_valid); s != decoded_skip)
      fail(i, "streamed skipping specials: " + json(s).dump() + " != " + json(decoded_skip).dump());
    if (!chunks_valid) fail(i, "the stream gave a chunk that is not valid UTF-8");
  }
  EXPECT_EQ(failures, 0) << name << ": " << failures << " mismatches in " << lines.size()
                         << " lines";
}

// Random id lists: byte tokens that make broken UTF-8, specials, anything.
TEST_P(TokenizerMatchesTokenizers, DecodesRandomIds) {
  const std::string name = GetParam();
  const Tokenizer tok = Tokenizer::from_file(tokenizer_path(name));
  int failures = 0;
  for (const std::string& line : plain_lines(kDir + name + ".random_ids.jsonl")) {
    const json e = json::parse(line);
    const auto ids = e.at("ids").get<std::vector<int32_t>>();
    const std::string decoded = e.at("decoded"), decoded_skip = e.at("decoded_skip");
    bool chunks_valid = true;
    const std::string got = tok.decode(ids, false), got_skip = tok.decode(ids, true);
    const std::string s = streamed(tok, ids, false, chunks_valid);
    const std::string s_skip = streamed(tok, ids, true, chunks_valid);
    if (got != decoded || got_skip != decoded_skip || s != decoded || s_skip != decoded_skip ||
        !chunks_valid)
      if (++failures <= 8)
        ADD_FAILURE() << name << " " << ids_text(ids) << "\n  decode " << json(got).dump()
                      << " skip " << json(got_skip).dump() << " streamed " << json(s).dump() << " "
                      << json(s_skip).dump() << "\n  tokenizers " << json(decoded).dump()
                      << " skip " << json(decoded_skip).dump();
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerMatchesTokenizers,
                         ::testing::Values("gpt2", "llama3", "llama2", "metaspace", "qwen2",
                                           "bible-llama"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace bindery
