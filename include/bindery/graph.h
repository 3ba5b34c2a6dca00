#pragma once
// Graph: the index-based form of a network that the builder transforms, the plan stores and
// backends execute. Nodes are topologically ordered. Weight tensors have no producer; they
// name the engine slot that holds their data.

#include <string>
#include <vector>

#include "bindery/ops.h"

namespace bindery {

enum class TensorKind : uint8_t { kACTIVATION, kINPUT, kWEIGHT };

struct GraphTensor {
  std::string name;
  TensorDesc desc;
  TensorKind kind = TensorKind::kACTIVATION;
  int slot = -1;  // kWEIGHT: index into the plan's slots (builder: into its weights)
  bool is_output = false;
  bool is_debug = false;  // readable from an ExecutionContext after a run
};

struct GraphNode {
  std::string name;
  LayerType type = LayerType::kCONSTANT;
  LayerParams params;
  std::vector<int> inputs;   // tensor indices; -1 for an absent optional input
  std::vector<int> outputs;  // tensor indices
};

struct Graph {
  std::vector<GraphTensor> tensors;
  std::vector<GraphNode> nodes;
  std::vector<int> inputs;   // tensor indices of network inputs, in declaration order
  std::vector<int> outputs;  // tensor indices of network outputs, in marking order

  /// Index of the tensor named `name`, or -1.
  int find_tensor(const std::string& name) const;
};

}  // namespace bindery
