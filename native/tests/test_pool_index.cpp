#include <gtest/gtest.h>

#include <map>
#include <random>

#include "store/block_table.h"
#include "store/pool_index.h"

using heapscope::BlockInfo;
using heapscope::BlockTable;
using heapscope::PoolIndex;

namespace {
constexpr uintptr_t kPool = uintptr_t{0x7f0000000000};  // 16 KiB aligned
constexpr uintptr_t kHeader = 48;                        // pymalloc's pool header
}  // namespace

TEST(PoolIndex, StoresBlocksOfOnePoolByPosition) {
    PoolIndex index;
    BlockInfo replaced;
    for (uintptr_t i = 0; i < 100; ++i) {
        EXPECT_EQ(index.insert(kPool + kHeader + i * 64, BlockInfo{57, uint32_t(i), 3}, &replaced),
                  PoolIndex::Insert::kStored);
    }
    EXPECT_EQ(index.size(), 100u);
    BlockInfo out;
    ASSERT_TRUE(index.find(kPool + kHeader + 7 * 64, &out));
    EXPECT_EQ(out.size, 57u);
    EXPECT_EQ(out.stack, 7u);
    EXPECT_EQ(out.total_depth, 3u);
    EXPECT_FALSE(index.find(kPool + kHeader + 7 * 64 + 16, &out));  // not a block start of this class
    EXPECT_TRUE(index.erase(kPool + kHeader + 7 * 64, &out));
    EXPECT_FALSE(index.erase(kPool + kHeader + 7 * 64, &out));
    EXPECT_EQ(index.size(), 99u);
}

TEST(PoolIndex, RefusesWhatDoesNotFitItsRegion) {
    PoolIndex index;
    BlockInfo replaced;
    EXPECT_EQ(index.insert(kPool + kHeader, BlockInfo{513, 0, 0}, &replaced), PoolIndex::Insert::kRefused);
    EXPECT_EQ(index.insert(kPool + kHeader, BlockInfo{32, 0, 0}, &replaced), PoolIndex::Insert::kStored);
    // Another class while the region holds a block: refused, the caller keeps it elsewhere.
    EXPECT_EQ(index.insert(kPool + kHeader + 64, BlockInfo{64, 0, 0}, &replaced), PoolIndex::Insert::kRefused);
    // Same class, other phase: refused too.
    EXPECT_EQ(index.insert(kPool + kHeader + 40, BlockInfo{32, 0, 0}, &replaced), PoolIndex::Insert::kRefused);
}

TEST(PoolIndex, EmptyPoolMayBeRecycledForAnotherClass) {
    PoolIndex index;
    BlockInfo out;
    index.insert(kPool + kHeader, BlockInfo{512, 1, 1}, &out);
    EXPECT_TRUE(index.erase(kPool + kHeader, &out));
    // pymalloc reuses the empty pool for 16-byte blocks: 1024 slots now.
    for (uintptr_t i = 0; i < 1000; ++i) {
        ASSERT_EQ(index.insert(kPool + kHeader + i * 16, BlockInfo{10, 2, 1}, &out), PoolIndex::Insert::kStored);
    }
    EXPECT_EQ(index.size(), 1000u);
    ASSERT_TRUE(index.find(kPool + kHeader + 999 * 16, &out));
    EXPECT_EQ(out.size, 10u);
}

TEST(PoolIndex, DepthIsCappedAtTheStdlibsLimit) {
    PoolIndex index;
    BlockInfo out;
    index.insert(kPool + kHeader, BlockInfo{8, 0, 100000}, &out);
    ASSERT_TRUE(index.find(kPool + kHeader, &out));
    EXPECT_EQ(out.total_depth, 65535u);
}

TEST(PoolIndex, ForEachGivesBackTheAddresses) {
    PoolIndex index;
    BlockInfo out;
    std::map<uintptr_t, uint64_t> expected;
    for (uintptr_t pool = 0; pool < 20; ++pool) {
        for (uintptr_t i = 0; i < 30; i += 3) {
            uintptr_t address = kPool + (pool << 14) + kHeader + i * 48;
            index.insert(address, BlockInfo{40 + (i % 8), 0, 0}, &out);
            expected[address] = 40 + (i % 8);
        }
    }
    std::map<uintptr_t, uint64_t> seen;
    index.for_each([&](uintptr_t address, const BlockInfo& info) { seen[address] = info.size; });
    EXPECT_EQ(seen, expected);
}

