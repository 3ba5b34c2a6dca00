#include "models/llama/json_fields.h"

#include "bindery/error.h"

namespace bindery::models {

using nlohmann::json;

json parse_json_object(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorCode::kCORRUPT_FILE, source + " is not valid JSON: " + e.what());
  }
  check(j.is_object(), ErrorCode::kCORRUPT_FILE, source + " is not a JSON object");
  return j;
}

JsonFields::JsonFields(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

bool JsonFields::has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

void JsonFields::require(const char* key) const {
  check(has(key), ErrorCode::kNOT_FOUND, source_ + ": required field '" + key + "' is missing");
}

int64_t JsonFields::integer(const char* key, int64_t fallback, int64_t at_least) const {
  if (!has(key)) return fallback;
  const json& v = j_.at(key);
  check(v.is_number_integer() && v.get<int64_t>() >= at_least, ErrorCode::kINVALID_ARGUMENT,
        source_ + ": field '" + key + "' must be " +
            (at_least == 0 ? std::string("a non-negative integer")
                           : "an integer of at least " + std::to_string(at_least)) +
            ", found " + v.dump());
  return v.get<int64_t>();
}

int64_t JsonFields::required_int(const char* key, int64_t at_least) const {
  require(key);
  return integer(key, 0, at_least);
}

double JsonFields::number(const char* key, double fallback) const {
  return optional_number(key).value_or(fallback);
}

std::optional<double> JsonFields::optional_number(const char* key, bool positive) const {
  if (!has(key)) return std::nullopt;
  const json& v = j_.at(key);
  check(v.is_number() && (!positive || v.get<double>() > 0), ErrorCode::kINVALID_ARGUMENT,
        source_ + ": field '" + key + "' must be a " + (positive ? "positive " : "") +
            "number, found " + v.dump());
  return v.get<double>();
}

bool JsonFields::boolean(const char* key, bool fallback) const {
  if (!has(key)) return fallback;
  check(j_.at(key).is_boolean(), ErrorCode::kINVALID_ARGUMENT,
        source_ + ": field '" + key + "' must be true or false, found " + j_.at(key).dump());
  return j_.at(key).get<bool>();
}

std::string JsonFields::string(const char* key, const std::string& fallback) const {
  if (!has(key)) return fallback;
  check(j_.at(key).is_string(), ErrorCode::kINVALID_ARGUMENT,
        source_ + ": field '" + key + "' must be a string, found " + j_.at(key).dump());
  return j_.at(key).get<std::string>();
}

const json& JsonFields::object(const char* key) const {
  check(j_.at(key).is_object(), ErrorCode::kINVALID_ARGUMENT,
        source_ + ": field '" + key + "' must be an object, found " + j_.at(key).dump());
  return j_.at(key);
}

}  // namespace bindery::models
