#include <gtest/gtest.h>

#include <map>
#include <random>

#include "store/address_map.h"

using heapscope::BlockInfo;
using heapscope::LiveTable;

TEST(LiveTable, InsertFindErase) {
    LiveTable table;
    BlockInfo replaced;
    EXPECT_FALSE(table.insert(0x1000, BlockInfo{10, 1, 2}, &replaced));
    ASSERT_NE(table.find(0x1000), nullptr);
    EXPECT_EQ(table.find(0x1000)->size, 10u);
    EXPECT_EQ(table.find(0x1000)->stack, 1u);
    EXPECT_EQ(table.find(0x1000)->total_depth, 2u);
    EXPECT_EQ(table.find(0x2000), nullptr);
    BlockInfo removed;
    EXPECT_TRUE(table.erase(0x1000, &removed));
    EXPECT_EQ(removed.size, 10u);
    EXPECT_FALSE(table.erase(0x1000, &removed));
    EXPECT_EQ(table.size(), 0u);
}

TEST(LiveTable, ReplaceReportsPreviousBlock) {
    LiveTable table;
    BlockInfo replaced;
    table.insert(0x40, BlockInfo{5, 1, 1}, &replaced);
    EXPECT_TRUE(table.insert(0x40, BlockInfo{7, 2, 1}, &replaced));
    EXPECT_EQ(replaced.size, 5u);
    EXPECT_EQ(table.find(0x40)->size, 7u);
    EXPECT_EQ(table.size(), 1u);
}

TEST(LiveTable, AddressZeroIsAnOrdinaryKey) {
    LiveTable table;
    BlockInfo out;
    EXPECT_FALSE(table.insert(0, BlockInfo{3, 0, 0}, &out));
    EXPECT_EQ(table.size(), 1u);
    ASSERT_NE(table.find(0), nullptr);
    EXPECT_TRUE(table.erase(0, &out));
    EXPECT_EQ(out.size, 3u);
    EXPECT_EQ(table.find(0), nullptr);
}

// Random inserts and erases against std::map: exercises growth and the
// backward-shift deletion across wrap-around of the probe runs.
TEST(LiveTable, MatchesReferenceMapUnderChurn) {
    LiveTable table;
    std::map<uintptr_t, uint64_t> reference;
    std::mt19937_64 rng(12345);
    for (int step = 0; step < 200000; ++step) {
        // Few distinct keys, 16-byte aligned like real blocks, so collisions abound.
        uintptr_t address = (rng() % 5000) * 16;
        if (rng() % 3 != 0) {
            uint64_t size = rng() % 1000;
            BlockInfo replaced;
            bool existed = table.insert(address, BlockInfo{size, 0, 0}, &replaced);
            EXPECT_EQ(existed, reference.count(address) == 1);
            reference[address] = size;
        } else {
            BlockInfo removed;
            bool existed = table.erase(address, &removed);
            ASSERT_EQ(existed, reference.count(address) == 1);
            if (existed) {
                EXPECT_EQ(removed.size, reference[address]);
                reference.erase(address);
            }
        }
    }
    EXPECT_EQ(table.size(), reference.size());
    size_t visited = 0;
    table.for_each([&](uintptr_t address, const BlockInfo& info) {
        ++visited;
        auto it = reference.find(address);
        ASSERT_NE(it, reference.end());
        EXPECT_EQ(info.size, it->second);
    });
    EXPECT_EQ(visited, reference.size());
    for (auto& [address, size] : reference) {
        ASSERT_NE(table.find(address), nullptr);
        EXPECT_EQ(table.find(address)->size, size);
    }
}

TEST(LiveTable, ClearReleasesMemory) {
    LiveTable table;
    BlockInfo out;
    for (uintptr_t a = 1; a <= 10000; ++a) table.insert(a * 16, BlockInfo{1, 0, 0}, &out);
    EXPECT_GT(table.memory_bytes(), 10000u * 16);
    table.clear();
    EXPECT_EQ(table.size(), 0u);
    EXPECT_EQ(table.memory_bytes(), 0u);
    EXPECT_EQ(table.find(16), nullptr);
}
