#pragma once
// Running the `bindery` CLI from tests (BINDERY_CLI is its path, set by tests/CMakeLists.txt):
// the exit code, stdout and stderr of one command, and small text helpers for building them.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bindery::testing {

struct CliResult {
  int code = -1;
  std::string out, err;
};

inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

/// "1,2,3", as --tokens takes them.
inline std::string token_list(const std::vector<int32_t>& tokens) {
  std::string s;
  for (const int32_t t : tokens) {
    if (!s.empty()) s += ',';
    s += std::to_string(t);
  }
  return s;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Runs `bindery <args>`; its stderr goes through `scratch_dir`/stderr.txt.
inline CliResult run_cli(const std::string& args, const std::filesystem::path& scratch_dir) {
  const std::filesystem::path err = scratch_dir / "stderr.txt";
  const std::string command = quoted(BINDERY_CLI) + " " + args + " 2>" + quoted(err.string());
  CliResult r;
  FILE* pipe = popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr) << command;
  if (!pipe) return r;
  std::array<char, 65536> buf;
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0;)
    r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_text(err);
  return r;
}

/// Runs and expects success (reporting the command's stderr otherwise); returns stdout.
inline std::string run_cli_ok(const std::string& args, const std::filesystem::path& scratch_dir) {
  const CliResult r = run_cli(args, scratch_dir);
  EXPECT_EQ(r.code, 0) << "bindery " << args << "\n" << r.err;
  return r.out;
}

}  // namespace bindery::testing