// Pools of mixed classes, blocks allocated and freed at random, against
// std::map, through the BlockTable that routes refused blocks to the hash table.
TEST(BlockTable, MatchesReferenceMapUnderChurn) {
    BlockTable table;
    std::map<uintptr_t, uint64_t> reference;
    std::mt19937_64 rng(99);
    for (int step = 0; step < 300000; ++step) {
        uintptr_t pool = rng() % 64;
        uint64_t size = (pool % 32 + 1) * 16 - rng() % 16;  // the class is fixed per pool
        uintptr_t slots = ((uintptr_t{1} << 14) - kHeader) / ((size + 15) & ~uint64_t{15});
        uintptr_t address = kPool + (pool << 14) + kHeader + (rng() % slots) * ((size + 15) & ~uint64_t{15});
        bool pooled = rng() % 8 != 0;  // some come through the raw domain
        if (rng() % 2) {
            if (reference.count(address)) continue;  // a live block is not allocated again
            BlockInfo replaced;
            bool ok;
            EXPECT_FALSE(table.insert(address, BlockInfo{size, 0, 0}, &replaced, &ok, pooled));
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
    std::map<uintptr_t, uint64_t> seen;
    table.for_each([&](uintptr_t address, const BlockInfo& info) { seen[address] = info.size; });
    EXPECT_EQ(seen, reference);
}

// Blocks that are not pymalloc's can sit at any 16-byte offset: a class that
// does not divide 16 KiB must still have a slot for the region's last bytes.
TEST(PoolIndex, LastOffsetsOfARegionHaveSlots) {
    for (uint64_t size : {48u, 480u, 496u, 208u}) {
        PoolIndex index;
        BlockInfo out;
        uint64_t block = (size + 15) & ~uint64_t{15};
        uintptr_t last = kPool + ((uintptr_t{1} << 14) - 16) / block * block;  // phase 0
        ASSERT_EQ(index.insert(kPool, BlockInfo{size, 1, 1}, &out), PoolIndex::Insert::kStored) << size;
        ASSERT_EQ(index.insert(last, BlockInfo{size, 2, 1}, &out), PoolIndex::Insert::kStored) << size;
        ASSERT_TRUE(index.find(last, &out));
        EXPECT_EQ(out.stack, 2u);
        EXPECT_TRUE(index.erase(last, &out));
    }
    // A phase that puts the last block at offset 16368 with class 48.
    PoolIndex index;
    BlockInfo out;
    uintptr_t at_16368 = kPool + 16368;
    ASSERT_EQ(index.insert(at_16368, BlockInfo{40, 3, 1}, &out), PoolIndex::Insert::kStored);
    ASSERT_TRUE(index.find(at_16368, &out));
    EXPECT_TRUE(index.erase(at_16368, &out));
}

TEST(BlockTable, AnAddressLivesInOneStructureOnly) {
    BlockTable table;
    BlockInfo replaced;
    bool ok;
    EXPECT_FALSE(table.insert(kPool + kHeader, BlockInfo{32, 1, 1}, &replaced, &ok, true));
    // The same address reported again, not through pymalloc: it replaces.
    EXPECT_TRUE(table.insert(kPool + kHeader, BlockInfo{5000, 2, 1}, &replaced, &ok, false));
    EXPECT_EQ(replaced.size, 32u);
    EXPECT_EQ(table.size(), 1u);
    BlockInfo out;
    ASSERT_TRUE(table.find(kPool + kHeader, &out));
    EXPECT_EQ(out.size, 5000u);
}

// Regions whose blocks are all freed give their slot arrays back once there
// are many, and a swept region works again when a block returns to it.
TEST(PoolIndex, EmptyRegionsAreSweptAndReusable) {
    PoolIndex index;
    BlockInfo out;
    constexpr uintptr_t kRegions = 300;
    for (uintptr_t r = 0; r < kRegions; ++r) index.insert(kPool + (r << 14) + kHeader, BlockInfo{16, 1, 1}, &out);
    size_t full = index.memory_bytes();
    for (uintptr_t r = 0; r < kRegions; ++r) ASSERT_TRUE(index.erase(kPool + (r << 14) + kHeader, &out));
    EXPECT_EQ(index.size(), 0u);
    EXPECT_LT(index.memory_bytes(), full / 2);
    for (uintptr_t r = 0; r < kRegions; ++r) {
        uintptr_t address = kPool + (r << 14) + kHeader + 64;  // another class now
        ASSERT_EQ(index.insert(address, BlockInfo{64, 2, 1}, &out), PoolIndex::Insert::kStored) << r;
        ASSERT_TRUE(index.find(address, &out));
        EXPECT_EQ(out.stack, 2u);
    }
    EXPECT_EQ(index.size(), kRegions);
    size_t counted = 0;
    index.for_each([&](uintptr_t, const BlockInfo&) { ++counted; });
    EXPECT_EQ(counted, kRegions);
}
