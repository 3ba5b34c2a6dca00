// The in-process Communicator: collectives of ranks running in threads.
#include "bindery/communicator.h"

#include <gtest/gtest.h>

#include <thread>

#include "bindery/error.h"

namespace bindery {
namespace {

// Runs fn(rank) on every rank of `group`, one thread each; returns each rank's error code
// (kINTERNAL for none).
template <class Fn>
std::vector<ErrorCode> on_every_rank(std::vector<std::unique_ptr<Communicator>>& group, Fn fn) {
  std::vector<ErrorCode> codes(group.size(), ErrorCode::kINTERNAL);
  std::vector<std::thread> threads;
  for (size_t r = 0; r < group.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        fn(*group[r]);
      } catch (const Error& e) {
        codes[r] = e.code();
      }
    });
  for (auto& t : threads) t.join();
  return codes;
}

TEST(InProcessGroup, AllReduceSumsInRankOrderAndEveryRankGetsTheSameBits) {
  auto group = make_in_process_group(3);
  std::vector<std::vector<float>> out(3, std::vector<float>(1001));
  on_every_rank(group, [&](Communicator& c) {
    std::vector<float> in(1001);
    for (int i = 0; i < 1001; ++i) in[i] = 0.1f * static_cast<float>(c.rank() + 1) + i;
    for (int round = 0; round < 5; ++round)  // reuse of the group's scratch
      c.all_reduce_sum(in.data(), out[c.rank()].data(), 1001);
  });
  for (int i = 0; i < 1001; ++i) {
    const float expected = ((0.1f + i) + (0.2f + i)) + (0.3f + i);
    EXPECT_EQ(out[0][i], expected) << i;
    EXPECT_EQ(out[1][i], out[0][i]);
    EXPECT_EQ(out[2][i], out[0][i]);
  }
}

TEST(InProcessGroup, AllReduceMayWriteOverItsInput) {
  auto group = make_in_process_group(4);
  std::vector<std::vector<float>> data(4, std::vector<float>(10));
  on_every_rank(group, [&](Communicator& c) {
    std::fill(data[c.rank()].begin(), data[c.rank()].end(), static_cast<float>(c.rank()));
    c.all_reduce_sum(data[c.rank()].data(), data[c.rank()].data(), 10);
  });
  for (const auto& d : data)
    for (float v : d) EXPECT_EQ(v, 6.f);
}

TEST(InProcessGroup, AllGatherConcatenatesAlongTheAxisInRankOrder) {
  auto group = make_in_process_group(2);
  std::vector<std::vector<float>> out(2, std::vector<float>(12));
  on_every_rank(group, [&](Communicator& c) {
    // [2, 3] per rank: value = 100 * rank + 10 * row + col
    std::vector<float> in(6);
    for (int r = 0; r < 2; ++r)
      for (int k = 0; k < 3; ++k) in[r * 3 + k] = 100.f * c.rank() + 10.f * r + k;
    c.all_gather(in.data(), {2, 3}, 1, out[c.rank()].data());
  });
  const std::vector<float> expected = {0, 1, 2, 100, 101, 102, 10, 11, 12, 110, 111, 112};
  EXPECT_EQ(out[0], expected);
  EXPECT_EQ(out[1], expected);
}

TEST(InProcessGroup, AbortReleasesRanksWaitingInACollective) {
  auto group = make_in_process_group(3);
  const auto codes = on_every_rank(group, [&](Communicator& c) {
    float x = 1, y = 0;
    if (c.rank() == 2) {
      c.abort("rank 2 failed: out of memory");
      return;
    }
    c.all_reduce_sum(&x, &y, 1);  // would wait for rank 2 forever
  });
  EXPECT_EQ(codes[0], ErrorCode::kABORTED);
  EXPECT_EQ(codes[1], ErrorCode::kABORTED);
  float x = 1, y;
  try {
    group[0]->all_reduce_sum(&x, &y, 1);
    ADD_FAILURE() << "an aborted group ran a collective";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 2 failed: out of memory"), std::string::npos)
        << e.what();
  }
}

TEST(InProcessGroup, RanksThatDisagreeOnTheSizeAllFail) {
  auto group = make_in_process_group(2);
  const auto codes = on_every_rank(group, [&](Communicator& c) {
    std::vector<float> in(8, 1.f), out(8);
    c.all_reduce_sum(in.data(), out.data(), c.rank() == 0 ? 8 : 4);
  });
  EXPECT_EQ(codes[0], ErrorCode::kABORTED);
  EXPECT_EQ(codes[1], ErrorCode::kABORTED);
  EXPECT_THROW(make_in_process_group(0), Error);
}

}  // namespace
}  // namespace bindery
