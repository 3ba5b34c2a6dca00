#pragma once
// Reading fields of a model's JSON config (config.json, params.json): every error names the
// file and the field, says what was expected and shows what was found.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace bindery::models {

/// `text` parsed as a JSON object; kCORRUPT_FILE naming `source` when it is not valid JSON or
/// not an object.
nlohmann::json parse_json_object(const std::string& text, const std::string& source);

class JsonFields {
 public:
  /// `j` is borrowed; `source` names the file (and object) in errors.
  JsonFields(const nlohmann::json& j, std::string source);

  /// Present and not null.
  bool has(const char* key) const;
  /// kNOT_FOUND "<source>: required field 'key' is missing" unless present.
  void require(const char* key) const;
  /// An integer of at least `at_least` (kINVALID_ARGUMENT otherwise), `fallback` when absent.
  int64_t integer(const char* key, int64_t fallback = 0, int64_t at_least = 0) const;
  int64_t required_int(const char* key, int64_t at_least = 0) const;
  /// A number, `fallback` when absent.
  double number(const char* key, double fallback) const;
  /// A number (greater than 0 when `positive`), nullopt when absent.
  std::optional<double> optional_number(const char* key, bool positive = false) const;
  bool boolean(const char* key, bool fallback = false) const;
  std::string string(const char* key, const std::string& fallback) const;
  /// The field, which must be an object.
  const nlohmann::json& object(const char* key) const;
  const std::string& source() const { return source_; }

 private:
  const nlohmann::json& j_;
  std::string source_;
};

}  // namespace bindery::models
