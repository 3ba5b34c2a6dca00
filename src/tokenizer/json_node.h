#pragma once
// A field of tokenizer.json with its path, so that every error names the file and the field
// ("tokenizer.json: model.merges[12]: ..."). Missing or mistyped fields are kCORRUPT_FILE;
// components this implementation does not have are kUNSUPPORTED.

#include <nlohmann/json.hpp>
#include <string>

#include "bindery/error.h"

namespace bindery::tokenizer {

class Node {
 public:
  Node(const nlohmann::json& j, const std::string& source, std::string path)
      : j_(&j), source_(&source), path_(std::move(path)) {}

  const nlohmann::json& json() const { return *j_; }
  const std::string& path() const { return path_; }
  /// "<source>: <path>" for messages.
  std::string where() const { return *source_ + ": " + (path_.empty() ? "(top level)" : path_); }
  bool is_null() const { return j_->is_null(); }

  /// Present and not null.
  bool has(const char* key) const {
    return j_->is_object() && j_->contains(key) && !j_->at(key).is_null();
  }
  Node at(const char* key) const {
    check(j_->is_object(), ErrorCode::kCORRUPT_FILE,
          where() + " must be an object, found " + brief(*j_));
    check(j_->contains(key), ErrorCode::kCORRUPT_FILE,
          *source_ + ": required field '" + child(key) + "' is missing");
    return Node(j_->at(key), *source_, child(key));
  }
  Node at(size_t i) const {
    return Node(j_->at(i), *source_, path_ + "[" + std::to_string(i) + "]");
  }
  size_t size() const { return j_->size(); }

  const Node& expect_array() const {
    check(j_->is_array(), ErrorCode::kCORRUPT_FILE,
          where() + " must be an array, found " + brief(*j_));
    return *this;
  }
  const Node& expect_object() const {
    check(j_->is_object(), ErrorCode::kCORRUPT_FILE,
          where() + " must be an object, found " + brief(*j_));
    return *this;
  }
  std::string as_string() const {
    check(j_->is_string(), ErrorCode::kCORRUPT_FILE,
          where() + " must be a string, found " + brief(*j_));
    return j_->get<std::string>();
  }
  int64_t as_integer() const {
    check(j_->is_number_integer(), ErrorCode::kCORRUPT_FILE,
          where() + " must be an integer, found " + brief(*j_));
    return j_->get<int64_t>();
  }
  bool as_boolean() const {
    check(j_->is_boolean(), ErrorCode::kCORRUPT_FILE,
          where() + " must be true or false, found " + brief(*j_));
    return j_->get<bool>();
  }

  std::string string(const char* key) const { return at(key).as_string(); }
  std::string string_or(const char* key, const std::string& fallback) const {
    return has(key) ? at(key).as_string() : fallback;
  }
  bool boolean_or(const char* key, bool fallback) const {
    return has(key) ? at(key).as_boolean() : fallback;
  }
  int64_t integer_or(const char* key, int64_t fallback) const {
    return has(key) ? at(key).as_integer() : fallback;
  }
  /// The "type" of a component (required).
  std::string type() const { return string("type"); }

  [[noreturn]] void unsupported(const std::string& kind, const std::string& supported) const {
    throw Error(ErrorCode::kUNSUPPORTED, where() + ": " + kind + " type '" + type() +
                                             "' is not supported (supported: " + supported + ")");
  }

  /// A short rendering of a JSON value for messages (long ones cut).
  static std::string brief(const nlohmann::json& j) {
    std::string s = j.dump();
    if (s.size() > 60) s = s.substr(0, 57) + "...";
    return s;
  }

 private:
  std::string child(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  const nlohmann::json* j_;
  const std::string* source_;
  std::string path_;
};

}  // namespace bindery::tokenizer
